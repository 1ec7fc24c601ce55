package cache

// The load story (Tiers.Get) with a fake loader and real redis-server
// processes, no HTTP: the order in which the tiers are read and written,
// what a flight shares, and what it never stores.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"anqi-edge/internal/redistest"
	"anqi-edge/metrics"
)

// origin is a fake loader: it answers "v<n>" for its n-th load and can be
// held at the start of a load, or made to fail or panic.
type origin struct {
	loads   atomic.Int64
	hold    chan struct{} // non-nil: a load waits on it (after started)
	started chan struct{} // one value per load that started
	fail    atomic.Bool
	panicAt atomic.Int64 // the load with this number panics
	// callers counts Loader calls, to show hits make none.
	callers atomic.Int64
}

func newOrigin() *origin { return &origin{started: make(chan struct{}, 100)} }

func (o *origin) Load(ctx context.Context, key Key) (Loaded, error) {
	n := o.loads.Add(1)
	o.started <- struct{}{}
	if o.hold != nil {
		<-o.hold
	}
	if o.panicAt.Load() == n {
		panic("test: loader panics")
	}
	if o.fail.Load() {
		return Loaded{}, errors.New("origin down")
	}
	body := `{"code":0,"data":"v` + string(rune('0'+n)) + `"}`
	return Loaded{Entry: NewEntry([]byte(body), []byte("application/json"), false, time.Now())}, nil
}

// caller hands out o as its loader and counts how often it was asked.
func (o *origin) caller() Caller {
	return CallerFunc(func(bool) Loader { o.callers.Add(1); return o })
}

type tiersOpts struct {
	redis   []string // nil: L1 only
	prefix  string
	channel string
	replica string
	policy  Policy
	l1TTL   time.Duration
	wait    time.Duration
	confirm time.Duration // cache.invalidate_confirm_timeout
}

func newTestTiers(t *testing.T, o tiersOpts) *Tiers {
	t.Helper()
	if o.policy.TTL == 0 {
		o.policy = Policy{TTL: time.Minute, StaleWhileRevalidate: time.Minute, StaleIfError: 10 * time.Minute}
	}
	if o.l1TTL == 0 {
		o.l1TTL = time.Minute
	}
	l1, err := NewL1(1<<20, o.l1TTL, o.policy.MaxKeep())
	if err != nil {
		t.Fatal(err)
	}
	to := TiersOptions{L1: l1, Policy: o.policy, Wait: o.wait, ConfirmTimeout: o.confirm, Metrics: metrics.New(l1.Size), Log: discardLog}
	var c redis.UniversalClient
	if o.redis != nil {
		c = redis.NewUniversalClient(&redis.UniversalOptions{Addrs: o.redis, DialTimeout: 250 * time.Millisecond,
			ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1, ContextTimeoutEnabled: true})
		to.Redis = &RedisOptions{Client: c, Prefix: o.prefix, Channel: o.channel, ReplicaID: o.replica,
			BreakerCooldown: 100 * time.Millisecond}
	}
	tr := NewTiers(to)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if tr.Redis() != nil {
		go func() {
			defer close(done)
			tr.Redis().Run(ctx)
		}()
		eventually(t, "subscription of "+o.replica, tr.Redis().subscribed.Load)
	} else {
		close(done)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		if err := tr.Close(cctx); err != nil {
			t.Errorf("close: %v", err)
		}
		cancel()
		<-done
		if c != nil {
			c.Close()
		}
	})
	return tr
}

func sharedPrefix(t *testing.T) string {
	return "t" + strings.NewReplacer(":", "", "/", "_").Replace(redistest.Prefix(t))
}

func body(r Result) string {
	if r.Entry == nil {
		return "<none>"
	}
	return string(r.Entry.Body)
}

func TestTiers_HitAsksForNoLoader(t *testing.T) {
	tr := newTestTiers(t, tiersOpts{})
	o := newOrigin()
	k := testKey(1, "u1")
	if r, err := tr.Get(context.Background(), k, o.caller()); err != nil || r.Outcome != Miss {
		t.Fatalf("first get: %+v %v, want a MISS", r, err)
	}
	for range 5 {
		if r, _ := tr.Get(context.Background(), k, o.caller()); r.Outcome != Hit {
			t.Fatalf("get: %v, want a HIT", r.Outcome)
		}
	}
	if n := o.callers.Load(); n != 1 {
		t.Fatalf("the caller was asked for a loader %d times, want once (hits copy nothing)", n)
	}
}

func TestTiers_ConcurrentMissesMakeOneLoad(t *testing.T) {
	tr := newTestTiers(t, tiersOpts{redis: []string{redistest.Shared(t)}, prefix: sharedPrefix(t), channel: "c" + sharedPrefix(t), replica: "A"})
	o := newOrigin()
	o.hold = make(chan struct{})
	k := testKey(2, "u1")
	var wg sync.WaitGroup
	results := make([]Result, 50)
	for i := range results {
		wg.Go(func() {
			results[i], _ = tr.Get(context.Background(), k, o.caller())
		})
	}
	<-o.started
	// Let the others join the flight before it ends.
	time.Sleep(100 * time.Millisecond)
	close(o.hold)
	wg.Wait()
	if n := o.loads.Load(); n != 1 {
		t.Fatalf("%d loads for 50 concurrent misses, want 1", n)
	}
	for i, r := range results {
		if body(r) != `{"code":0,"data":"v1"}` {
			t.Fatalf("caller %d got %s", i, body(r))
		}
	}
}

