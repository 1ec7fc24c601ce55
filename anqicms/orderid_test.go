package anqicms

import (
	"bytes"
	"errors"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"
)

func parseQuery(q string) (int64, []byte) {
	var args fasthttp.Args
	args.Parse(q)
	return ParseOrderID(&args)
}

func TestParseOrderID_AcceptsWhatAnqiCMSAccepts(t *testing.T) {
	for q, want := range map[string]int64{
		"id=1":                   1,
		"id=01":                  1,
		"id=%2B7":                7,
		"id=9223372036854775807": 1<<63 - 1,
		"x=1&id=308&y=2":         308,
		"id=000000000000000000000000000000000000000000000000000000000042": 42,
	} {
		got, bad := parseQuery(q)
		if bad != nil || got != want {
			t.Errorf("%q: got %d %s, want %d", q, got, bad, want)
		}
	}
}

func TestParseOrderID_BadIDsAreNamed(t *testing.T) {
	for q, want := range map[string][]byte{
		"":          ErrIDMissing,
		"ID=1":      ErrIDMissing,
		"id=":       ErrIDEmpty,
		"id=1&id=1": ErrIDRepeated,
		"id=1&id=2": ErrIDRepeated,
		"id=" + string(bytes.Repeat([]byte("1"), 65)): ErrIDTooLong,
		"id=abc":                   ErrIDNotInt,
		"id=1.0":                   ErrIDNotInt,
		"id=+":                     ErrIDNotInt,
		"id=-":                     ErrIDNotInt,
		"id=1_000":                 ErrIDNotInt,
		"id=%201":                  ErrIDNotInt,
		"id=+1":                    ErrIDNotInt, // a query's + is a space, to AnqiCMS too
		"id=0x10":                  ErrIDNotInt,
		"id=9223372036854775808":   ErrIDRange,
		"id=0":                     ErrIDNotPos,
		"id=9223372036854775808A":  ErrIDNotInt, // as strconv: past int64 but within uint64, then a letter
		"id=99999999999999999999A": ErrIDRange,  // as strconv: uint64 overflowed before the letter
		"id=18446744073709551616":  ErrIDRange,
		"id=-9223372036854775808":  ErrIDNotPos,
		"id=-0":                    ErrIDNotPos,
		"id=-5":                    ErrIDNotPos,
		"id=-9223372036854775809":  ErrIDNotPos,
	} {
		got, bad := parseQuery(q)
		if !bytes.Equal(bad, want) {
			t.Errorf("%q: got %d %s, want %s", q, got, bad, want)
		}
	}
}

func TestParseOrderID_DoesNotAllocate(t *testing.T) {
	var args fasthttp.Args
	args.Parse("id=12345&site_id=2")
	if n := testing.AllocsPerRun(100, func() {
		if id, bad := ParseOrderID(&args); id != 12345 || bad != nil {
			t.Fatal(id, string(bad))
		}
	}); n != 0 {
		t.Fatalf("%v allocations per call, want 0", n)
	}
}

// expectOrderID is the reference: the id values as fasthttp decoded them,
// judged by strconv.ParseInt as AnqiCMS judges a detail id.
func expectOrderID(args *fasthttp.Args) (int64, []byte) {
	var vals [][]byte
	for k, v := range args.All() {
		if string(k) == "id" {
			vals = append(vals, v)
		}
	}
	switch {
	case len(vals) == 0:
		return 0, ErrIDMissing
	case len(vals) > 1:
		return 0, ErrIDRepeated
	case len(vals[0]) == 0:
		return 0, ErrIDEmpty
	case len(vals[0]) > maxIDLen:
		return 0, ErrIDTooLong
	}
	n, err := strconv.ParseInt(string(vals[0]), 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) && vals[0][0] == '-':
		return 0, ErrIDNotPos
	case errors.Is(err, strconv.ErrRange):
		return 0, ErrIDRange
	case err != nil:
		return 0, ErrIDNotInt
	case n <= 0:
		return 0, ErrIDNotPos
	}
	return n, nil
}

func FuzzParseOrderID(f *testing.F) {
	for _, s := range []string{"id=1", "id=01", "id=+1", "id=-1", "id=0", "id=", "id=1&id=2",
		"id=9223372036854775807", "id=9223372036854775808", "id=-9223372036854775808",
		"id=%31", "id=1%00", "id=1e3", "id= 1", "x=1&id=2", "id"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		var args fasthttp.Args
		args.Parse(q)
		id, bad := ParseOrderID(&args)
		wid, wbad := expectOrderID(&args)
		if id != wid || !bytes.Equal(bad, wbad) {
			t.Fatalf("%q: got %d %s, want %d %s", q, id, bad, wid, wbad)
		}
	})
}
