package cache

// Tests of the Redis tier against real redis-server processes
// (internal/redistest): the generation guard, invalidation across
// replicas, the queue that holds invalidations while Redis is unreachable,
// the global epoch, the subscription's failure modes, and Redis Cluster.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"anqi-edge/internal/redistest"
	"anqi-edge/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis parks a pool reaper per client until Close; the clients
		// are closed in cleanups, but its timer goroutine can lag a moment.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
		redistest.ProcessServerGoroutine,
	)
}

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// tier is one replica's Redis tier with its callbacks recorded.
type tier struct {
	r      *Redis
	m      *metrics.Metrics
	c      redis.UniversalClient
	clears atomic.Int64
	mu     sync.Mutex
	remote []int64
}

func (tr *tier) heard(order int64) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, o := range tr.remote {
		if o == order {
			return true
		}
	}
	return false
}

type tierOpts struct {
	addrs   []string
	cluster bool
	prefix  string
	channel string
	replica string
	edit    func(*RedisOptions)
}

func newTier(t *testing.T, o tierOpts) *tier {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 o.addrs,
		IsClusterMode:         o.cluster,
		DialTimeout:           250 * time.Millisecond,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { c.Close() })
	tr := &tier{m: metrics.New(nil), c: c}
	opts := RedisOptions{
		Client:             c,
		Prefix:             o.prefix,
		Channel:            o.channel,
		ReplicaID:          o.replica,
		BreakerCooldown:    100 * time.Millisecond,
		OnRemoteInvalidate: func(order int64) { tr.mu.Lock(); tr.remote = append(tr.remote, order); tr.mu.Unlock() },
		OnClear:            func() { tr.clears.Add(1) },
		Metrics:            tr.m,
		Log:                discardLog,
	}
	if o.edit != nil {
		o.edit(&opts)
	}
	tr.r = NewRedis(opts)
	return tr
}

