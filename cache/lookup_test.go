package cache

import (
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"anqi-edge/internal/redistest"
)

// A raw MGET reply the lookup does not fully understand must be a failed
// lookup, never a hit built from misread bytes.
func TestParseMGet_ReadsValuesAndNullsAndRefusesAnythingElse(t *testing.T) {
	ok := []struct {
		name string
		raw  string
		want []string // "<nil>" marks a null
	}{
		{"resp2", "*3\r\n$2\r\n17\r\n$-1\r\n$3\r\n900\r\n", []string{"17", "<nil>", "900"}},
		{"resp3 nulls", "*3\r\n_\r\n$5\r\na\r\nbc\r\n_\r\n", []string{"<nil>", "a\r\nbc", "<nil>"}},
		{"empty value", "*2\r\n$0\r\n\r\n$1\r\nx\r\n", []string{"", "x"}},
	}
	for _, c := range ok {
		vals := make([][]byte, len(c.want))
		if err := parseMGet([]byte(c.raw), vals); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for i, w := range c.want {
			got := string(vals[i])
			if vals[i] == nil {
				got = "<nil>"
			}
			if got != w {
				t.Errorf("%s: value %d = %q, want %q", c.name, i, got, w)
			}
		}
	}

	bad := map[string]string{
		"wrong count":     "*2\r\n$1\r\na\r\n$1\r\nb\r\n",
		"short bulk":      "*3\r\n$1\r\na\r\n$9\r\nb\r\n$1\r\nc\r\n",
		"bulk without lf": "*3\r\n$1\r\nab$1\r\nb\r\n$1\r\nc\r\n",
		"integer element": "*3\r\n:1\r\n$1\r\nb\r\n$1\r\nc\r\n",
		"trailing bytes":  "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n+OK\r\n",
		"not an array":    "+OK\r\n",
		"empty":           "",
		"no crlf":         "*3",
		"huge bulk":       "*3\r\n$9223372036854775807\r\nab\r\n",
	}
	for name, raw := range bad {
		if err := parseMGet([]byte(raw), make([][]byte, 3)); err == nil {
			t.Errorf("%s: accepted %q", name, raw)
		}
	}
	if err := parseMGet([]byte("!21\r\nSYNTAX invalid syntax\r\n"), make([][]byte, 3)); err == nil {
		t.Error("a RESP3 blob error was not an error")
	}
	err := parseMGet([]byte("-LOADING Redis is loading the dataset in memory\r\n"), make([][]byte, 3))
	if err == nil || errors.Is(err, errRESP) || err.Error() != "LOADING Redis is loading the dataset in memory" {
		t.Errorf("error reply: %v, want Redis's error text", err)
	}
}

func FuzzParseMGet(f *testing.F) {
	f.Add([]byte("*3\r\n$2\r\n17\r\n$-1\r\n$3\r\n900\r\n"))
	f.Add([]byte("*3\r\n_\r\n_\r\n_\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		vals := make([][]byte, 3)
		if parseMGet(raw, vals) != nil {
			return
		}
		for _, v := range vals {
			if len(v) > len(raw) {
				t.Fatalf("value longer than the reply")
			}
		}
	})
}

// Both ways of sending lookups read the same entries: what one replica
// filled, the other (autopipelined or not) serves, and an invalidation is
// seen by both. Many goroutines read at once so batches form, and the
// count of lookups under way is back to 0 afterwards (a leak there would
// send every later lookup through the autopipeliner, alone or not).
func TestRedis_LookupsWithAndWithoutAutopipelineReadTheSameEntries(t *testing.T) {
	addr := redistest.Shared(t)
	a, b := pair(t, []string{addr}, false, func(o *RedisOptions) {
		o.NoAutopipeline = o.ReplicaID == "B"
	})
	if _, piped := a.r.batched.(*redis.AutoPipeliner); !piped {
		t.Fatal("replica A does not autopipeline its lookups")
	}
	if b.r.batched != nil {
		t.Fatal("replica B (autopipeline off) has an autopipeliner")
	}
	keys := make([]Key, 20)
	for i := range keys {
		keys[i] = testKey(int64(100+i), "u1")
		fill(t, a, keys[i], "body-"+strconv.Itoa(i))
	}
	var wg sync.WaitGroup
	for _, tr := range []*tier{a, b} {
		for w := range 16 {
			wg.Go(func() {
				for i := range 50 {
					k := keys[(w+i)%len(keys)]
					e, _, err := tr.r.Get(ctxT(t), k)
					if err != nil || e == nil || string(e.Body) != "body-"+strconv.Itoa(int(k.Order-100)) {
						t.Errorf("replica %s order %d: entry %v, err %v", tr.r.o.ReplicaID, k.Order, e != nil, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	for _, tr := range []*tier{a, b} {
		if n := tr.r.inflight.Load(); n != 0 {
			t.Fatalf("replica %s: %d lookups counted as under way after all returned", tr.r.o.ReplicaID, n)
		}
	}
	if _, err := b.r.Invalidate(ctxT(t), 105); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []*tier{a, b} {
		if body, ok := get(t, tr, keys[5]); ok {
			t.Fatalf("replica %s still reads invalidated order 105: %q", tr.r.o.ReplicaID, body)
		}
	}
}
