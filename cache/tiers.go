// Package cache is the load story of an order detail: L1 then Redis,
// guarded by generations. Tiers.Get looks in the in-process L1 (otter,
// bounded by bytes); on a miss, one flight per key reads Redis, shared by
// every replica, and only then asks the caller's Loader (AnqiCMS), storing
// what it got in both tiers. Invalidating an order bumps its generation in
// both tiers, and a fill lands only if the generation it read before asking
// the origin is still current, so a slow fill can never resurrect an answer
// that an invalidation has already dropped.
package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"anqi-edge/metrics"
)

// A Loader fetches one key's answer from the origin (for anqi-edge: asks
// AnqiCMS and classifies the answer). Get runs it at most once per flight,
// on the flight's own goroutine, so it must own everything it reads.
type Loader interface {
	Load(ctx context.Context, key Key) (Loaded, error)
}

// LoaderFunc adapts a function to Loader.
type LoaderFunc func(ctx context.Context, key Key) (Loaded, error)

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, key Key) (Loaded, error) { return f(ctx, key) }

// Loaded is a loader's answer: an Entry that may be stored, or (Entry nil)
// an answer that must not be, which every waiter of the flight gets as is.
type Loaded struct {
	Entry *Entry
	Other any
}

// A Caller is one request asking Get for a key. Get asks it for a Loader
// only when it must reach the origin (a miss neither tier can answer, or a
// refresh), so a hit never pays for building one. Get always asks on the
// caller's own goroutine while the call is running: a Caller may borrow from
// a request that is only valid until Get returns; the Loader it hands out
// must not. background is true for a refresh whose answer goes to no one.
type Caller interface {
	Loader(background bool) Loader
}

// CallerFunc adapts a function to Caller.
type CallerFunc func(background bool) Loader

// Loader calls f.
func (f CallerFunc) Loader(background bool) Loader { return f(background) }

// Outcome says where an answer came from, as X-Cache reports it.
type Outcome uint8

const (
	Hit   Outcome = iota + 1 // fresh, from L1 or Redis
	Miss                     // loaded from the origin for this request
	Stale                    // past its ttl: served while a refresh runs, or because the origin failed
)

// Result is Get's answer: a stored Entry, or the loader's Other answer.
type Result struct {
	Entry   *Entry
	Other   any
	Outcome Outcome
	// At is when the tiers settled on the answer (unix nanoseconds): an
	// answer's Age is measured at it. An L1 hit's is the time the caller
	// passed to GetAt, so the hit path reads the clock once.
	At int64
}

var (
	// ErrFlightTimeout: the flight did not finish within TiersOptions.Wait.
	ErrFlightTimeout = errors.New("cache flight did not finish in time")
	// ErrLoaderPanic: the loader panicked; the panic is logged, not re-raised.
	ErrLoaderPanic = errors.New("cache loader panicked")
	// errLeaderGone: the request that led a flight stopped waiting before
	// the flight needed its loader.
	errLeaderGone = errors.New("cache flight lost its leader")
)

// TiersOptions configure Tiers. Zero values mean the defaults.
type TiersOptions struct {
	L1 *L1
	// Redis, when set, adds the shared tier; NewTiers wires its
	// invalidation callbacks to the Tiers it builds.
	Redis  *RedisOptions
	Policy Policy
	// RedisBudget bounds one Redis round trip on the miss path (250ms).
	RedisBudget time.Duration
	// Wait is how long a caller waits for a flight before giving up (10s);
	// make it longer than the loader's own timeout plus two RedisBudgets.
	Wait time.Duration
	// ConfirmTimeout bounds how long InvalidateConfirmed waits for the
	// other replicas to confirm (cache.invalidate_confirm_timeout). Unlike
	// the other fields, zero is no default: it means "do not wait".
	ConfirmTimeout time.Duration
	Metrics        *metrics.Metrics
	Log            *slog.Logger
}