// run starts the tier's subscription and maintenance until the test ends.
func (tr *tier) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (tr *tier) metric(name string) float64 {
	mfs, err := tr.m.Registry.Gather()
	if err != nil {
		panic(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// pair is two replicas sharing a key space and channel.
func pair(t *testing.T, addrs []string, cluster bool, edit func(*RedisOptions)) (a, b *tier) {
	t.Helper()
	p := strings.NewReplacer(":", "", "/", "_").Replace(redistest.Prefix(t))
	o := tierOpts{addrs: addrs, cluster: cluster, prefix: "t" + p, channel: "inv:" + p, edit: edit}
	o.replica = "A"
	a = newTier(t, o)
	o.replica = "B"
	b = newTier(t, o)
	return a, b
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitSubscribed(t *testing.T, tiers ...*tier) {
	t.Helper()
	for _, tr := range tiers {
		eventually(t, "subscription of "+tr.r.o.ReplicaID, tr.r.subscribed.Load)
	}
}

func testKey(order int64, user string) Key {
	return MakeKey(order, KeyParts{Site: []byte("example.com"), Identity: 1, ID: []byte(user)})
}

func testEntry(body string) *Entry {
	return NewEntry([]byte(body), []byte("application/json"), false, time.Now())
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fill reads k's generation and fills it, as the detail path does.
func fill(t *testing.T, tr *tier, k Key, body string) {
	t.Helper()
	ctx := ctxT(t)
	_, gen, err := tr.r.Get(ctx, k)
	if err != nil {
		t.Fatalf("get before fill: %v", err)
	}
	ok, err := tr.r.Fill(ctx, k, testEntry(body), gen, time.Minute)
	if err != nil || !ok {
		t.Fatalf("fill order %d: stored=%v err=%v", k.Order, ok, err)
	}
}

func get(t *testing.T, tr *tier, k Key) (string, bool) {
	t.Helper()
	e, _, err := tr.r.Get(ctxT(t), k)
	if err != nil {
		t.Fatalf("get order %d: %v", k.Order, err)
	}
	if e == nil {
		return "", false
	}
	return string(e.Body), true
}

// --- the generation guard ----------------------------------------------------

func TestRedis_FillOvertakenByAnInvalidationIsNotStored(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	ctx := ctxT(t)
	k := testKey(7, "u1")
	_, gen, err := a.r.Get(ctx, k) // before asking AnqiCMS
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.r.Invalidate(ctx, 7); err != nil { // lands while AnqiCMS answers
		t.Fatal(err)
	}
	ok, err := a.r.Fill(ctx, k, testEntry("stale"), gen, time.Minute)
	if err != nil || ok {
		t.Fatalf("fill under an old generation: stored=%v err=%v, want dropped", ok, err)
	}
	if body, ok := get(t, a, k); ok {
		t.Fatalf("Redis serves %q after the fill was dropped", body)
	}
	fill(t, a, k, "fresh")
	if body, _ := get(t, a, k); body != "fresh" {
		t.Fatalf("after a fill under the current generation: %q", body)
	}
}

func TestRedis_InvalidateDropsEveryIdentitysEntryOfTheOrderOnly(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	for _, u := range []string{"u1", "u2", "u3"} {
		fill(t, a, testKey(7, u), "order 7 for "+u)
	}
	fill(t, a, testKey(8, "u1"), "order 8")
	if _, err := a.r.Invalidate(ctxT(t), 7); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"u1", "u2", "u3"} {
		if body, ok := get(t, a, testKey(7, u)); ok {
			t.Errorf("order 7 for %s survived the invalidation: %q", u, body)
		}
	}
	if body, ok := get(t, a, testKey(8, "u1")); !ok || body != "order 8" {
		t.Errorf("order 8 was dropped with order 7: %q %v", body, ok)
	}
	n, err := a.c.Exists(ctxT(t), a.r.tag(7)+":i").Result()
	if err != nil || n != 0 {
		t.Errorf("order 7's index survived: exists=%d err=%v", n, err)
	}
}

// --- pub/sub between replicas -------------------------------------------------

func TestRedis_OtherReplicasHearAnInvalidationTheSenderDoesNot(t *testing.T) {
	a, b := pair(t, []string{redistest.Shared(t)}, false, nil)
	a.run(t)
	b.run(t)
	waitSubscribed(t, a, b)
	if _, err := a.r.Invalidate(ctxT(t), 42); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B to hear order 42", func() bool { return b.heard(42) })
	// A's own message has come back to A by the time B's has reached B
	// (same server, same channel); give it a moment more anyway.
	time.Sleep(50 * time.Millisecond)
	if a.heard(42) {
		t.Fatal("A applied its own invalidation a second time")
	}
	if n := b.metric("anqi_edge_invalidations_total"); n != 1 {
		t.Errorf("B counted %v pub/sub invalidations, want 1", n)
	}
}

func TestRedis_ClusterRunsTheScriptsAndPubSubForEverySlot(t *testing.T) {
	cl := redistest.StartCluster(t)
	addrs := cl.Addrs()
	a, b := pair(t, addrs, true, nil)
	a.run(t)
	b.run(t)
	waitSubscribed(t, a, b)
	cc := a.c.(*redis.ClusterClient)
	epochSlot, _ := cc.ClusterKeySlot(ctxT(t), a.r.epochK).Result()
	restartSlot, _ := cc.ClusterKeySlot(ctxT(t), a.r.restartK).Result()
	if a.r.restartK == "" || epochSlot != restartSlot {
		t.Fatalf("restart marker %q in slot %d, epoch in %d: the epoch script would fail with CROSSSLOT",
			a.r.restartK, restartSlot, epochSlot)
	}
	nodes := map[string]bool{}
	for order := int64(1); order <= 24; order++ {
		node, err := cc.MasterForKey(ctxT(t), a.r.tag(order)+":g")
		if err != nil {
			t.Fatal(err)
		}
		nodes[node.String()] = true
		for _, u := range []string{"u1", "u2"} {
			fill(t, a, testKey(order, u), fmt.Sprintf("order %d for %s", order, u))
			if body, ok := get(t, b, testKey(order, u)); !ok || body != fmt.Sprintf("order %d for %s", order, u) {
				t.Fatalf("B reading A's fill of order %d: %q %v", order, body, ok)
			}
		}
		if _, err := b.r.Invalidate(ctxT(t), order); err != nil {
			t.Fatalf("invalidate order %d on the cluster: %v", order, err)
		}
		eventually(t, fmt.Sprintf("A to hear order %d", order), func() bool { return a.heard(order) })
		if _, ok := get(t, a, testKey(order, "u1")); ok {
			t.Fatalf("order %d survived its invalidation on the cluster", order)
		}
	}
	if len(nodes) != 3 {
		t.Errorf("orders 1..24 landed on %d masters, want all 3", len(nodes))
	}
	// The epoch bump is a script too; it must reach every replica.
	before := a.r.epoch()
	a.r.enqueue(1)
	a.r.mu.Lock()
	a.r.bumpEpoch = true
	a.r.mu.Unlock()
	a.r.drain(ctxT(t))
	if a.r.epoch() <= before {
		t.Fatalf("A's epoch %d did not move up from %d", a.r.epoch(), before)
	}
	eventually(t, "B to move to A's epoch", func() bool { return b.r.epoch() == a.r.epoch() })
	for _, tr := range []*tier{a, b} {
		if n := tr.metric("anqi_edge_redis_errors_total"); n != 0 {
			t.Errorf("replica %s: %v Redis errors on the cluster (CROSSSLOT?)", tr.r.o.ReplicaID, n)
		}
	}

	// The cluster loses its data: a fill from before is refused, and both
	// replicas notice (the epoch is not in the lookups' slot: the
	// background check finds it gone).
	clearsA, clearsB := a.clears.Load(), b.clears.Load()
	res := storedAfterLoss(t, a, b, func() {
		for _, n := range cl.Nodes() {
			n.FlushAll(t)
		}
	})
	if res != FillDroppedReset && res != FillDroppedEpoch {
		t.Fatalf("fill read before the cluster was flushed: %v, want it dropped", res)
	}
	eventually(t, "both replicas to clear L1 after the flush", func() bool {
		return a.clears.Load() > clearsA && b.clears.Load() > clearsB
	})
}

func TestRedis_BrokenSubscriptionClearsL1OnReconnect(t *testing.T) {
	srv := redistest.Start(t)
	a, b := pair(t, []string{srv.Addr()}, false, nil)
	a.run(t)
	waitSubscribed(t, a)
	before := a.clears.Load()
	srv.Kill()
	eventually(t, "the subscription to be reported down", func() bool {
		return !a.r.subscribed.Load() && a.metric("anqi_edge_pubsub_up") == 0
	})
	srv.Restart(t)
	waitSubscribed(t, a)
	if a.clears.Load() <= before || a.metric("anqi_edge_l1_clears_total") < 1 {
		t.Fatalf("reconnect cleared L1 %d times (metric %v), want at least once",
			a.clears.Load()-before, a.metric("anqi_edge_l1_clears_total"))
	}
	if a.metric("anqi_edge_pubsub_up") != 1 {
		t.Fatal("anqi_edge_pubsub_up is not 1 after the reconnect")
	}
	// And it is a working subscription again.
	if _, err := b.r.Invalidate(ctxT(t), 9); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A to hear order 9 after the reconnect", func() bool { return a.heard(9) })
}

// through points tr at addr (a gate) instead; call before run.
func (tr *tier) through(t *testing.T, addr string) {
	t.Helper()
	tr.c.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 250 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	tr.c, tr.r.o.Client, tr.r.c, tr.r.batched = c, c, c, autopipeliner(c, true)
}

func TestRedis_SilentlyDeadSubscriptionIsNoticedAndReplaced(t *testing.T) {
	addr := redistest.Shared(t)
	g := redistest.StartGate(t, addr)
	a, b := pair(t, []string{addr}, false, nil)
	// A reaches Redis through the gate; B directly.
	a.through(t, g.Addr())
	a.run(t)
	waitSubscribed(t, a)

	g.SetHole(true)
	if _, err := b.r.Invalidate(ctxT(t), 5); err != nil { // lost on the way to A
		t.Fatal(err)
	}
	// Two ping intervals and a little: quiet, then an unanswered ping.
	eventually(t, "A to notice the dead subscription", func() bool { return !a.r.subscribed.Load() })
	if a.metric("anqi_edge_pubsub_up") != 0 {
		t.Error("anqi_edge_pubsub_up stayed 1 on a dead subscription")
	}
	g.SetHole(false)
	eventually(t, "A to subscribe again and clear L1", func() bool {
		return a.r.subscribed.Load() && a.clears.Load() > 0
	})
	if a.heard(5) {
		t.Log("the invalidation of order 5 made it through the black hole after all")
	}
}

// --- Redis unreachable: the queue and the epoch --------------------------------

func TestRedis_InvalidationsQueuedWhileDownApplyBeforeReadsResume(t *testing.T) {
	// A loses Redis (a gate cuts it off), B does not, and Redis keeps the
	// entry from before the change: A's queued invalidation must drop it.
	addr := redistest.Shared(t)
	g := redistest.StartGate(t, addr)
	a, b := pair(t, []string{addr}, false, nil)
	a.through(t, g.Addr())
	k := testKey(3, "u1")
	fill(t, b, k, "before")
	a.run(t)
	waitSubscribed(t, a)

	g.SetDown(true)
	queued, _ := a.r.Invalidate(ctxT(t), 3)
	if !queued {
		t.Fatal("an invalidation with Redis unreachable was not queued")
	}
	if _, _, err := a.r.Get(ctxT(t), k); err == nil {
		t.Fatal("Get read Redis with an invalidation pending")
	}
	if ok, _ := a.r.Fill(ctxT(t), k, testEntry("x"), packGen(0, 0), time.Minute); ok {
		t.Fatal("Fill wrote to Redis with an invalidation pending")
	}
	if st := a.r.Status(ctxT(t)); st.Pending != 1 {
		t.Fatalf("status reports %d pending, want 1", st.Pending)
	}
	if body, ok := get(t, b, k); !ok || body != "before" {
		t.Fatalf("B, still connected, should still see the old entry: %q %v", body, ok)
	}

	g.SetDown(false)
	eventually(t, "the queue to drain", func() bool { return !a.r.blocked.Load() })
	for _, tr := range []*tier{a, b} {
		if body, ok := get(t, tr, k); ok {
			t.Fatalf("replica %s: the entry from before the change survived the drain: %q", tr.r.o.ReplicaID, body)
		}
	}
	eventually(t, "the breaker to close", func() bool { return a.r.Status(ctxT(t)).Breaker == "closed" })
	if st := a.r.Status(ctxT(t)); st.Pending != 0 {
		t.Fatalf("after the drain: %+v", st)
	}
}

// hookFunc runs after every command a client processes.
type hookFunc func(cmd redis.Cmder)

func (h hookFunc) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h hookFunc) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h hookFunc) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h(cmd)
		return err
	}
}

