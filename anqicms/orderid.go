package anqicms

import (
	"math"

	"github.com/valyala/fasthttp"
)

// Answers to a bad detail id, rendered once. AnqiCMS answers errors with
// HTTP 200 and code -1, and so does anqi-edge, without asking it.
var (
	ErrIDMissing  = ErrorBody("id is required")
	ErrIDEmpty    = ErrorBody("id is empty")
	ErrIDRepeated = ErrorBody("id must be given once")
	ErrIDTooLong  = ErrorBody("id is too long")
	ErrIDNotInt   = ErrorBody("id must be an integer")
	ErrIDRange    = ErrorBody("id is out of range")
	ErrIDNotPos   = ErrorBody("id must be a positive integer")
)

// maxIDLen allows leading zeros (AnqiCMS accepts them) but not megabytes.
const maxIDLen = 64

// ParseOrderID reads the single "id" query value of a detail request the
// way AnqiCMS does (strconv.ParseInt, base 10: "01" and "%2B1" are 1; a
// query's "+" is a space) without allocating. On bad input it returns the envelope to answer with (one of
// the ErrID* bodies; never modify them): the id is missing, given twice,
// empty, longer than 64 bytes, not an integer, out of int64's range, or not
// positive.
func ParseOrderID(args *fasthttp.Args) (int64, []byte) {
	var v []byte
	n := 0
	for k, val := range args.All() {
		if string(k) == "id" {
			n++
			v = val
		}
	}
	switch {
	case n == 0:
		return 0, ErrIDMissing
	case n > 1:
		return 0, ErrIDRepeated
	case len(v) == 0:
		return 0, ErrIDEmpty
	case len(v) > maxIDLen:
		return 0, ErrIDTooLong
	}
	neg := false
	switch v[0] {
	case '+':
		v = v[1:]
	case '-':
		neg = true
		v = v[1:]
	}
	if len(v) == 0 {
		return 0, ErrIDNotInt
	}
	// The digits are read as strconv.ParseUint reads them, so that the
	// error named for an odd id is the one strconv.ParseInt would give: a
	// non-digit is a syntax error unless the digits before it already
	// overflowed uint64; a value past int64 is out of range once all digits
	// are read.
	var id uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, ErrIDNotInt
		}
		next := id*10 + uint64(c-'0')
		if id >= math.MaxUint64/10+1 || next < id*10 {
			return 0, outOfRange(neg)
		}
		id = next
	}
	switch {
	case neg || id == 0:
		return 0, ErrIDNotPos
	case id > math.MaxInt64:
		return 0, ErrIDRange
	}
	return int64(id), nil
}

// outOfRange names an overflowing id: any negative one is not positive.
func outOfRange(neg bool) []byte {
	if neg {
		return ErrIDNotPos
	}
	return ErrIDRange
}
