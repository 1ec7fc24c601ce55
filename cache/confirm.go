package cache

// Confirmed invalidation: the writer of a change waits until every replica
// its pub/sub message reached has dropped its L1 copy.
//
// Pub/sub alone is asynchronous: a customer whose write went through
// replica A and whose next read goes through replica B can beat A's message
// to B and be served B's L1 copy from before the write. So a write through
// the proxy asks for confirmation:
//
//  1. A registers a waiter under a sequence number SEQ of its own, then
//     runs the invalidate script with the message "o:ORDER:A:SEQ". The
//     script answers how many subscribers PUBLISH reached (A itself
//     among them while its subscription is up).
//  2. Every replica that receives the message drops its L1 entry and wakes
//     its watchers exactly as for an old-form message, and only then hands
//     an ack "a:SEQ:A" to its ack sender, which publishes it on A's own ack
//     channel (ackChannel). The subscription loop never waits for Redis:
//     the sender has a bounded queue and drops acks when it is full.
//  3. A counts its own message coming back as its own ack (its L1 was
//     dropped before the script ran), so it waits for exactly as many acks
//     as PUBLISH reached subscribers, whether or not its own subscription
//     is up; it returns when it has them, when its bound passes, or when
//     its context ends.
//
// Why a channel per writer and not a kind on the invalidation channel:
// an ack concerns only its writer. On the shared channel every ack of every
// write would reach every replica (N replicas: N² deliveries per write) and
// be parsed by each subscription loop, which is the loop that must stay
// quick. The writer's ack channel is subscribed on the same connection as
// the invalidation channel (one SUBSCRIBE of both), and replicas that
// predate acks never see it. Its name extends the invalidation channel, so
// a Redis ACL granting "&anqi-edge:invalidate*" covers it.
//
// What is not confirmed, and why that is safe to leave bounded:
//   - subscribers that do not ack (replicas from before acks, during a
//     rolling upgrade; another deployment configured onto the same channel;
//     a redis-cli SUBSCRIBE left open): the writer waits its bound, then
//     answers; those replicas drop their copy when the message arrives,
//     as before.
//   - a replica whose subscription is down is not reached, so it is not
//     counted; it clears its L1 when it resubscribes, and cache.memory.ttl
//     bounds what it serves meanwhile.
//   - Redis Cluster: PUBLISH there counts only the subscribers connected
//     to the node that ran the script, not those the cluster bus forwards
//     the message to, so the count means nothing and no one waits.
//   - acks are counted, not matched to the subscribers PUBLISH counted: a
//     subscriber it did not count could ack in place of one it did. The
//     one way known is a Sentinel failover, where a replica still
//     subscribed to the demoted master hears the replicated message;
//     Sentinel drops such clients when it reconfigures that server, so
//     the window is that reconfiguration.
//   - Redis skipped or failing (breaker open, invalidations queued): there
//     is no message to confirm; no one waits. Nor does a writer whose own
//     subscription is down: it would hear no ack.

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ConfirmResult says how a confirmed invalidation ended. Its String is the
// result label of anqi_edge_invalidation_confirm_total.
type ConfirmResult int

const (
	// ConfirmSkipped: nothing was waited for (no Redis, Redis skipped or
	// failing, the invalidation queued, Redis Cluster, a bound of 0).
	ConfirmSkipped ConfirmResult = iota
	// Confirmed: every subscriber the message reached acknowledged it.
	Confirmed
	// ConfirmTimeout: the bound passed (or the caller's context ended)
	// before every subscriber acknowledged.
	ConfirmTimeout
)

var confirmLabels = [...]string{"skipped", "confirmed", "timeout"}

// ConfirmResults lists every ConfirmResult, for pre-registering labels.
var ConfirmResults = []ConfirmResult{ConfirmSkipped, Confirmed, ConfirmTimeout}

func (c ConfirmResult) String() string {
	if c < 0 || int(c) >= len(confirmLabels) {
		return "unknown"
	}
	return confirmLabels[c]
}

// ackQueue bounds the acks waiting for the sender; ackBatch is how many it
// sends in one pipeline.
const (
	ackQueue = 1024
	ackBatch = 128
)

// ackChannelInfix joins the invalidation channel and a writer's replica id
// into that writer's ack channel.
const ackChannelInfix = ":ack:"

// ackChannel is the channel replica hears acks of its own invalidations on.
func (r *Redis) ackChannel(replica string) string {
	return r.o.Channel + ackChannelInfix + replica
}

