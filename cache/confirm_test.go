package cache

// Confirmed invalidation (confirm.go): a write's invalidation returns only
// once every replica its message reached has dropped its L1 copy, waits its
// bound for subscribers that never ack, and never waits when there is no
// message to confirm.

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"anqi-edge/internal/redistest"
)

func TestConfirm_MessagesOfReplicasBeforeAcksStillParse(t *testing.T) {
	const head = `"ae"`
	for _, c := range []struct {
		payload string
		ok      bool
		want    message
	}{
		// Forms every replica has always sent.
		{head + "o:42:r1", true, message{kind: "o", num: 42, replica: "r1"}},
		{head + "e:1700000000:r1", true, message{kind: "e", num: 1700000000, replica: "r1"}},
		{head + "o:42:cli", true, message{kind: "o", num: 42, replica: "cli"}},
		// An invalidation asking for an ack, and the ack.
		{head + "o:42:r1:7", true, message{kind: "o", num: 42, replica: "r1", seq: 7}},
		{head + "a:7:r1", true, message{kind: "a", num: 7, replica: "r1"}},
		// A SEQ that does not read: still an invalidation, never acked.
		{head + "o:42:r1:x", true, message{kind: "o", num: 42, replica: "r1:x"}},
		{head + "o:42:r1:0", true, message{kind: "o", num: 42, replica: "r1:0"}},
		{head + "o:42:r1:", true, message{kind: "o", num: 42, replica: "r1:"}},
		// Only invalidations carry a SEQ.
		{head + "e:5:r1:7", true, message{kind: "e", num: 5, replica: "r1:7"}},
		// Not ours, or not a message.
		{`"other"o:42:r1:7`, false, message{}},
		{head + "o:42", false, message{}},
		{head + "o:x:r1", false, message{}},
		{"", false, message{}},
	} {
		got, ok := parseMessage(c.payload, head)
		if ok != c.ok || got != c.want {
			t.Errorf("parseMessage(%q) = %+v, %v; want %+v, %v", c.payload, got, ok, c.want, c.ok)
		}
	}
}

func TestConfirm_ReplicaAcksOnlyAfterDroppingItsCopyAndNeverItsOwnOrAnOldFormMessage(t *testing.T) {
	var queuedAtDrop []int
	var r *Redis
	r = NewRedis(RedisOptions{Prefix: "ae", ReplicaID: "me", Log: discardLog,
		OnRemoteInvalidate: func(int64) { queuedAtDrop = append(queuedAtDrop, len(r.acks)) }})
	r.handle(`"ae"o:1:other`)   // old form: applied, no ack asked
	r.handle(`"ae"o:2:other:9`) // new form: applied, then acked
	r.handle(`"ae"o:3:me:10`)   // our own: neither applied nor acked
	if len(queuedAtDrop) != 2 {
		t.Fatalf("applied %d invalidations, want 2 (orders 1 and 2)", len(queuedAtDrop))
	}
	if queuedAtDrop[1] != 0 {
		t.Error("the ack was queued before L1 dropped the order")
	}
	if len(r.acks) != 1 {
		t.Fatalf("%d acks queued, want 1", len(r.acks))
	}
	if a := <-r.acks; a != (ack{writer: "other", seq: 9}) {
		t.Errorf("queued %+v, want the ack of other's SEQ 9", a)
	}
}

func TestConfirm_FullAckQueueDropsAcksWithoutBlockingTheSubscription(t *testing.T) {
	r := NewRedis(RedisOptions{Prefix: "ae", ReplicaID: "me", Log: discardLog})
	for i := range ackQueue + 10 { // no sender runs: the queue fills
		r.handle(`"ae"o:2:other:` + strconv.Itoa(i+1))
	}
	if n := testutil.ToFloat64(r.m.InvalidationAcks.WithLabelValues("dropped")); n != 10 {
		t.Errorf("dropped acks = %v, want 10", n)
	}
}