func isScript(cmd redis.Cmder) bool {
	n := strings.ToLower(cmd.Name())
	return n == "evalsha" || n == "eval"
}

func TestRedis_InvalidationArrivingDuringADrainIsNotLost(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	a.c.Set(ctxT(t), a.r.tag(5)+":g", 10, time.Minute)
	a.r.enqueue(5)
	var once sync.Once
	a.c.AddHook(hookFunc(func(cmd redis.Cmder) {
		if isScript(cmd) {
			// A write to order 5 lands right after its queued invalidation
			// ran, before the drain is done.
			once.Do(func() { a.r.enqueue(5) })
		}
	}))
	a.r.drain(ctxT(t))
	if !a.r.blocked.Load() {
		t.Fatal("the drain unblocked reads with an invalidation still to apply")
	}
	a.r.drain(ctxT(t))
	if a.r.blocked.Load() {
		t.Fatal("the second drain did not finish the queue")
	}
	if g, _ := a.c.Get(ctxT(t), a.r.tag(5)+":g").Int(); g != 12 {
		t.Fatalf("order 5's generation is %d, want 12 (both invalidations applied)", g)
	}
}

func TestRedis_InvalidationArrivingDuringAnEpochBumpIsNotLost(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, func(o *RedisOptions) { o.QueueMax = 1 })
	a.c.Set(ctxT(t), a.r.tag(6)+":g", 10, time.Minute)
	a.r.enqueue(1)
	a.r.enqueue(2) // overflow
	var once sync.Once
	a.c.AddHook(hookFunc(func(cmd redis.Cmder) {
		if isScript(cmd) {
			once.Do(func() { a.r.enqueue(6) })
		}
	}))
	a.r.drain(ctxT(t))
	if a.r.epoch() == 0 {
		t.Fatalf("epoch %d after the overflow drain, want it moved", a.r.epoch())
	}
	if !a.r.blocked.Load() {
		t.Fatal("reads resumed with order 6's invalidation (queued during the bump) dropped")
	}
	a.r.drain(ctxT(t))
	if g, _ := a.c.Get(ctxT(t), a.r.tag(6)+":g").Int(); g != 11 {
		t.Fatalf("order 6's generation is %d, want 11", g)
	}
}

func TestRedis_QueueOverflowBumpsTheEpochForEveryReplica(t *testing.T) {
	addr := redistest.Shared(t)
	g := redistest.StartGate(t, addr)
	a, b := pair(t, []string{addr}, false, func(o *RedisOptions) { o.QueueMax = 2 })
	a.through(t, g.Addr()) // only A loses Redis; Redis keeps its data
	a.run(t)
	b.run(t)
	waitSubscribed(t, a, b)
	k := testKey(4, "u1") // an order A never hears of: only the bump hides it
	fill(t, b, k, "epoch 0")
	e0 := b.r.epoch()

	g.SetDown(true)
	for o := int64(1); o <= 3; o++ {
		if q, _ := a.r.Invalidate(ctxT(t), o); !q {
			t.Fatalf("order %d not queued with Redis unreachable", o)
		}
	}
	clearsB := b.clears.Load()
	g.SetDown(false)
	eventually(t, "A to drain with an epoch bump", func() bool { return !a.r.blocked.Load() })
	if a.r.epoch() <= e0 || a.metric("anqi_edge_redis_key_epoch") <= float64(e0) {
		t.Fatalf("A's epoch after the overflow: %d, was %d", a.r.epoch(), e0)
	}
	eventually(t, "B to follow the epoch", func() bool { return b.r.epoch() == a.r.epoch() })
	if b.clears.Load() == clearsB {
		t.Error("B moved epochs without clearing L1")
	}
	for _, tr := range []*tier{a, b} {
		if body, ok := get(t, tr, k); ok {
			t.Errorf("replica %s still reaches the pre-bump entry: %q", tr.r.o.ReplicaID, body)
		}
	}
	if n, _ := b.c.Exists(ctxT(t), b.r.entryKey(k, e0)).Result(); n != 1 {
		t.Error("the old epoch's entry should still be in Redis (unreachable, not deleted)")
	}
}