// Tiers is the load story: Get looks in L1, then (one flight per key) in
// Redis, then asks the loader, then stores what it got in both tiers, each
// guarded by the order's generation. Invalidate is the one place an order
// is dropped, whatever asked for it.
type Tiers struct {
	l1    *L1
	redis *Redis // nil: L1 only
	// policy is swapped whole by a reload; readers load it once per use.
	policy  atomic.Pointer[Policy]
	budget  time.Duration
	wait    time.Duration
	m       *metrics.Metrics
	log     *slog.Logger
	flights singleflight.Group

	// refreshing holds keys with a background refresh in flight, so a burst
	// of STALE hits starts one refresh, not one per hit. (A map under a
	// mutex: a sync.Map would box the key and allocate on every STALE hit.)
	refreshMu  sync.Mutex
	refreshing map[Key]struct{}

	// bg tracks refreshes, which outlive the request that started them;
	// Close waits for them so none runs after Redis is closed.
	bgMu   sync.Mutex
	closed bool
	bg     sync.WaitGroup

	watchMu  sync.RWMutex
	watchers []func(order int64)

	// confirmTimeout (nanoseconds) is swapped by a reload; confirmLogNext
	// (unix nanos) rate-limits the log line of a confirmation that timed out.
	confirmTimeout atomic.Int64
	confirmLogNext atomic.Int64
}

// NewTiers builds the tiers. L1 is required.
func NewTiers(o TiersOptions) *Tiers {
	if o.RedisBudget <= 0 {
		o.RedisBudget = 250 * time.Millisecond
	}
	if o.Wait <= 0 {
		o.Wait = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New(o.L1.Size)
	}
	t := &Tiers{l1: o.L1, budget: o.RedisBudget, wait: o.Wait,
		m: o.Metrics, log: o.Log, refreshing: map[Key]struct{}{}}
	t.SetPolicy(o.Policy)
	t.SetConfirmTimeout(o.ConfirmTimeout)
	if o.Redis != nil {
		ro := *o.Redis
		ro.OnRemoteInvalidate, ro.OnClear = t.Remote, t.Clear
		if ro.Metrics == nil {
			ro.Metrics = o.Metrics
		}
		if ro.Log == nil {
			ro.Log = o.Log
		}
		t.redis = NewRedis(ro)
	}
	return t
}

// L1 is the in-process tier; Redis the shared one (nil without Redis).
func (t *Tiers) L1() *L1       { return t.l1 }
func (t *Tiers) Redis() *Redis { return t.redis }

// Policy is the freshness policy in force.
func (t *Tiers) Policy() Policy { return *t.policy.Load() }

// SetPolicy replaces the freshness policy (a reload); entries already
// stored are judged by the new one from the next read on.
func (t *Tiers) SetPolicy(p Policy) { t.policy.Store(&p) }

// SetConfirmTimeout replaces InvalidateConfirmed's bound (a reload); 0 =
// do not wait.
func (t *Tiers) SetConfirmTimeout(d time.Duration) { t.confirmTimeout.Store(int64(max(d, 0))) }

// Get returns key's answer. A fresh L1 entry returns at once and without
// allocating; a stale one is returned while one background refresh runs;
// anything else goes through load.
func (t *Tiers) Get(ctx context.Context, key Key, c Caller) (Result, error) {
	return t.GetAt(ctx, key, c, time.Now().UnixNano())
}

// GetAt is Get for a caller that has read the clock already: now is the
// request's arrival, in unix nanoseconds.
func (t *Tiers) GetAt(ctx context.Context, key Key, c Caller, now int64) (Result, error) {
	res, err := t.get(ctx, key, c, now)
	if res.At == 0 {
		res.At = time.Now().UnixNano() // after a wait for Redis or AnqiCMS
	}
	return res, err
}

func (t *Tiers) get(ctx context.Context, key Key, c Caller, now int64) (Result, error) {
	if e, fresh := t.l1.Get(key, now); e != nil && fresh {
		switch t.policy.Load().State(e, now) {
		case Fresh:
			t.m.L1Hit.Inc()
			return Result{Entry: e, Outcome: Hit, At: now}, nil
		case Revalidate:
			t.m.L1Stale.Inc()
			if t.startRefresh(key) {
				t.refresh(key, t.l1.Gen(key.Order), c.Loader(true))
			}
			return Result{Entry: e, Outcome: Stale, At: now}, nil
		}
	}
	t.m.L1Miss.Inc()
	if t.redis != nil {
		// A fresh Redis entry is the common miss (every replica's first
		// read after cache.memory.ttl): read it here, on the caller's
		// goroutine, without the machinery of a flight. Anything else (a
		// miss, a stale entry, Redis trouble) goes through the flight,
		// which reads Redis again under its own generation.
		g := t.l1.Gen(key.Order)
		if e, at := t.redisFresh(key); e != nil {
			t.m.RedisHit.Inc()
			t.l1.Set(key, e, g, at)
			return Result{Entry: e, Outcome: Hit, At: at}, nil
		}
	}
	return t.load(ctx, key, c)
}

