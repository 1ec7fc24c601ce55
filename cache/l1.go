package cache

import (
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// l1Slots is the number of generation counters L1 keeps. Orders share a
// counter when their ids collide modulo this; that only ever over-invalidates
// (one extra miss), and keeps invalidation O(1) with a fixed memory cost.
const l1Slots = 1 << 16

// L1 is the in-process tier. Entries are found by Key and are only valid
// while their order's local generation and the L1 epoch are unchanged, so
// invalidating an order or clearing L1 is a counter bump, not a scan.
type L1 struct {
	c     *otter.Cache[Key, *l1Item] // nil when cache.memory.max_bytes = 0
	fresh atomic.Int64               // cache.memory.ttl, nanoseconds (a reload may change it)
	gens  [l1Slots]atomic.Uint64
	epoch atomic.Uint64
}

// l1EntryOverhead is what L1 spends per entry beside the entry itself: the
// l1Item (32 bytes) and otter's node and hash-table slot. Measured with
// BenchmarkMemory_L1BytesPerOrder (heap after GC minus Entry.Size, 155
// bytes per entry with otter v2.4 at 100,000 entries), rounded up.
const l1EntryOverhead = 160

type l1Item struct {
	e        *Entry
	gen      Gen
	inserted int64
}

// Gen is a snapshot of an order's local generation. A fill captures it
// before going to Redis or AnqiCMS and may only store under the same one.
type Gen struct{ Slot, Epoch uint64 }

// NewL1 builds an L1 bounded by maxBytes (0 disables storage; generations
// still work, the detail path keys its flights by them). fresh is how long
// an L1 copy may be served without consulting Redis; keep is how long it is
// kept at all (as a fallback when AnqiCMS fails).
func NewL1(maxBytes int64, fresh, keep time.Duration) (*L1, error) {
	l := &L1{}
	l.fresh.Store(int64(fresh))
	if maxBytes <= 0 {
		return l, nil
	}
	c, err := otter.New(&otter.Options[Key, *l1Item]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(_ Key, it *l1Item) uint32 {
			return uint32(min(it.e.Size()+l1EntryOverhead, 1<<31))
		},
		ExpiryCalculator: otter.ExpiryWriting[Key, *l1Item](keep),
		// Maintenance (replaying the reads a hit records for the eviction
		// policy) runs on the goroutine that fills the read buffer, instead
		// of on a goroutine started for it each time: with one hot order
		// that start was a twentieth of an L1 hit's CPU. L1 has no
		// OnDeletion, Compute or refresh that could then run under the
		// cache's locks (otter.Options.Executor): adding one means going
		// back to otter's default executor.
		Executor: runInline,
	})
	if err != nil {
		return nil, err
	}
	l.c = c
	return l, nil
}

// runInline is otter's executor for L1: the task runs on the caller's
// goroutine.
func runInline(fn func()) { fn() }

func slot(order int64) uint64 {
	// Fibonacci hashing spreads sequential ids over the slots.
	return (uint64(order) * 0x9E3779B97F4A7C15) >> (64 - 16)
}

// Gen returns the current generation of order.
func (l *L1) Gen(order int64) Gen {
	// Epoch first: a Clear that lands between the two loads then shows up as
	// a changed epoch at Set time.
	e := l.epoch.Load()
	return Gen{Slot: l.gens[slot(order)].Load(), Epoch: e}
}

// Get returns the entry for k if it is still valid, and whether the L1 copy
// is fresh enough to serve without asking Redis.
func (l *L1) Get(k Key, now int64) (e *Entry, fresh bool) {
	if l.c == nil {
		return nil, false
	}
	it, ok := l.c.GetIfPresent(k)
	if !ok || it.gen != l.Gen(k.Order) {
		return nil, false
	}
	return it.e, now-it.inserted < l.fresh.Load()
}

// Set stores e under k if order's generation is still g. The check and the
// store are not atomic, and need not be: an invalidation that lands between
// them changes the generation, so Get rejects the item anyway.
func (l *L1) Set(k Key, e *Entry, g Gen, now int64) bool {
	if l.c == nil || l.Gen(k.Order) != g {
		return false
	}
	l.c.Set(k, &l1Item{e: e, gen: g, inserted: now})
	return true
}

// SetFresh changes how long an L1 copy is served without asking Redis
// (cache.memory.ttl, on reload).
func (l *L1) SetFresh(d time.Duration) { l.fresh.Store(int64(d)) }

// Invalidate makes every identity's entry for order invalid at once.
func (l *L1) Invalidate(order int64) { l.gens[slot(order)].Add(1) }

// Clear invalidates everything (after a broken subscription, or when the
// global epoch moves) and frees the memory.
func (l *L1) Clear() {
	l.epoch.Add(1)
	if l.c != nil {
		l.c.InvalidateAll()
	}
}

// Size reports bytes and entries held.
func (l *L1) Size() (bytes, entries int64) {
	if l.c == nil {
		return 0, 0
	}
	return int64(l.c.WeightedSize()), int64(l.c.EstimatedSize())
}

// Close stops the cache's background clean-up goroutine (at shutdown). L1
// stays usable; expired entries are then only dropped as they are read.
func (l *L1) Close() {
	if l.c != nil {
		l.c.StopAllGoroutines()
	}
}