func TestRedis_FillStraddlingAnEpochBumpIsNotStored(t *testing.T) {
	a, b := pair(t, []string{redistest.Shared(t)}, false, func(o *RedisOptions) { o.QueueMax = 1 })
	k := testKey(11, "u1")
	_, gen, err := a.r.Get(ctxT(t), k) // then AnqiCMS is asked
	if err != nil {
		t.Fatal(err)
	}
	before := a.r.epoch()
	// Meanwhile B overflows its queue and bumps the epoch; A hears of it.
	b.r.enqueue(1)
	b.r.enqueue(2)
	b.r.drain(ctxT(t))
	if err := a.r.refreshEpoch(ctxT(t), true); err != nil || a.r.epoch() <= before {
		t.Fatalf("A's epoch %d (was %d), err %v", a.r.epoch(), before, err)
	}
	ok, err := a.r.Fill(ctxT(t), k, testEntry("read before the bump"), gen, time.Minute)
	if err != nil || ok {
		t.Fatalf("fill that started before the bump: stored=%v err=%v, want dropped", ok, err)
	}
	if body, ok := get(t, a, k); ok {
		t.Fatalf("the new epoch serves data read before the bump: %q", body)
	}
}

func TestRedis_ReplicaUsesTheCurrentEpochBeforeItHasSubscribed(t *testing.T) {
	a, b := pair(t, []string{redistest.Shared(t)}, false, nil)
	if err := a.c.Set(ctxT(t), a.r.epochKey(), 3, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	// An entry of a retired epoch, as a replica that had not heard of the
	// bumps would have written it.
	k := testKey(12, "u1")
	stale := testEntry("epoch 0")
	val, _ := stale.MarshalBinary()
	a.c.Set(ctxT(t), a.r.entryKey(k, 0), val, time.Minute)

	// B has not subscribed yet (not running): it must still not read
	// epoch 0.
	if body, ok := get(t, b, k); ok {
		t.Fatalf("a replica that has not subscribed yet read a retired epoch: %q", body)
	}
	if b.r.epoch() != 3 {
		t.Fatalf("B is on epoch %d, want 3", b.r.epoch())
	}
	fill(t, b, k, "epoch 3")
	if body, _ := get(t, a, k); body != "epoch 3" {
		t.Fatalf("A, on epoch 3 too, reads %q", body)
	}
}

// hookBefore runs f before every command a client processes.
type hookBefore func(cmd redis.Cmder)

func (h hookBefore) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h hookBefore) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h hookBefore) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h(cmd)
		return next(ctx, cmd)
	}
}

// A replica bumps the epoch while its subscription, reconnecting at the same
// moment, re-reads it. The re-read must not be adopted after the bump if
// Redis ran it before the bump (it would put the replica back on the
// retired key space, and if the subscription missed the bump's message,
// for good).
func TestRedis_AnEpochReadThatRanBeforeABumpIsNotAdoptedAfterIt(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	a.r.mu.Lock()
	a.r.bumpEpoch = true
	a.r.blocked.Store(true)
	a.r.mu.Unlock()
	var once sync.Once
	refreshed := make(chan error, 1)
	a.c.AddHook(hookBefore(func(cmd redis.Cmder) {
		if !isScript(cmd) {
			return
		}
		once.Do(func() {
			// Just before Redis runs the bump, the other goroutine reads the
			// epoch. Give it every chance to run first (it cannot while
			// the bump holds the epoch).
			go func() { refreshed <- a.r.refreshEpoch(context.Background(), true) }()
			select {
			case err := <-refreshed:
				refreshed <- err
			case <-time.After(300 * time.Millisecond):
			}
		})
	}))
	a.r.drain(ctxT(t))
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
	inRedis, err := a.c.Get(ctxT(t), a.r.epochKey()).Int64()
	if err != nil {
		t.Fatal(err)
	}
	if got := a.r.epoch(); got != inRedis || got == 0 {
		t.Fatalf("replica on epoch %d, Redis on %d: a read from before the bump was adopted after it", got, inRedis)
	}
}

func TestRedis_BreakerOpensOnADeadRedisAndClosesByItself(t *testing.T) {
	srv := redistest.Start(t)
	a, _ := pair(t, []string{srv.Addr()}, false, nil)
	a.run(t)
	waitSubscribed(t, a)
	srv.Kill()
	k := testKey(1, "u1")
	for range 10 {
		a.r.Get(ctxT(t), k)
	}
	if st := a.r.brk.state(time.Now().UnixNano()); st == BreakerClosed {
		t.Fatal("the breaker is still closed after 10 failures")
	}
	start := time.Now()
	if _, _, err := a.r.Get(ctxT(t), k); err == nil {
		t.Fatal("Get succeeded on a dead Redis")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a Get with the breaker open took %v", d)
	}
	srv.Restart(t)
	eventually(t, "the breaker to close without traffic", func() bool {
		return a.r.brk.state(time.Now().UnixNano()) == BreakerClosed
	})
	eventually(t, "Get to work again", func() bool {
		_, _, err := a.r.Get(ctxT(t), k)
		return err == nil
	})
}