// redisFresh returns key's Redis entry if it is fresh, else nil, and the
// time it was judged at (read once, after Redis answered). Misses and
// errors are counted by the flight that follows.
//
// No context deadline here: the client's own read, write and pool
// timeouts (redis.timeout) bound the call, and a deadline would cost this
// hot path a timer and a context per read.
func (t *Tiers) redisFresh(key Key) (*Entry, int64) {
	e, _, err := t.redis.Get(context.Background(), key)
	if err != nil || e == nil {
		return nil, 0
	}
	now := time.Now().UnixNano()
	if t.policy.Load().State(e, now) != Fresh {
		return nil, 0
	}
	return e, now
}

// load resolves key through one flight per (key, L1 generation) and waits
// for it, at most t.wait or until ctx ends. The flight key carries the
// order's L1 generation at arrival: a request that arrives after an
// invalidation has a new generation, so it starts a new flight instead of
// joining one that may be carrying data from before the change.
//
// The flight runs on its own goroutine (singleflight.DoChan), so each
// waiter can give up on its own deadline without failing the others. When
// the flight must reach the origin it asks its leader, over need, for a
// Loader: the leader answers on its own goroutine, while its request is
// still valid, and only then does anything get copied out of it. A leader
// that has already given up (gone closed) answers nothing, and the flight
// fails instead of touching a request that is no longer there.
func (t *Tiers) load(ctx context.Context, key Key, c Caller) (Result, error) {
	g := t.l1.Gen(key.Order)
	fk := flightKey('m', key, g)
	timer := time.NewTimer(t.wait)
	defer timer.Stop()
	need := make(chan bool)
	give := make(chan Loader, 1)
	gone := make(chan struct{})
	defer close(gone)
	ask := func(background bool) Loader {
		select {
		case need <- background:
			return <-give
		case <-gone:
			return nil
		}
	}
	// A follower whose leader panicked tries once more in a flight of its
	// own (shared with the other followers that retry): the panic is the
	// leader's request's failure, not theirs. The retry is bounded by the
	// same deadline.
	for attempt := 0; ; attempt++ {
		led := false
		ch := t.flights.DoChan(fk, func() (any, error) {
			led = true
			return t.fill(key, g, ask, false)
		})
	wait:
		select {
		case bg := <-need:
			give <- c.Loader(bg)
			goto wait
		case r := <-ch:
			// led is read only after the flight's result arrived, which
			// happens after the flight wrote it.
			if !led {
				t.m.Collapsed.Inc()
			}
			if r.Err != nil {
				if errors.Is(r.Err, ErrLoaderPanic) && !led && attempt == 0 {
					continue
				}
				return Result{}, r.Err
			}
			return r.Val.(Result), nil
		case <-timer.C:
			// The flight is stuck past every timeout it has: later requests
			// start a new one instead of queueing behind it.
			t.flights.Forget(fk)
			t.log.Warn("cache flight did not finish in time", "order", key.Order, "waited", t.wait)
			return Result{}, ErrFlightTimeout
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
}

// fill runs once per flight, on its own goroutine, bounded by its own
// timeouts (RedisBudget, the loader's) and never by a caller's.
//
// The order of the steps matters. The L1 generation g was read before the
// flight started and the Redis generation is read before the loader runs;
// both stores accept the entry only if those generations are still
// current. An invalidation that lands while the origin is answering
// therefore makes this fill's stores no-ops: the answer still goes to the
// requests already waiting (they asked before the change), but it is never
// kept.
func (t *Tiers) fill(key Key, g Gen, ask func(background bool) Loader, refreshing bool) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			t.m.Panics.Inc()
			t.log.Error("panic in cache fill", "order", key.Order, "panic", p, "stack", string(debug.Stack()))
			res, err = Result{}, ErrLoaderPanic
		}
	}()

	// Look again: between this request's L1 miss and its flight starting,
	// an earlier flight for the same key may have finished and filled L1
	// (singleflight only joins flights still running). Without this check
	// that request would reach the origin a second time, and a burst of
	// stale-while-revalidate hits could start a second refresh.
	policy := t.policy.Load()
	now := time.Now().UnixNano()
	var stale *Entry // usable only if the origin fails
	if e, fresh := t.l1.Get(key, now); e != nil {
		if fresh && policy.State(e, now) == Fresh {
			return Result{Entry: e, Outcome: Hit}, nil
		}
		stale = e
	}
	rgen := int64(NoGen)
	if t.redis != nil {
		rctx, cancel := context.WithTimeout(context.Background(), t.budget)
		e, gen, rerr := t.redis.Get(rctx, key)
		cancel()
		rgen = gen
		switch {
		case errors.Is(rerr, ErrUnavailable):
			// Skipped (breaker open, or queued invalidations not yet
			// applied): not a miss. The L1 copy stays the fallback; if the
			// subscription broke meanwhile, L1 is cleared when it returns.
			t.m.RedisSkipped.Inc()
		case rerr != nil:
			t.log.Warn("redis read failed; asking AnqiCMS", "order", key.Order, "err", rerr)
			t.m.RedisLookupError.Inc()
		case e != nil:
			// Redis's entry supersedes this replica's L1 copy as the
			// stale-if-error fallback: the copy may predate an invalidation
			// this replica did not hear of.
			stale = nil
			now = time.Now().UnixNano()
			switch policy.State(e, now) {
			case Fresh:
				t.m.RedisHit.Inc()
				t.l1.Set(key, e, g, now)
				return Result{Entry: e, Outcome: Hit}, nil
			case Revalidate:
				if !refreshing {
					t.m.RedisStale.Inc()
					t.l1.Set(key, e, g, now)
					if t.startRefresh(key) {
						if l := ask(true); l != nil {
							t.refresh(key, g, l)
						} else {
							t.endRefresh(key)
						}
					}
					return Result{Entry: e, Outcome: Stale}, nil
				}
				stale = e
			case IfError:
				stale = e
			}
		default:
			// Redis answered and has no entry: the order may have been
			// invalidated on another replica, so the L1 copy is no safe
			// fallback.
			t.m.RedisMiss.Inc()
			stale = nil
		}
	}

	l := ask(false)
	if l == nil {
		return Result{}, errLeaderGone
	}
	loaded, err := l.Load(context.Background(), key)
	now = time.Now().UnixNano()
	if err != nil {
		if stale != nil && policy.State(stale, now) != Expired {
			return Result{Entry: stale, Outcome: Stale}, nil
		}
		return Result{}, err
	}
	if loaded.Entry == nil {
		return Result{Other: loaded.Other, Outcome: Miss}, nil
	}
	t.store(key, loaded.Entry, g, rgen, now)
	return Result{Entry: loaded.Entry, Outcome: Miss}, nil
}

