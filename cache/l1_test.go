package cache

import (
	"fmt"
	"testing"
	"time"
)

func newTestL1(t *testing.T, maxBytes int64, fresh time.Duration) *L1 {
	t.Helper()
	l, err := NewL1(maxBytes, fresh, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func l1Key(order int64, who string) Key {
	return MakeKey(order, KeyParts{Site: []byte("shop.example.com"), Identity: 'u', ID: []byte(who)})
}

func l1Entry(body string) *Entry {
	return NewEntry([]byte(body), []byte("application/json"), false, time.Unix(1_700_000_000, 0))
}

func TestL1_ServesWhatWasSetAndReportsItsFreshness(t *testing.T) {
	l := newTestL1(t, 1<<20, 50*time.Millisecond)
	k := l1Key(7, "alice")
	now := time.Now().UnixNano()
	if e, _ := l.Get(k, now); e != nil {
		t.Fatal("empty L1 returned an entry")
	}
	e := l1Entry(`{"code":0}`)
	if !l.Set(k, e, l.Gen(7), now) {
		t.Fatal("Set with the current generation was refused")
	}
	if got, fresh := l.Get(k, now+int64(10*time.Millisecond)); got != e || !fresh {
		t.Fatalf("Get 10ms later: %v fresh=%v, want the entry, fresh", got, fresh)
	}
	// Past cache.memory.ttl the copy is still returned (a fallback when
	// AnqiCMS fails) but no longer fresh: the caller asks Redis.
	if got, fresh := l.Get(k, now+int64(60*time.Millisecond)); got != e || fresh {
		t.Fatalf("Get past the L1 ttl: %v fresh=%v, want the entry, not fresh", got, fresh)
	}
	if got, _ := l.Get(l1Key(7, "bob"), now); got != nil {
		t.Fatal("another identity's key found alice's entry")
	}
	// otter accounts weights in its maintenance pass, shortly after a write.
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, n := l.Size()
		if b > 0 && n == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("Size = %d bytes, %d entries, want >0 and 1", b, n)
		}
	}
}

func TestL1_InvalidateDropsEveryIdentitysEntryOfThatOrderOnly(t *testing.T) {
	l := newTestL1(t, 1<<20, time.Minute)
	now := time.Now().UnixNano()
	keys := []Key{l1Key(7, "alice"), l1Key(7, "bob"), MakeKey(7, KeyParts{Site: []byte("b.example.com"), Identity: 'f', ID: []byte("x")})}
	other := l1Key(8, "alice")
	for _, k := range append(keys, other) {
		if !l.Set(k, l1Entry("x"), l.Gen(k.Order), now) {
			t.Fatal("Set refused")
		}
	}
	l.Invalidate(7)
	for _, k := range keys {
		if e, _ := l.Get(k, now); e != nil {
			t.Errorf("entry of order 7 survived its invalidation: %x", k.Sum[:4])
		}
	}
	if e, _ := l.Get(other, now); e == nil {
		t.Error("invalidating order 7 dropped order 8")
	}
	// A new fill under the new generation is served again.
	if !l.Set(keys[0], l1Entry("y"), l.Gen(7), now) {
		t.Fatal("Set after invalidation refused")
	}
	if e, _ := l.Get(keys[0], now); e == nil || string(e.Body) != "y" {
		t.Fatal("refill after invalidation not served")
	}
}

// A fill that read the generation before an invalidation must not store:
// it may carry the answer from before the change.
func TestL1_FillStartedBeforeAnInvalidationIsNotStored(t *testing.T) {
	l := newTestL1(t, 1<<20, time.Minute)
	k := l1Key(7, "alice")
	now := time.Now().UnixNano()
	g := l.Gen(7) // the fill starts
	l.Invalidate(7)
	if l.Set(k, l1Entry("old"), g, now) {
		t.Fatal("Set with a generation from before the invalidation was accepted")
	}
	if e, _ := l.Get(k, now); e != nil {
		t.Fatal("stale fill is served")
	}
}

func TestL1_ClearDropsEverythingAndVoidsEarlierGenerations(t *testing.T) {
	l := newTestL1(t, 1<<20, time.Minute)
	now := time.Now().UnixNano()
	for o := int64(1); o <= 10; o++ {
		l.Set(l1Key(o, "a"), l1Entry("x"), l.Gen(o), now)
	}
	g := l.Gen(3)
	l.Clear()
	for o := int64(1); o <= 10; o++ {
		if e, _ := l.Get(l1Key(o, "a"), now); e != nil {
			t.Fatalf("order %d survived Clear", o)
		}
	}
	if l.Set(l1Key(3, "a"), l1Entry("x"), g, now) {
		t.Fatal("a fill started before Clear was stored after it")
	}
}

func TestL1_OrdersSharingASlotOnlyOverInvalidate(t *testing.T) {
	l := newTestL1(t, 1<<20, time.Minute)
	// Find another order in order 1's generation slot.
	var twin int64
	for o := int64(2); o < 1<<24; o++ {
		if slot(o) == slot(1) {
			twin = o
			break
		}
	}
	if twin == 0 {
		t.Fatal("no slot collision found")
	}
	now := time.Now().UnixNano()
	l.Set(l1Key(1, "a"), l1Entry("x"), l.Gen(1), now)
	l.Invalidate(twin)
	if e, _ := l.Get(l1Key(1, "a"), now); e != nil {
		t.Fatalf("order %d shares order 1's slot; invalidating it must drop order 1 (one extra miss), never keep a stale one", twin)
	}
}

func TestL1_ZeroMaxBytesStoresNothingButKeepsGenerations(t *testing.T) {
	l := newTestL1(t, 0, time.Minute)
	k := l1Key(7, "a")
	now := time.Now().UnixNano()
	if l.Set(k, l1Entry("x"), l.Gen(7), now) {
		t.Fatal("L1 with max_bytes = 0 stored an entry")
	}
	if e, _ := l.Get(k, now); e != nil {
		t.Fatal("L1 with max_bytes = 0 returned an entry")
	}
	g := l.Gen(7)
	l.Invalidate(7)
	if l.Gen(7) == g {
		t.Fatal("generations must move even without storage: flights are keyed by them")
	}
	if b, n := l.Size(); b != 0 || n != 0 {
		t.Fatalf("Size = %d, %d", b, n)
	}
}

func TestL1_StaysWithinItsByteBound(t *testing.T) {
	const max = 64 << 10
	l := newTestL1(t, max, time.Minute)
	now := time.Now().UnixNano()
	body := make([]byte, 1024)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	for o := int64(1); o <= 1000; o++ {
		e := NewEntry(append([]byte(fmt.Sprintf("%d:", o)), body...), []byte("application/json"), false, time.Now())
		l.Set(l1Key(o, "a"), e, l.Gen(o), now)
	}
	if b, n := l.Size(); b > max || n >= 1000 {
		t.Fatalf("L1 holds %d bytes in %d entries, bound is %d bytes", b, n, max)
	}
}

func TestL1_HitDoesNotAllocate(t *testing.T) {
	l := newTestL1(t, 1<<20, time.Minute)
	k := l1Key(7, "alice")
	now := time.Now().UnixNano()
	l.Set(k, l1Entry("x"), l.Gen(7), now)
	allocs := testing.AllocsPerRun(1000, func() {
		if e, fresh := l.Get(k, now); e == nil || !fresh {
			panic("miss")
		}
	})
	if allocs != 0 {
		t.Fatalf("L1 hit allocates %v times", allocs)
	}
}