func TestRedis_DroppedFillDoesNotSwallowTheBreakersProbe(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	k := testKey(13, "u1")
	_, gen, err := a.r.Get(ctxT(t), k)
	if err != nil {
		t.Fatal(err)
	}
	a.r.setEpoch(a.r.epoch() + 1) // the fill now straddles a bump
	// The breaker is open and its cooldown is over: the next caller to ask
	// is its one probe.
	a.r.brk.openUntil.Store(1)
	if ok, _ := a.r.Fill(ctxT(t), k, testEntry("x"), gen, time.Minute); ok {
		t.Fatal("fill across an epoch bump was stored")
	}
	if !a.r.brk.allow(time.Now().UnixNano()) {
		t.Fatal("a fill that never reached Redis took the half-open probe and never reported back")
	}
}

func TestRedis_ReplicaStartedWithRedisDownClearsL1WhenItFirstSubscribes(t *testing.T) {
	srv := redistest.Start(t)
	a, _ := pair(t, []string{srv.Addr()}, false, nil)
	srv.Kill()
	a.run(t) // serving from L1 meanwhile, hearing no invalidations
	eventually(t, "a failed subscription attempt", func() bool {
		return a.metric("anqi_edge_pubsub_up") == 0 && !a.r.subscribed.Load()
	})
	time.Sleep(300 * time.Millisecond)
	srv.Restart(t)
	waitSubscribed(t, a)
	if a.clears.Load() == 0 {
		t.Fatal("the first subscription after an outage kept L1 filled while deaf")
	}
}

func TestRedis_BurstOfReadsOnAFreshKeySpaceCreatesTheEpochOnce(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	var epochWrites atomic.Int64
	a.c.AddHook(hookFunc(func(cmd redis.Cmder) {
		// Counted once run: an EVALSHA answered NOSCRIPT is retried as EVAL.
		if isScript(cmd) && len(cmd.Args()) > 3 && cmd.Args()[3] == a.r.epochKey() {
			if c, ok := cmd.(*redis.Cmd); ok && c.Val() != nil {
				epochWrites.Add(1)
			}
		}
	}))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			a.r.Get(context.Background(), testKey(int64(100+i), "u1"))
		}()
	}
	close(start)
	wg.Wait()
	// Every read sees no epoch; one of them creates it, the others find it
	// created when they get the lock.
	if n := epochWrites.Load(); n != 1 {
		t.Fatalf("50 concurrent reads on a fresh key space ran the epoch script %d times, want 1", n)
	}
	if a.clears.Load() != 0 {
		t.Fatalf("L1 cleared %d times on learning the first epoch, want 0", a.clears.Load())
	}
}

func TestRedis_OneOrderKeepsAtMostMaxEntriesPerOrderIdentities(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	ctx := ctxT(t)
	store := func(u string) bool {
		k := testKey(9, u)
		_, gen, err := a.r.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		res, err := a.r.FillEntry(ctx, k, testEntry("for "+u), gen, time.Minute)
		if err != nil || (res != FillStored && res != FillDroppedCap) {
			t.Fatalf("fill for %s: %v %v", u, res, err)
		}
		if res == FillDroppedCap && (res.String() != "dropped_cap" || res.Outdated()) {
			t.Fatalf("the cap's refusal reads %q (outdated %v)", res.String(), res.Outdated())
		}
		return res == FillStored
	}
	for i := range maxEntriesPerOrder {
		if !store(fmt.Sprint("u", i)) {
			t.Fatalf("identity %d of %d was not stored", i, maxEntriesPerOrder)
		}
	}
	if store("one-too-many") {
		t.Fatal("an identity past maxEntriesPerOrder was stored; the index the invalidate script walks is unbounded")
	}
	if !store("u0") {
		t.Fatal("refreshing an identity already stored must still work at the bound")
	}
	if n, _ := a.c.SCard(ctx, a.r.tag(9)+":i").Result(); n != maxEntriesPerOrder {
		t.Fatalf("index holds %d entries, want %d", n, maxEntriesPerOrder)
	}
}

// --- Redis losing its data -------------------------------------------------------

// storedAfterLoss runs the sequence of issue 10 item 2 up to the fill: a
// read on A starts a fill (the lookup reads the order's generation), B
// invalidates the order (a message was sent), then lose empties Redis.
// It returns whether A's fill, which carries the pre-message answer, was
// stored.
func storedAfterLoss(t *testing.T, a, b *tier, lose func()) FillResult {
	t.Helper()
	k := testKey(21, "u1")
	_, gen, err := a.r.Get(ctxT(t), k) // the fill starts; AnqiCMS answers slowly
	if err != nil || gen == NoGen {
		t.Fatalf("lookup before the fill: gen %d, err %v", gen, err)
	}
	if q, err := b.r.Invalidate(ctxT(t), 21); q || err != nil { // the message is sent
		t.Fatalf("invalidate: queued=%v err=%v", q, err)
	}
	lose()
	// The fill comes back with the answer from before the message.
	var res FillResult
	eventually(t, "Redis to be usable again for A", func() bool {
		if a.r.blocked.Load() || a.r.brk.state(time.Now().UnixNano()) != BreakerClosed {
			return false
		}
		res, err = a.r.FillEntry(ctxT(t), k, testEntry("before the message"), gen, 30*time.Second)
		return res != FillSkippedBreaker && res != FillError
	})
	for _, tr := range []*tier{a, b} {
		if body, ok := get(t, tr, k); ok {
			t.Errorf("replica %s serves %q after the message", tr.r.o.ReplicaID, body)
		}
	}
	return res
}

func TestRedis_FillStartedBeforeAFlushIsNotStored(t *testing.T) {
	srv := redistest.Start(t)
	a, b := pair(t, []string{srv.Addr()}, false, nil)
	a.run(t)
	b.run(t)
	waitSubscribed(t, a, b)
	clearsA, clearsB := a.clears.Load(), b.clears.Load()
	res := storedAfterLoss(t, a, b, func() { srv.FlushAll(t) })
	// Reset, or epoch if A's background check noticed the flush first.
	if res != FillDroppedReset && res != FillDroppedEpoch {
		t.Fatalf("fill read before FLUSHALL: %v, want %v or %v", res, FillDroppedReset, FillDroppedEpoch)
	}
	// And what either replica kept in L1 from before the flush goes too.
	eventually(t, "both replicas to clear L1", func() bool {
		return a.clears.Load() > clearsA && b.clears.Load() > clearsB
	})
}