// store keeps e in Redis (if the order's Redis generation is still rgen)
// and in L1 (if its L1 generation is still g).
//
// What Redis refused must not reach L1 either. Redis refuses a fill whose
// generation moved: the order was invalidated after this fill read it,
// possibly on another replica whose pub/sub message has not arrived here
// yet. L1's own generation cannot see that change until the message
// comes, so storing e in L1 would serve the pre-change answer as a HIT
// until then (or until cache.memory.ttl if the message is lost).
func (t *Tiers) store(key Key, e *Entry, g Gen, rgen int64, now int64) {
	if t.redis != nil {
		rctx, cancel := context.WithTimeout(context.Background(), t.budget)
		res, ferr := t.redis.FillEntry(rctx, key, e, rgen, t.policy.Load().Keep(e))
		cancel()
		t.m.Fills.WithLabelValues("redis", res.String()).Inc()
		if ferr != nil {
			// Redis failed: the L1 generation still guards what this
			// replica itself has seen.
			t.log.Warn("redis fill failed", "order", key.Order, "err", ferr)
		}
		if res.Outdated() {
			t.m.Fills.WithLabelValues("l1", "refused_by_redis").Inc()
			return
		}
	}
	if t.l1.Set(key, e, g, now) {
		t.m.Fills.WithLabelValues("l1", "stored").Inc()
	} else {
		t.m.Fills.WithLabelValues("l1", "dropped_generation").Inc()
	}
}