func TestTiers_RedisHitFillsL1WithoutLoading(t *testing.T) {
	p, addr := sharedPrefix(t), redistest.Shared(t) // one server for both replicas
	a := newTestTiers(t, tiersOpts{redis: []string{addr}, prefix: p, channel: "c" + p, replica: "A"})
	b := newTestTiers(t, tiersOpts{redis: []string{addr}, prefix: p, channel: "c" + p, replica: "B"})
	o := newOrigin()
	k := testKey(3, "u1")
	a.Get(context.Background(), k, o.caller())
	r, err := b.Get(context.Background(), k, o.caller())
	if err != nil || r.Outcome != Hit || body(r) != `{"code":0,"data":"v1"}` {
		t.Fatalf("replica B: %+v %v, want A's entry as a HIT from Redis", r, err)
	}
	if e, st := b.Peek(k); e == nil || st != Hit {
		t.Fatal("replica B's L1 does not hold the entry it read from Redis")
	}
	if n := o.loads.Load(); n != 1 {
		t.Fatalf("%d loads, want 1", n)
	}
}

func TestTiers_FillStartedBeforeInvalidationIsAnsweredButNotStored(t *testing.T) {
	p := sharedPrefix(t)
	tr := newTestTiers(t, tiersOpts{redis: []string{redistest.Shared(t)}, prefix: p, channel: "c" + p, replica: "A"})
	o := newOrigin()
	o.hold = make(chan struct{})
	k := testKey(4, "u1")
	got := make(chan Result, 1)
	go func() {
		r, _ := tr.Get(context.Background(), k, o.caller())
		got <- r
	}()
	<-o.started
	if _, err := tr.Invalidate(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	close(o.hold)
	// The request asked before the change: it gets the answer.
	if r := <-got; body(r) != `{"code":0,"data":"v1"}` {
		t.Fatalf("the waiting caller got %s", body(r))
	}
	o.hold = nil
	// Nobody after the change gets it: neither tier kept it.
	r, err := tr.Get(context.Background(), k, o.caller())
	if err != nil || r.Outcome != Miss || body(r) != `{"code":0,"data":"v2"}` {
		t.Fatalf("get after the invalidation: %+v %v, want a MISS with the second load", r, err)
	}
}

// A replica whose pub/sub message is late must not serve the pre-write
// answer: the fill Redis refused for a newer generation stays out of L1 as
// well. Replica B listens on another channel, so it never hears of A's
// invalidation; only the generation in Redis can tell it.
func TestTiers_FillRedisRefusedNeverReachesL1(t *testing.T) {
	p := sharedPrefix(t)
	addr := redistest.Shared(t)
	a := newTestTiers(t, tiersOpts{redis: []string{addr}, prefix: p, channel: "a" + p, replica: "A"})
	b := newTestTiers(t, tiersOpts{redis: []string{addr}, prefix: p, channel: "b" + p, replica: "B"})
	o := newOrigin()
	o.hold = make(chan struct{})
	k := testKey(5, "u1")
	got := make(chan Result, 1)
	go func() {
		r, _ := b.Get(context.Background(), k, o.caller())
		got <- r
	}()
	<-o.started // B's fill has read the generation and is asking the origin
	if _, err := a.Invalidate(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	close(o.hold)
	<-got
	o.hold = nil
	if e, _ := b.Peek(k); e != nil {
		t.Fatalf("replica B kept %s in L1 although Redis refused it", e.Body)
	}
	r, _ := b.Get(context.Background(), k, o.caller())
	if r.Outcome != Miss || body(r) != `{"code":0,"data":"v2"}` {
		t.Fatalf("replica B's next read: %v %s, want a MISS with the new answer", r.Outcome, body(r))
	}
}

func TestTiers_StuckLeaderDoesNotHangFollowersOrTheKey(t *testing.T) {
	tr := newTestTiers(t, tiersOpts{wait: 300 * time.Millisecond})
	stuck := make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(stuck) }) }
	// Released at the end, so the flight's goroutine ends before Close.
	t.Cleanup(release)
	var loads atomic.Int64
	loader := LoaderFunc(func(ctx context.Context, key Key) (Loaded, error) {
		if loads.Add(1) == 1 {
			<-stuck // the first load hangs past every timeout it has
		}
		return Loaded{Entry: NewEntry([]byte(`{"code":0}`), nil, false, time.Now())}, nil
	})
	c := CallerFunc(func(bool) Loader { return loader })
	k := testKey(6, "u1")
	var wg sync.WaitGroup
	errs := make([]error, 10)
	took := make([]time.Duration, 10)
	for i := range errs {
		wg.Go(func() {
			t0 := time.Now()
			_, errs[i] = tr.Get(context.Background(), k, c)
			took[i] = time.Since(t0)
		})
	}
	wg.Wait()
	gaveUp := 0
	for i, err := range errs {
		// Each waiter gives up on its own deadline (300ms); 8s is a bound
		// for a loaded machine. A caller that a busy machine started only
		// after the others gave up runs a new flight and gets the answer.
		switch {
		case took[i] > 8*time.Second:
			t.Errorf("caller %d waited %v", i, took[i])
		case errors.Is(err, ErrFlightTimeout):
			gaveUp++
		case err != nil:
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if gaveUp == 0 {
		t.Fatal("no caller waited on the stuck flight")
	}
	// The key is not poisoned: while the first load is still stuck, a new
	// caller starts its own flight and gets the answer.
	if r, err := tr.Get(context.Background(), k, c); err != nil || r.Entry == nil {
		t.Fatalf("get after the stuck flight was given up: %+v %v", r, err)
	}
}

func TestTiers_PanicInALoaderReachesNoOtherCaller(t *testing.T) {
	tr := newTestTiers(t, tiersOpts{})
	o := newOrigin()
	o.hold = make(chan struct{})
	o.panicAt.Store(1)
	k := testKey(7, "u1")
	var wg sync.WaitGroup
	errs := make([]error, 20)
	results := make([]Result, 20)
	for i := range errs {
		wg.Go(func() {
			results[i], errs[i] = tr.Get(context.Background(), k, o.caller())
		})
	}
	<-o.started
	time.Sleep(100 * time.Millisecond) // let followers join
	close(o.hold)
	wg.Wait()
	failed := 0
	for i, err := range errs {
		switch {
		case errors.Is(err, ErrLoaderPanic):
			failed++
		case err != nil || results[i].Entry == nil:
			t.Errorf("caller %d: %+v %v", i, results[i], err)
		}
	}
	if failed != 1 {
		t.Fatalf("%d callers got the panic, want only the one whose loader panicked", failed)
	}
	if r, _ := tr.Get(context.Background(), k, o.caller()); r.Outcome != Hit {
		t.Fatalf("after the panic: %v, want a HIT", r.Outcome)
	}
}

func TestTiers_StaleWhileRevalidateRefreshesOnceInTheBackground(t *testing.T) {
	tr := newTestTiers(t, tiersOpts{policy: Policy{TTL: 50 * time.Millisecond, StaleWhileRevalidate: time.Minute}})
	o := newOrigin()
	k := testKey(8, "u1")
	tr.Get(context.Background(), k, o.caller())
	time.Sleep(60 * time.Millisecond)
	o.hold = make(chan struct{})
	for range 20 {
		if r, _ := tr.Get(context.Background(), k, o.caller()); r.Outcome != Stale {
			t.Fatalf("past ttl: %v, want STALE", r.Outcome)
		}
	}
	<-o.started // the first load
	<-o.started // the one refresh
	close(o.hold)
	eventually(t, "the refreshed entry", func() bool {
		r, _ := tr.Get(context.Background(), k, o.caller())
		return body(r) == `{"code":0,"data":"v2"}`
	})
	if n := o.loads.Load(); n != 2 {
		t.Fatalf("%d loads, want the first and one refresh", n)
	}
}

func TestTiers_OriginFailureServesStaleWithinStaleIfError(t *testing.T) {
	tr := newTestTiers(t, tiersOpts{policy: Policy{TTL: 20 * time.Millisecond, StaleIfError: time.Minute}})
	o := newOrigin()
	k := testKey(9, "u1")
	tr.Get(context.Background(), k, o.caller())
	time.Sleep(30 * time.Millisecond)
	o.fail.Store(true)
	r, err := tr.Get(context.Background(), k, o.caller())
	if err != nil || r.Outcome != Stale || body(r) != `{"code":0,"data":"v1"}` {
		t.Fatalf("origin down: %+v %v, want the stale entry", r, err)
	}
}

func TestTiers_CloseWaitsForBackgroundRefreshes(t *testing.T) {
	l1, _ := NewL1(1<<20, time.Minute, time.Hour)
	tr := NewTiers(TiersOptions{L1: l1, Policy: Policy{TTL: 10 * time.Millisecond, StaleWhileRevalidate: time.Minute}, Log: discardLog})
	o := newOrigin()
	k := testKey(10, "u1")
	tr.Get(context.Background(), k, o.caller())
	time.Sleep(20 * time.Millisecond)
	o.hold = make(chan struct{})
	tr.Get(context.Background(), k, o.caller()) // STALE: starts a refresh
	<-o.started
	<-o.started
	closed := make(chan error, 1)
	go func() { closed <- tr.Close(context.Background()) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a refresh was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(o.hold)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// After Close no refresh starts.
	time.Sleep(20 * time.Millisecond)
	before := o.loads.Load()
	o.hold = nil
	tr.Get(context.Background(), k, o.caller())
	if o.loads.Load() != before {
		t.Fatal("a refresh started after Close")
	}
}