func TestRedis_FillStartedBeforeARestartWithoutPersistenceIsNotStored(t *testing.T) {
	srv := redistest.Start(t)
	a, b := pair(t, []string{srv.Addr()}, false, nil)
	a.run(t)
	b.run(t)
	waitSubscribed(t, a, b)
	res := storedAfterLoss(t, a, b, func() { srv.Restart(t) })
	if res != FillDroppedReset && res != FillDroppedEpoch {
		t.Fatalf("fill read before the restart: %v, want %v or %v", res, FillDroppedReset, FillDroppedEpoch)
	}
}

func TestRedis_FillStartedBeforeAFlushIsNotStoredAfterAnotherReplicaLookedTheOrderUpAgain(t *testing.T) {
	srv := redistest.Start(t)
	a, b := pair(t, []string{srv.Addr()}, false, nil)
	res := storedAfterLoss(t, a, b, func() {
		srv.FlushAll(t)
		// B reads the order again first: the counter is created anew and
		// must not take the value A's fill carries.
		if _, ok := get(t, b, testKey(21, "u1")); ok {
			t.Fatal("an entry survived FLUSHALL")
		}
	})
	if res != FillDroppedGeneration && res != FillDroppedEpoch {
		t.Fatalf("fill read before FLUSHALL: %v, want it dropped", res)
	}
}

func TestRedis_FlushClearsEveryReplicasL1WithoutAnyTraffic(t *testing.T) {
	srv := redistest.Start(t)
	a, b := pair(t, []string{srv.Addr()}, false, nil)
	a.run(t)
	b.run(t)
	waitSubscribed(t, a, b)
	fill(t, a, testKey(22, "u1"), "before the flush")
	eventually(t, "both replicas on the same epoch", func() bool { return a.r.epoch() == b.r.epoch() && a.r.epoch() != 0 })
	clearsA, clearsB, e0 := a.clears.Load(), b.clears.Load(), a.r.epoch()
	srv.FlushAll(t) // no connection breaks, no message is sent
	eventually(t, "both replicas to notice and clear L1", func() bool {
		return a.clears.Load() > clearsA && b.clears.Load() > clearsB
	})
	if a.r.epoch() <= e0 || b.r.epoch() <= e0 {
		t.Fatalf("epochs after the flush: A %d, B %d, before %d: they must move up", a.r.epoch(), b.r.epoch(), e0)
	}
	inRedis, err := a.c.Get(ctxT(t), a.r.epochKey()).Int64()
	if err != nil || inRedis <= e0 {
		t.Fatalf("epoch in Redis after the repair: %d (%v), want above %d", inRedis, err, e0)
	}
}

func TestRedis_LookupNoticesAFlushAndClearsL1(t *testing.T) {
	srv := redistest.Start(t)
	a, _ := pair(t, []string{srv.Addr()}, false, nil) // not running: only lookups can notice
	fill(t, a, testKey(23, "u1"), "before the flush")
	clears := a.clears.Load()
	srv.FlushAll(t)
	if _, ok := get(t, a, testKey(23, "u1")); ok {
		t.Fatal("an entry survived FLUSHALL")
	}
	if a.clears.Load() <= clears {
		t.Fatal("the first lookup after FLUSHALL did not clear L1")
	}
	fill(t, a, testKey(23, "u1"), "after the flush") // and the tier works on
}