// refresh revalidates key in the background with l (stale-while-
// revalidate); the caller has claimed key with startRefresh.
func (t *Tiers) refresh(key Key, g Gen, l Loader) {
	fixed := func(bool) Loader { return l }
	if !t.background(func() {
		defer t.endRefresh(key)
		<-t.flights.DoChan(flightKey('r', key, g), func() (any, error) {
			return t.fill(key, g, fixed, true)
		})
	}) {
		t.endRefresh(key)
	}
}

// background runs f on its own goroutine unless Close has begun.
func (t *Tiers) background(f func()) bool {
	t.bgMu.Lock()
	defer t.bgMu.Unlock()
	if t.closed {
		return false
	}
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		f()
	}()
	return true
}

// startRefresh claims key's background refresh; false if one is running.
func (t *Tiers) startRefresh(key Key) bool {
	t.refreshMu.Lock()
	defer t.refreshMu.Unlock()
	if _, busy := t.refreshing[key]; busy {
		return false
	}
	t.refreshing[key] = struct{}{}
	return true
}

func (t *Tiers) endRefresh(key Key) {
	t.refreshMu.Lock()
	delete(t.refreshing, key)
	t.refreshMu.Unlock()
}

// Close stops new background refreshes and waits, until ctx ends, for the
// running ones. Call it before closing the Redis client.
func (t *Tiers) Close(ctx context.Context) error {
	t.bgMu.Lock()
	t.closed = true
	t.bgMu.Unlock()
	done := make(chan struct{})
	go func() {
		t.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
		t.l1.Close()
		return nil
	case <-ctx.Done():
		return errors.New("background cache refreshes still running at shutdown")
	}
}

func flightKey(kind byte, key Key, g Gen) string {
	// Fixed-width fields: no two (kind, key, generation) tuples share a
	// flight key.
	b := make([]byte, 0, 1+8+32+16)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, uint64(key.Order))
	b = append(b, key.Sum[:]...)
	b = binary.BigEndian.AppendUint64(b, g.Slot)
	b = binary.BigEndian.AppendUint64(b, g.Epoch)
	return string(b)
}

// OnChange registers f to be told of every invalidation, local or remote,
// after the tiers dropped the order; order 0 means "anything may have
// changed" (L1 was cleared). f must not block.
func (t *Tiers) OnChange(f func(order int64)) {
	t.watchMu.Lock()
	t.watchers = append(t.watchers, f)
	t.watchMu.Unlock()
}

func (t *Tiers) notify(order int64) {
	t.watchMu.RLock()
	defer t.watchMu.RUnlock()
	for _, f := range t.watchers {
		f(order)
	}
}

// Invalidate drops every identity's entry for order, in L1 at once and in
// Redis (queued if Redis cannot be reached), and tells every replica. Every
// source of change ends here: a proxied write, the purge API, the database
// change stream.
//
// L1 is bumped twice. The first bump stops this replica serving the old
// answer at once. Between it and the Redis script, a concurrent miss could
// still read the old entry from Redis and store it in L1 under the new
// generation; the second bump, after Redis has dropped the entry, voids
// anything stored in that window.
func (t *Tiers) Invalidate(ctx context.Context, order int64) (queued bool, err error) {
	queued, _, err = t.invalidate(ctx, order, false)
	return queued, err
}

// Invalidated is what became of one order of InvalidateConfirmed.
type Invalidated struct {
	Order  int64
	Queued bool  // Redis could not be reached: applied when it answers
	Err    error // the Redis call's failure, if any
}