// ack is one acknowledgement waiting for the sender: replica writer's
// invalidation SEQ seq has been applied here.
type ack struct {
	writer string
	seq    uint64
}

// confirmation is one write's wait for acks. got and need are guarded by
// Redis.confirmMu; done closes when got reaches need.
type confirmation struct {
	r    *Redis
	seq  uint64
	got  int64
	need int64 // -1 until the script has answered
	done chan struct{}
}

// expect registers a waiter for the next sequence number; it must be
// registered before the message is published, or an ack could arrive with
// no one to count it.
func (r *Redis) expect() *confirmation {
	c := &confirmation{r: r, seq: r.ackSeq.Add(1), need: -1, done: make(chan struct{})}
	r.confirmMu.Lock()
	if r.confirms == nil {
		r.confirms = map[uint64]*confirmation{}
	}
	r.confirms[c.seq] = c
	r.confirmMu.Unlock()
	return c
}

// forget removes c's waiter; acks arriving later find no one and are
// ignored.
func (r *Redis) forget(c *confirmation) {
	r.confirmMu.Lock()
	delete(r.confirms, c.seq)
	r.confirmMu.Unlock()
}

// reached records how many subscribers the message reached.
func (c *confirmation) reached(n int64) {
	c.r.confirmMu.Lock()
	c.need = n
	if c.got >= c.need {
		close(c.done)
	}
	c.r.confirmMu.Unlock()
}

// acked counts one ack of seq (another replica's, or this replica's own
// message coming back).
func (r *Redis) acked(seq uint64) {
	r.confirmMu.Lock()
	defer r.confirmMu.Unlock()
	c := r.confirms[seq]
	if c == nil {
		return // gave up already, or not ours
	}
	c.got++
	if c.need >= 0 && c.got == c.need {
		close(c.done)
	}
}

// Wait blocks until every subscriber the invalidation's message reached has
// acknowledged it, bound passes, or ctx ends, and then forgets the waiter.
// A nil Confirmation (nothing to wait for) answers ConfirmSkipped at once.
func (c *Confirmation) Wait(ctx context.Context, bound time.Duration) ConfirmResult {
	if c == nil || c.c == nil {
		return ConfirmSkipped
	}
	defer c.c.r.forget(c.c)
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-c.c.done:
		return Confirmed
	case <-t.C:
	case <-ctx.Done():
	}
	// Confirmed at the last moment: say so.
	select {
	case <-c.c.done:
		return Confirmed
	default:
		return ConfirmTimeout
	}
}

// Confirmation is an invalidation that asked the other replicas to
// confirm it; Wait for them.
type Confirmation struct{ c *confirmation }

// Received reports how many subscribers the invalidation's message reached
// (this replica included while its subscription is up).
func (c *Confirmation) Received() int64 {
	if c == nil || c.c == nil {
		return 0
	}
	c.c.r.confirmMu.Lock()
	defer c.c.r.confirmMu.Unlock()
	return c.c.need
}

// queueAck hands an ack to the sender without waiting: the subscription
// loop must not stall on Redis. A full queue drops it; its writer then
// waits its bound.
func (r *Redis) queueAck(a ack) {
	select {
	case r.acks <- a:
	default:
		r.m.InvalidationAcks.WithLabelValues("dropped").Inc()
	}
}

// sendAcks publishes queued acks, in pipelines of what is waiting, until
// ctx ends. An ack that cannot be sent is dropped: its writer waits its
// bound, and nothing else depends on it.
func (r *Redis) sendAcks(ctx context.Context) {
	batch := make([]ack, 0, ackBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-r.acks:
			batch = append(batch[:0], a)
		}
	more:
		for len(batch) < ackBatch {
			select {
			case a := <-r.acks:
				batch = append(batch, a)
			default:
				break more
			}
		}
		if !r.usable() {
			r.m.InvalidationAcks.WithLabelValues("dropped").Add(float64(len(batch)))
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := r.c.Pipelined(pctx, func(p redis.Pipeliner) error {
			for _, a := range batch {
				p.Publish(pctx, r.ackChannel(a.writer), r.msgHead+"a:"+strconv.FormatUint(a.seq, 10)+":"+a.writer)
			}
			return nil
		})
		cancel()
		r.result("ack", err)
		if err != nil {
			r.m.InvalidationAcks.WithLabelValues("error").Add(float64(len(batch)))
			r.log.Debug("sending invalidation acks failed; their writers wait their bound", "acks", len(batch), "err", err)
			continue
		}
		r.m.InvalidationAcks.WithLabelValues("sent").Add(float64(len(batch)))
	}
}