// confirmTrio is three replicas' tiers on one Redis key space and channel,
// confirming within bound.
func confirmTrio(t *testing.T, bound time.Duration) (a, b, c *Tiers, channel string) {
	t.Helper()
	p := sharedPrefix(t)
	o := tiersOpts{redis: []string{redistest.Shared(t)}, prefix: p, channel: "inv:" + p, confirm: bound}
	o.replica = "A"
	a = newTestTiers(t, o)
	o.replica = "B"
	b = newTestTiers(t, o)
	o.replica = "C"
	c = newTestTiers(t, o)
	return a, b, c, o.channel
}

// silentSubscriber subscribes to channel as a subscriber that is no
// replica (redis-cli SUBSCRIBE, or a replica from before acks): PUBLISH
// counts it, it never acks.
func silentSubscriber(t *testing.T, channel string) *redis.PubSub {
	t.Helper()
	raw := redis.NewClient(&redis.Options{Addr: redistest.Shared(t)})
	t.Cleanup(func() { raw.Close() })
	ps := raw.Subscribe(context.Background(), channel)
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(ctxT(t)); err != nil {
		t.Fatalf("raw subscriber: %v", err)
	}
	return ps
}

func confirms(t *Tiers, result string) float64 {
	return testutil.ToFloat64(t.m.InvalidationConfirms.WithLabelValues(result))
}

// The ordering a customer relies on: when the writer's invalidation
// returns, no other replica's L1 serves the order any more. Many rounds,
// so a race between the ack and the drop would show.
func TestConfirm_WhenTheWritersInvalidationReturnsNoOtherReplicaServesTheOldEntry(t *testing.T) {
	// The largest bound: a slow machine should confirm, not time out.
	a, b, c, _ := confirmTrio(t, time.Second)
	k := testKey(7, "u1")
	const rounds = 200
	for i := range rounds {
		for _, tr := range []*Tiers{b, c} {
			tr.l1.Set(k, testEntry("before write "+strconv.Itoa(i)), tr.l1.Gen(k.Order), time.Now().UnixNano())
			if e, _ := tr.Peek(k); e == nil {
				t.Fatalf("round %d: the old entry did not reach L1", i)
			}
		}
		before := confirms(a, "confirmed")
		if queued, err := invalidateConfirmed(a, k.Order); queued || err != nil {
			t.Fatalf("round %d: queued=%v err=%v", i, queued, err)
		}
		if confirms(a, "confirmed") == before {
			// Timed out (a badly overloaded machine): no promise to check.
			t.Logf("round %d: not confirmed within the bound", i)
			continue
		}
		for name, tr := range map[string]*Tiers{"B": b, "C": c} {
			if e, _ := tr.Peek(k); e != nil {
				t.Fatalf("round %d: A's invalidation was confirmed, yet %s's L1 still serves %q", i, name, e.Body)
			}
		}
	}
	if n := confirms(a, "confirmed"); n == 0 {
		t.Fatalf("no invalidation of %d was confirmed (timeouts: %v)", rounds, confirms(a, "timeout"))
	}
	if n := confirms(a, "skipped"); n != 0 {
		t.Errorf("skipped = %v, want 0", n)
	}
	// Acks cost nothing to replicas that are not waiting: B and C only
	// sent them, and none went to each other.
	for name, tr := range map[string]*Tiers{"B": b, "C": c} {
		if sent := testutil.ToFloat64(tr.m.InvalidationAcks.WithLabelValues("sent")); sent == 0 {
			t.Errorf("%s sent no acks", name)
		}
		if n := confirms(tr, "confirmed") + confirms(tr, "timeout") + confirms(tr, "skipped"); n != 0 {
			t.Errorf("%s counted %v confirmations of its own", name, n)
		}
	}
}