// InvalidateConfirmed is Invalidate, for every order a write through the
// proxy names, whose writer's next read may go through any replica: once
// the orders are dropped here and in Redis, it waits until every replica
// each message reached has dropped its L1 copy too (see confirm.go), at
// most the confirm timeout for all of them together, or until ctx ends.
// It does not wait when there is nothing to wait for: no Redis, Redis
// skipped or failing (the invalidation is queued), Redis Cluster, or a
// timeout of 0. Either way every order is invalidated exactly as
// Invalidate does; the outcome of the wait is counted, not returned: a
// write is never failed for it.
func (t *Tiers) InvalidateConfirmed(ctx context.Context, orders []int64) []Invalidated {
	bound := time.Duration(t.confirmTimeout.Load())
	res := make([]Invalidated, len(orders))
	cs := make([]*Confirmation, len(orders))
	for i, order := range orders {
		res[i].Order = order
		res[i].Queued, cs[i], res[i].Err = t.invalidate(ctx, order, bound > 0)
	}
	// Last, and once for all the orders: a write naming many must not wait
	// the bound once per order (one replica that never acks, as during a
	// rolling upgrade, would then hold the write for N bounds and starve
	// the invalidations after it of their context).
	deadline := time.Now().Add(bound)
	for i, c := range cs {
		r := c.Wait(ctx, time.Until(deadline))
		t.m.InvalidationConfirms.WithLabelValues(r.String()).Inc()
		if r == ConfirmTimeout && t.allowConfirmLog() {
			t.log.Debug("not every replica confirmed an invalidation in time (one predating acks, or a subscriber that is no replica); answering anyway",
				"order", orders[i], "receivers", c.Received(), "waited", bound, "ctx_err", ctx.Err())
		}
	}
	return res
}

// invalidate drops order here and in Redis and wakes its watchers; with
// confirm, its message asks the other replicas to acknowledge, and the
// returned Confirmation (nil when there is nothing to wait for) must be
// waited on.
func (t *Tiers) invalidate(ctx context.Context, order int64, confirm bool) (queued bool, c *Confirmation, err error) {
	t.l1.Invalidate(order)
	if t.redis != nil {
		if confirm {
			queued, c, err = t.redis.InvalidateConfirmed(ctx, order)
		} else {
			queued, err = t.redis.Invalidate(ctx, order)
		}
		t.l1.Invalidate(order)
	}
	t.notify(order)
	return queued, c, err
}

// allowConfirmLog lets one confirmation-timeout line through per second: a
// rolling upgrade times out every write for a while.
func (t *Tiers) allowConfirmLog() bool {
	now := time.Now().UnixNano()
	n := t.confirmLogNext.Load()
	return now >= n && t.confirmLogNext.CompareAndSwap(n, now+int64(time.Second))
}

// Remote applies an invalidation another replica published: Redis has
// already dropped the order, so only L1 and watchers are left.
func (t *Tiers) Remote(order int64) {
	t.l1.Invalidate(order)
	t.notify(order)
}

// Clear drops all of L1 and wakes every watcher.
func (t *Tiers) Clear() {
	t.l1.Clear()
	t.notify(0)
}

// Peek returns key's L1 entry if it may be served now (fresh or within
// stale-while-revalidate), without loading or refreshing anything.
func (t *Tiers) Peek(key Key) (*Entry, Outcome) {
	now := time.Now().UnixNano()
	e, fresh := t.l1.Get(key, now)
	if e == nil || !fresh {
		return nil, 0
	}
	switch t.policy.Load().State(e, now) {
	case Fresh:
		return e, Hit
	case Revalidate:
		return e, Stale
	}
	return nil, 0
}

// ResetAll drops every cached order on every replica: L1 here, and a new
// Redis epoch (every key cached before becomes a miss; the bump is
// published, so the other replicas clear their L1). The database change
// stream calls it when it lost its place and cannot know what changed.
func (t *Tiers) ResetAll(ctx context.Context) error {
	t.l1.Clear()
	var err error
	if t.redis != nil {
		err = t.redis.BumpEpoch(ctx)
		// Like Invalidate's second bump: voids what a read of the old
		// key space stored meanwhile.
		t.l1.Clear()
	}
	t.notify(0)
	return err
}