func TestRedis_EvictedGenerationCannotBeMatchedByAnOldFill(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	k := testKey(24, "u1")
	_, gen, err := a.r.Get(ctxT(t), k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.r.Invalidate(ctxT(t), 24); err != nil {
		t.Fatal(err)
	}
	a.c.Del(ctxT(t), a.r.tag(24)+":g") // evicted (maxmemory) or expired
	res, err := a.r.FillEntry(ctxT(t), k, testEntry("stale"), gen, time.Minute)
	if err != nil || res != FillDroppedReset {
		t.Fatalf("fill whose generation was evicted: %v %v, want %v", res, err, FillDroppedReset)
	}
}

func TestRedis_GenerationOutlivesTheEntriesFilledUnderIt(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	ctx := ctxT(t)
	k := testKey(25, "u1")
	if _, err := a.r.Invalidate(ctx, 25); err != nil { // the counter has a TTL now
		t.Fatal(err)
	}
	_, gen, err := a.r.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 10 * 24 * time.Hour
	if ok, err := a.r.Fill(ctx, k, testEntry("long-lived"), gen, ttl); !ok || err != nil {
		t.Fatalf("fill: %v %v", ok, err)
	}
	entryTTL, _ := a.c.PTTL(ctx, a.r.entryKey(k, a.r.epoch())).Result()
	genTTL, _ := a.c.PTTL(ctx, a.r.tag(25)+":g").Result()
	if genTTL < entryTTL {
		t.Fatalf("generation expires in %v, before the entry filled under it (%v)", genTTL, entryTTL)
	}
}

// --- two deployments on one Redis --------------------------------------------------

func TestRedis_DefaultChannelIsPerKeyPrefixAndAnExplicitOneIsKept(t *testing.T) {
	if c := NewRedis(RedisOptions{Prefix: "shop1"}).o.Channel; c != "anqi-edge:invalidate:shop1" {
		t.Errorf("default channel for prefix shop1: %q", c)
	}
	if c := NewRedis(RedisOptions{}).o.Channel; c != "anqi-edge:invalidate:ae" {
		t.Errorf("default channel for the default prefix: %q", c)
	}
	if c := NewRedis(RedisOptions{Prefix: "shop1", Channel: "mine"}).o.Channel; c != "mine" {
		t.Errorf("explicit channel: %q", c)
	}
}

func TestRedis_TwoDeploymentsOnOneChannelIgnoreEachOthersMessages(t *testing.T) {
	addr := redistest.Shared(t)
	p := strings.NewReplacer(":", "", "/", "_").Replace(redistest.Prefix(t))
	ch := "inv:" + p // both deployments were configured onto one channel
	x1 := newTier(t, tierOpts{addrs: []string{addr}, prefix: "x" + p, channel: ch, replica: "X1"})
	x2 := newTier(t, tierOpts{addrs: []string{addr}, prefix: "x" + p, channel: ch, replica: "X2"})
	y := newTier(t, tierOpts{addrs: []string{addr}, prefix: "y" + p, channel: ch, replica: "Y"})
	x1.run(t)
	waitSubscribed(t, x1)
	fill(t, x1, testKey(5, "u1"), "deployment x")
	e0, clears := x1.r.epoch(), x1.clears.Load()

	// Deployment y invalidates an order of its own and bumps its epoch.
	if _, err := y.r.Invalidate(ctxT(t), 5); err != nil {
		t.Fatal(err)
	}
	y.r.mu.Lock()
	y.r.bumpEpoch = true
	y.r.blocked.Store(true)
	y.r.mu.Unlock()
	y.r.drain(ctxT(t))
	// Then x's other replica invalidates an order: once x1 heard it, it
	// has handled every earlier message.
	if _, err := x2.r.Invalidate(ctxT(t), 6); err != nil {
		t.Fatal(err)
	}
	eventually(t, "x1 to hear its own deployment", func() bool { return x1.heard(6) })
	if x1.heard(5) {
		t.Error("x1 applied an invalidation of the other deployment")
	}
	if x1.r.epoch() != e0 || x1.clears.Load() != clears {
		t.Errorf("x1 moved from epoch %d to %d (L1 cleared %d times) on the other deployment's bump",
			e0, x1.r.epoch(), x1.clears.Load()-clears)
	}
}

func TestRedis_EpochsOnlyMoveUp(t *testing.T) {
	a, b := pair(t, []string{redistest.Shared(t)}, false, nil)
	ctx := ctxT(t)
	if err := a.c.Set(ctx, a.r.epochKey(), 500, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	a.run(t)
	waitSubscribed(t, a)
	eventually(t, "A to read epoch 500", func() bool { return a.r.epoch() == 500 })

	// An announcement of a lower epoch (a replay, a stale publisher).
	a.c.Publish(ctx, a.r.o.Channel, a.r.msgHead+"e:3:Z")
	if _, err := b.r.Invalidate(ctx, 31); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A to handle the messages", func() bool { return a.heard(31) })
	if a.r.epoch() != 500 {
		t.Fatalf("A moved down to epoch %d on a message", a.r.epoch())
	}

	// A lower epoch read from Redis: Redis lost the real one. A moves up,
	// and so does Redis, so the other replicas cannot move down either.
	if err := a.c.Set(ctx, a.r.epochKey(), 3, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.r.refreshEpoch(ctx, true); err != nil {
		t.Fatal(err)
	}
	inRedis, _ := a.c.Get(ctx, a.r.epochKey()).Int64()
	if a.r.epoch() <= 500 || inRedis != a.r.epoch() {
		t.Fatalf("after reading epoch 3: A on %d, Redis on %d; want both above 500", a.r.epoch(), inRedis)
	}
}

// --- what a fill and a lookup report (issue 10 item 11) --------------------------

func TestRedis_FillSaysWhyItWasNotStored(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	ctx := ctxT(t)
	lookup := func(order int64, user string) (Key, int64) {
		k := testKey(order, user)
		_, gen, err := a.r.Get(ctx, k)
		if err != nil || gen == NoGen {
			t.Fatalf("lookup of order %d: gen %d err %v", order, gen, err)
		}
		return k, gen
	}
	cases := []struct {
		name   string
		want   FillResult
		label  string
		refuse func(k Key, gen int64) int64 // returns the gen to fill with
	}{
		{"stored", FillStored, "stored", func(_ Key, gen int64) int64 { return gen }},
		{"an invalidation overtook it", FillDroppedGeneration, "dropped_generation", func(k Key, gen int64) int64 {
			a.r.Invalidate(ctx, k.Order)
			return gen
		}},
		{"the epoch moved", FillDroppedEpoch, "dropped_epoch", func(_ Key, gen int64) int64 {
			a.r.setEpoch(a.r.epoch() + 1)
			return gen
		}},
		{"Redis lost the generation", FillDroppedReset, "dropped_reset", func(k Key, gen int64) int64 {
			a.c.Del(ctx, a.r.tag(k.Order)+":g")
			return gen
		}},
		{"the breaker is open", FillSkippedBreaker, "skipped_breaker", func(_ Key, gen int64) int64 {
			a.r.brk.openUntil.Store(time.Now().Add(time.Hour).UnixNano())
			t.Cleanup(func() { a.r.brk.success() })
			return gen
		}},
		{"the lookup skipped Redis", FillSkippedNoGen, "skipped_nogen", func(_ Key, _ int64) int64 { return NoGen }},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a.r.brk.success()
			k, gen := lookup(int64(40+i), "u1")
			res, err := a.r.FillEntry(ctx, k, testEntry("x"), c.refuse(k, gen), time.Minute)
			if err != nil || res != c.want || res.String() != c.label {
				t.Fatalf("FillEntry: %v (%q) err %v, want %v (%q)", res, res.String(), err, c.want, c.label)
			}
			if res.Outdated() != (c.want == FillDroppedGeneration || c.want == FillDroppedEpoch || c.want == FillDroppedReset) {
				t.Errorf("%v.Outdated() = %v", res, res.Outdated())
			}
			ok, _ := a.r.Fill(ctx, k, testEntry("x"), NoGen, time.Minute)
			if ok {
				t.Error("Fill with NoGen stored")
			}
		})
	}
	// The per-order cap: TestRedis_OneOrderKeepsAtMostMaxEntriesPerOrderIdentities.
}

func TestRedis_LookupSkippedByTheBreakerIsToldApartFromAMiss(t *testing.T) {
	a, _ := pair(t, []string{redistest.Shared(t)}, false, nil)
	k := testKey(61, "u1")
	e, gen, err := a.r.Get(ctxT(t), k)
	if err != nil || e != nil || gen == NoGen {
		t.Fatalf("a miss: entry %v gen %d err %v; want no entry, a gen, no error", e, gen, err)
	}
	a.r.brk.openUntil.Store(time.Now().Add(time.Hour).UnixNano())
	e, gen, err = a.r.Get(ctxT(t), k)
	if !errors.Is(err, ErrUnavailable) || e != nil || gen != NoGen {
		t.Fatalf("with the breaker open: entry %v gen %d err %v; want ErrUnavailable and NoGen", e, gen, err)
	}
	if n := a.metric("anqi_edge_redis_errors_total"); n != 0 {
		t.Errorf("a skipped lookup counted %v Redis errors", n)
	}
}

// BenchmarkRedis_Hit measures one Redis hit as the detail path makes it
// (lookup, decode), on a 2 KiB answer:
//
//	ANQI_EDGE_TEST_REDIS=127.0.0.1:6390 go test -run '^$' -bench Redis_Hit -benchmem ./cache/
func BenchmarkRedis_Hit(b *testing.B) {
	addr := redistest.Shared(b)
	p := strings.NewReplacer(":", "", "/", "_").Replace(redistest.Prefix(b))
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	r := NewRedis(RedisOptions{Client: c, Prefix: "b" + p, Log: discardLog})
	ctx := context.Background()
	k := testKey(1, "u1")
	_, gen, err := r.Get(ctx, k)
	if err != nil {
		b.Fatal(err)
	}
	if ok, err := r.Fill(ctx, k, testEntry(strings.Repeat("x", 2048)), gen, time.Hour); !ok || err != nil {
		b.Fatalf("fill: %v %v", ok, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		e, _, err := r.Get(ctx, k)
		if err != nil || e == nil {
			b.Fatalf("hit: %v %v", e, err)
		}
	}
}

func TestRedis_RestartThatBringsBackOlderDataMovesEveryReplicaToANewEpochOnce(t *testing.T) {
	srv := redistest.Start(t)
	a, b := pair(t, []string{srv.Addr()}, false, nil)
	ctx := ctxT(t)
	for _, tr := range []*tier{a, b} {
		if err := tr.r.checkIncarnation(ctx); err != nil { // learns the run_id
			t.Fatal(err)
		}
	}
	k, inFlight := testKey(26, "u1"), testKey(26, "u2")
	fill(t, a, k, "before the message")
	e0 := a.r.epoch()
	_, gen, err := a.r.Get(ctx, inFlight) // a fill starts
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := get(t, b, k); !ok {
		t.Fatal("B does not see A's entry")
	}
	// Redis persists a snapshot now, before the message.
	direct := srv.Client(t)
	keys, err := direct.Keys(ctx, a.r.o.Prefix+":*").Result()
	if err != nil || len(keys) < 3 {
		t.Fatalf("keys of the deployment: %v %v", keys, err)
	}
	dumps := map[string]string{}
	for _, key := range keys {
		dumps[key] = direct.Dump(ctx, key).Val()
	}
	if _, err := b.r.Invalidate(ctx, 26); err != nil { // the message is sent
		t.Fatal(err)
	}
	// Redis restarts and loads the snapshot from before the message.
	srv.Restart(t)
	direct = srv.Client(t)
	for key, v := range dumps {
		if err := direct.Restore(ctx, key, 0, v).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range []*tier{a, b} {
		eventually(t, "replica "+tr.r.o.ReplicaID+" to check Redis", func() bool {
			return tr.r.checkIncarnation(ctxT(t)) == nil
		})
	}
	if a.r.epoch() <= e0 || b.r.epoch() != a.r.epoch() {
		t.Fatalf("epochs after the restart: A %d, B %d, before %d", a.r.epoch(), b.r.epoch(), e0)
	}
	if inRedis, _ := direct.Get(ctx, a.r.epochKey()).Int64(); inRedis != e0+1 {
		t.Errorf("epoch in Redis %d, want %d: one move for both replicas", inRedis, e0+1)
	}
	if a.clears.Load() == 0 || b.clears.Load() == 0 {
		t.Error("a replica kept its L1 across a restart that brought back old data")
	}
	eventually(t, "lookups to work again", func() bool {
		_, _, err := a.r.Get(ctxT(t), k)
		return err == nil
	})
	for _, tr := range []*tier{a, b} {
		if body, ok := get(t, tr, k); ok {
			t.Errorf("replica %s serves %q from the old snapshot", tr.r.o.ReplicaID, body)
		}
	}
	if res, err := a.r.FillEntry(ctx, inFlight, testEntry("before the message"), gen, time.Minute); res != FillDroppedEpoch {
		t.Fatalf("fill from before the restart: %v %v, want %v", res, err, FillDroppedEpoch)
	}
}

func TestRedis_RestartMarkerSharesTheEpochsClusterSlot(t *testing.T) {
	for _, c := range []struct{ key, want string }{
		{"ae:epoch", "{ae:epoch}:restarted"},
		{"{shop}:epoch", "{shop}:epoch:restarted"},
		{"a{b:epoch", "{a{b:epoch}:restarted"},
		{"a}b:epoch", ""},
		{"a{}b:epoch", ""},
	} {
		if got := sameSlotKey(c.key, ":restarted"); got != c.want {
			t.Errorf("sameSlotKey(%q) = %q, want %q", c.key, got, c.want)
		}
	}
}

func TestRedis_RedisUserWithoutINFOIsStillUsedAndItsBreakerStaysClosed(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	if err := admin.Do(ctxT(t), "ACL", "SETUSER", "edge", "on", "nopass", "~*", "&*", "+@all", "-info").Err(); err != nil {
		t.Fatal(err)
	}
	a, _ := pair(t, []string{srv.Addr()}, false, nil)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "edge", MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	a.c, a.r.o.Client, a.r.c, a.r.batched = c, c, c, autopipeliner(c, true)
	for range 10 {
		if err := a.r.checkIncarnation(ctxT(t)); err != nil {
			t.Fatalf("a refused INFO is not an error: %v", err)
		}
	}
	if st := a.r.brk.state(time.Now().UnixNano()); st != BreakerClosed {
		t.Fatalf("breaker %v after INFO was refused", st)
	}
	fill(t, a, testKey(27, "u1"), "works")
}