func TestConfirm_SubscriberThatNeverAcksCostsTheBoundOnly(t *testing.T) {
	a, b, _, channel := confirmTrio(t, 50*time.Millisecond)
	ps := silentSubscriber(t, channel)
	k := testKey(8, "u1")
	b.l1.Set(k, testEntry("before write"), b.l1.Gen(k.Order), time.Now().UnixNano())

	done := make(chan error, 1)
	go func() {
		_, err := invalidateConfirmed(a, k.Order)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("invalidation: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the writer is still waiting, long past its bound")
	}
	if n := confirms(a, "timeout"); n != 1 {
		t.Errorf("timeout = %v, want 1 (confirmed %v)", n, confirms(a, "confirmed"))
	}
	// B still acked and dropped its copy; the raw subscriber got the
	// message in the form it always had, plus SEQ.
	if e, _ := b.Peek(k); e != nil {
		eventually(t, "B to drop the order", func() bool { e, _ := b.Peek(k); return e == nil })
	}
	msg, err := ps.ReceiveMessage(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := parseMessage(msg.Payload, a.redis.msgHead); !ok || m.kind != "o" || m.num != 8 || m.replica != "A" || m.seq == 0 {
		t.Errorf("message %q parsed as %+v", msg.Payload, m)
	}
}

// A write naming many orders, with a subscriber that never acks (a rolling
// upgrade), waits the bound once for all of them, not once per order: every
// order reaches Redis within the write's budget, none is queued, and Redis
// is not taken for failing. Before, the 6th order of a 1 s budget at a
// 200 ms bound found its context expired and was queued.
func TestConfirm_WriteNamingManyOrdersWaitsTheBoundOnceForAll(t *testing.T) {
	const bound = 200 * time.Millisecond
	a, _, _, channel := confirmTrio(t, bound)
	silentSubscriber(t, channel)
	orders := make([]int64, 30)
	for i := range orders {
		orders[i] = int64(500 + i)
	}
	// 30 bounds would be 6 s; the budget is half that.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, r := range a.InvalidateConfirmed(ctx, orders) {
		if r.Queued || r.Err != nil {
			t.Fatalf("order %d: queued=%v err=%v, want it applied in Redis", r.Order, r.Queued, r.Err)
		}
	}
	if n := confirms(a, "timeout"); n != float64(len(orders)) {
		t.Errorf("timeout = %v, want %d", n, len(orders))
	}
	if st := a.Redis().Status(ctxT(t)); st.Pending != 0 || st.Breaker != "closed" {
		t.Errorf("after the write: %d invalidations pending, breaker %s; want 0, closed", st.Pending, st.Breaker)
	}
}

// finishes runs f and fails the test if it has not returned long after
// any bound in play: "does not wait" without timing it.
func finishes(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s is still waiting", what)
	}
}

func TestConfirm_WriterDoesNotWaitWithoutRedisWithRedisDownOrUnsubscribed(t *testing.T) {
	// The bound is an hour: any wait would outlast the test.
	const bound = time.Hour
	t.Run("no redis", func(t *testing.T) {
		tr := newTestTiers(t, tiersOpts{})
		tr.SetConfirmTimeout(bound)
		finishes(t, "a confirmed invalidation without Redis", func() {
			if queued, err := invalidateConfirmed(tr, 9); queued || err != nil {
				t.Errorf("queued=%v err=%v", queued, err)
			}
		})
		if n := confirms(tr, "skipped"); n != 1 {
			t.Errorf("skipped = %v, want 1", n)
		}
	})
	down := func(t *testing.T) *Tiers {
		srv := redistest.Start(t)
		p := sharedPrefix(t)
		tr := newTestTiers(t, tiersOpts{redis: []string{srv.Addr()}, prefix: p, channel: "inv:" + p, replica: "A", confirm: bound})
		srv.Kill()
		return tr
	}
	t.Run("redis failing", func(t *testing.T) {
		tr := down(t)
		finishes(t, "a confirmed invalidation with Redis down", func() {
			if queued, err := invalidateConfirmed(tr, 9); !queued || err == nil {
				t.Errorf("queued=%v err=%v, want queued with the error", queued, err)
			}
		})
		if n := confirms(tr, "skipped"); n != 1 {
			t.Errorf("skipped = %v, want 1", n)
		}
	})
	t.Run("breaker open", func(t *testing.T) {
		tr := down(t)
		for range 10 {
			tr.redis.Get(ctxT(t), testKey(9, "u1"))
		}
		if st := tr.redis.brk.state(time.Now().UnixNano()); st == BreakerClosed {
			t.Fatal("the breaker is still closed after 10 failures")
		}
		for range 3 {
			finishes(t, "a confirmed invalidation with the breaker open", func() {
				if queued, _ := invalidateConfirmed(tr, 9); !queued {
					t.Error("the invalidation was not queued")
				}
			})
		}
		if n := confirms(tr, "skipped"); n != 3 {
			t.Errorf("skipped = %v, want 3", n)
		}
	})
	t.Run("writer not subscribed", func(t *testing.T) {
		// A replica whose subscription is not up would hear no ack.
		c := redis.NewClient(&redis.Options{Addr: redistest.Shared(t)})
		t.Cleanup(func() { c.Close() })
		l1, _ := NewL1(1<<20, time.Minute, time.Hour)
		p := sharedPrefix(t)
		tr := NewTiers(TiersOptions{L1: l1, ConfirmTimeout: bound, Log: discardLog,
			Redis: &RedisOptions{Client: c, Prefix: p, Channel: "inv:" + p, ReplicaID: "A"}})
		t.Cleanup(func() { tr.Close(context.Background()) })
		finishes(t, "a confirmed invalidation while unsubscribed", func() {
			if queued, err := invalidateConfirmed(tr, 9); queued || err != nil {
				t.Errorf("queued=%v err=%v", queued, err)
			}
		})
		if n := confirms(tr, "skipped"); n != 1 {
			t.Errorf("skipped = %v, want 1", n)
		}
	})
	t.Run("bound 0", func(t *testing.T) {
		a, _, _, _ := confirmTrio(t, 0)
		finishes(t, "an invalidation with no bound", func() {
			if _, err := invalidateConfirmed(a, 9); err != nil {
				t.Error(err)
			}
		})
		if n := confirms(a, "skipped"); n != 1 {
			t.Errorf("skipped = %v, want 1", n)
		}
	})
}

// Invalidations that are not writes through the proxy (the database change
// stream, purges, other replicas' messages) ask for no ack and wait for
// none, even with a bound set.
func TestConfirm_PlainInvalidateAsksNoReplicaToAck(t *testing.T) {
	a, b, _, channel := confirmTrio(t, time.Hour)
	ps := silentSubscriber(t, channel)
	finishes(t, "a plain invalidation", func() {
		if _, err := a.Invalidate(context.Background(), 11); err != nil {
			t.Error(err)
		}
	})
	msg, err := ps.ReceiveMessage(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := parseMessage(msg.Payload, a.redis.msgHead); !ok || m.seq != 0 || m.replica != "A" {
		t.Errorf("plain invalidation sent %q (%+v), want the old form", msg.Payload, m)
	}
	eventually(t, "B to hear it", func() bool {
		return testutil.ToFloat64(b.m.Invalidations.WithLabelValues("pubsub")) == 1
	})
	if n := testutil.ToFloat64(b.m.InvalidationAcks.WithLabelValues("sent")); n != 0 {
		t.Errorf("B sent %v acks for a plain invalidation", n)
	}
	if n := confirms(a, "confirmed") + confirms(a, "timeout") + confirms(a, "skipped"); n != 0 {
		t.Errorf("a plain invalidation counted %v confirmations", n)
	}
}

// invalidateConfirmed is one order's InvalidateConfirmed.
func invalidateConfirmed(tr *Tiers, order int64) (queued bool, err error) {
	r := tr.InvalidateConfirmed(context.Background(), []int64{order})[0]
	return r.Queued, r.Err
}
