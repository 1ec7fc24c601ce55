package cache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"anqi-edge/metrics"
)

// ErrUnavailable means Redis is being skipped: the breaker is open, or
// invalidations queued during an outage have not been applied yet (reading
// before they are could serve an order known to have changed).
var ErrUnavailable = errors.New("redis skipped: breaker open or invalidations pending")

// NoGen marks a fill whose Redis generation is unknown (Redis was skipped
// when the flight started). Such fills are never written to Redis.
const NoGen = -1

// RedisOptions configures the Redis tier. Zero values mean the defaults.
type RedisOptions struct {
	Client redis.UniversalClient
	// Prefix starts every key ("ae").
	Prefix string
	// Channel carries invalidations between replicas ("anqi-edge:invalidate").
	Channel string
	// ReplicaID tells this process's own pub/sub messages apart; it already
	// invalidated its L1 before publishing.
	ReplicaID string
	// BreakerFailures consecutive failures open the breaker (5) for
	// BreakerCooldown (1s).
	BreakerFailures int
	BreakerCooldown time.Duration
	// QueueMax bounds invalidations queued during an outage (10000); beyond
	// it the replica bumps the global epoch instead.
	QueueMax int
	// OnRemoteInvalidate drops an order from L1 when another replica
	// invalidated it; OnClear drops all of L1 (subscription re-established,
	// epoch moved).
	OnRemoteInvalidate func(order int64)
	OnClear            func()
	Metrics            *metrics.Metrics
	Log                *slog.Logger
}

// Redis is the shared tier. Per order it keeps, under one hash tag so the
// scripts run on Redis Cluster too:
//
//	P:{o:N}:g            generation counter
//	P:{o:N}:i            set of entry keys (so invalidation can drop them)
//	P:{o:N}:e:EPOCH:SUM  one entry per (site, identity)
//
// and P:epoch, the global epoch that is part of every entry key.
type Redis struct {
	o   RedisOptions
	c   redis.UniversalClient
	brk *breaker
	log *slog.Logger
	m   *metrics.Metrics

	epoch atomic.Int64
	// blocked is true while queued invalidations wait; reads and fills skip
	// Redis until they are applied.
	blocked    atomic.Bool
	mu         sync.Mutex
	pending    map[int64]struct{}
	bumpEpoch  bool
	subscribed atomic.Bool
}

// genTTL keeps a generation counter well past any entry it guards.
const genTTL = 7 * 24 * time.Hour

var (
	// KEYS: gen, entry, index. ARGV: expected gen, value, ttl ms, index ttl ms.
	fillScript = redis.NewScript(`
local g = redis.call('GET', KEYS[1]) or '0'
if g ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], KEYS[2])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return 1`)
	// KEYS: gen, index. ARGV: gen ttl ms, channel, message prefix.
	// The entry keys come from the index and share the {o:N} tag, so they
	// live in the same cluster slot as the declared keys.
	invalidateScript = redis.NewScript(`
local g = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local ks = redis.call('SMEMBERS', KEYS[2])
for i = 1, #ks, 500 do redis.call('DEL', unpack(ks, i, math.min(i + 499, #ks))) end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ':' .. g)
return g`)
)

// NewRedis wraps a client. Call Run to start the subscription and the
// queue drainer.
func NewRedis(o RedisOptions) *Redis {
	if o.Prefix == "" {
		o.Prefix = "ae"
	}
	if o.Channel == "" {
		o.Channel = "anqi-edge:invalidate"
	}
	if o.QueueMax <= 0 {
		o.QueueMax = 10000
	}
	if o.OnRemoteInvalidate == nil {
		o.OnRemoteInvalidate = func(int64) {}
	}
	if o.OnClear == nil {
		o.OnClear = func() {}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New(nil)
	}
	return &Redis{
		o: o, c: o.Client, log: o.Log, m: o.Metrics,
		brk:     newBreaker(o.BreakerFailures, o.BreakerCooldown),
		pending: map[int64]struct{}{},
	}
}

func (r *Redis) tag(order int64) string {
	return r.o.Prefix + ":{o:" + strconv.FormatInt(order, 10) + "}"
}

func (r *Redis) entryKey(k Key) string {
	return r.tag(k.Order) + ":e:" + strconv.FormatInt(r.epoch.Load(), 10) + ":" + hex.EncodeToString(k.Sum[:])
}

func (r *Redis) epochKey() string { return r.o.Prefix + ":epoch" }

// usable reports whether a read or fill may go to Redis now.
func (r *Redis) usable() bool {
	return !r.blocked.Load() && r.brk.allow(time.Now().UnixNano())
}

func (r *Redis) result(op string, err error) {
	if err == nil || errors.Is(err, redis.Nil) {
		r.brk.success()
		return
	}
	r.brk.failure(time.Now().UnixNano())
	r.m.RedisErrors.WithLabelValues(op).Inc()
}

// Get reads k's entry and the order's current generation in one round trip.
// gen is the value a later Fill must present. An entry filled under an older
// generation is reported as absent.
func (r *Redis) Get(ctx context.Context, k Key) (e *Entry, gen int64, err error) {
	if !r.usable() {
		return nil, NoGen, ErrUnavailable
	}
	tag := r.tag(k.Order)
	vals, err := r.c.MGet(ctx, tag+":g", r.entryKey(k)).Result()
	r.result("get", err)
	if err != nil {
		return nil, NoGen, fmt.Errorf("redis get order %d: %w", k.Order, err)
	}
	gen = 0
	if s, ok := vals[0].(string); ok {
		if gen, err = strconv.ParseInt(s, 10, 64); err != nil {
			return nil, NoGen, fmt.Errorf("redis get order %d: generation %q: %w", k.Order, s, err)
		}
	}
	s, ok := vals[1].(string)
	if !ok {
		return nil, gen, nil
	}
	e, err = UnmarshalEntry([]byte(s))
	if err != nil || int64(e.Gen) != gen {
		return nil, gen, nil
	}
	return e, gen, nil
}

// Fill stores e under k for ttl if the order's generation is still gen. It
// reports whether the entry was written; false with a nil error means an
// invalidation overtook the fill.
func (r *Redis) Fill(ctx context.Context, k Key, e *Entry, gen int64, ttl time.Duration) (bool, error) {
	if gen == NoGen || !r.usable() {
		return false, nil
	}
	stored := *e
	stored.Gen = uint64(gen)
	val, _ := stored.MarshalBinary()
	tag := r.tag(k.Order)
	n, err := fillScript.Run(ctx, r.c, []string{tag + ":g", r.entryKey(k), tag + ":i"},
		gen, val, ttl.Milliseconds(), (ttl + time.Minute).Milliseconds()).Int()
	r.result("fill", err)
	if err != nil {
		return false, fmt.Errorf("redis fill order %d: %w", k.Order, err)
	}
	return n == 1, nil
}

// Invalidate bumps order's generation, drops its entries and tells every
// replica. When Redis cannot be reached the invalidation is queued (queued
// = true) and applied before this replica reads Redis again.
func (r *Redis) Invalidate(ctx context.Context, order int64) (queued bool, err error) {
	if r.blocked.Load() || !r.brk.allow(time.Now().UnixNano()) {
		r.enqueue(order)
		return true, nil
	}
	if err := r.invalidate(ctx, order); err != nil {
		r.enqueue(order)
		return true, err
	}
	return false, nil
}

func (r *Redis) invalidate(ctx context.Context, order int64) error {
	tag := r.tag(order)
	msg := "o:" + strconv.FormatInt(order, 10) + ":" + r.o.ReplicaID
	err := invalidateScript.Run(ctx, r.c, []string{tag + ":g", tag + ":i"},
		genTTL.Milliseconds(), r.o.Channel, msg).Err()
	r.result("invalidate", err)
	if err != nil {
		return fmt.Errorf("redis invalidate order %d: %w", order, err)
	}
	return nil
}

func (r *Redis) enqueue(order int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blocked.Store(true)
	if r.bumpEpoch {
		return
	}
	if len(r.pending) >= r.o.QueueMax {
		// Too many orders to remember: forget them all and, once Redis is
		// back, move every replica to a new key space instead.
		r.pending = map[int64]struct{}{}
		r.bumpEpoch = true
		r.log.Warn("invalidation queue overflowed; the cache epoch will be bumped when Redis answers", "max", r.o.QueueMax)
	} else {
		r.pending[order] = struct{}{}
	}
	r.m.RedisPending.Set(float64(len(r.pending)))
}

// drain applies queued invalidations. Reads stay blocked until all are in.
func (r *Redis) drain(ctx context.Context) {
	r.mu.Lock()
	orders := make([]int64, 0, len(r.pending))
	for o := range r.pending {
		orders = append(orders, o)
	}
	bump := r.bumpEpoch
	r.mu.Unlock()

	if bump {
		n, err := r.c.Incr(ctx, r.epochKey()).Result()
		r.result("epoch", err)
		if err != nil {
			return
		}
		r.setEpoch(n)
		r.c.Publish(ctx, r.o.Channel, "e:"+strconv.FormatInt(n, 10)+":"+r.o.ReplicaID)
		r.log.Warn("cache epoch bumped after invalidation queue overflow", "epoch", n)
	}
	for _, o := range orders {
		if err := r.invalidate(ctx, o); err != nil {
			return
		}
		r.mu.Lock()
		delete(r.pending, o)
		r.mu.Unlock()
	}
	r.mu.Lock()
	if bump {
		r.bumpEpoch = false
	}
	if len(r.pending) == 0 && !r.bumpEpoch {
		r.blocked.Store(false)
		r.log.Info("queued invalidations applied; reading Redis again", "orders", len(orders))
	}
	r.m.RedisPending.Set(float64(len(r.pending)))
	r.mu.Unlock()
}

// setEpoch moves to epoch n; entries of older epochs become unreachable and
// L1, filled from them, is cleared.
func (r *Redis) setEpoch(n int64) {
	if r.epoch.Swap(n) != n {
		r.m.RedisEpoch.Set(float64(n))
		r.o.OnClear()
	}
}

// Run keeps the subscription alive, drains the queue and probes Redis while
// the breaker is open. It returns when ctx is done.
func (r *Redis) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.maintain(ctx)
	}()
	r.subscribe(ctx)
	wg.Wait()
}

func (r *Redis) maintain(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		r.m.RedisBreaker.Set(float64(r.brk.state(now)))
		if r.brk.state(now) != BreakerClosed && r.brk.allow(now) {
			// Probe so the breaker closes even when no request needs Redis.
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			r.result("ping", r.c.Ping(pctx).Err())
			cancel()
		}
		if r.blocked.Load() && r.brk.allow(time.Now().UnixNano()) {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r.drain(dctx)
			cancel()
		}
	}
}

// subscribe listens for other replicas' invalidations. go-redis reconnects
// a broken subscription by itself and re-sends SUBSCRIBE; every confirmation
// after the first means messages may have been missed, so L1 is cleared.
func (r *Redis) subscribe(ctx context.Context) {
	ps := r.c.Subscribe(ctx, r.o.Channel)
	// A blocked receive does not watch ctx; closing the subscription does
	// unblock it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	defer ps.Close()
	first := true
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, 2*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet channel: make sure the connection is still there.
				if perr := ps.Ping(ctx); perr == nil {
					continue
				}
			}
			if r.subscribed.Swap(false) {
				r.m.PubSubUp.Set(0)
				r.log.Warn("invalidation subscription lost; L1 will be cleared on reconnect", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if !first {
				r.o.OnClear()
				r.m.L1Clears.Inc()
			}
			first = false
			r.subscribed.Store(true)
			r.m.PubSubUp.Set(1)
			r.refreshEpoch(ctx)
		case *redis.Message:
			r.handle(m.Payload)
		}
	}
}

func (r *Redis) refreshEpoch(ctx context.Context) {
	ectx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	n, err := r.c.Get(ectx, r.epochKey()).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.result("epoch", err)
		return
	}
	r.setEpoch(n)
}

// handle applies one pub/sub message: "o:ORDER:REPLICA:GEN" or
// "e:EPOCH:REPLICA".
func (r *Redis) handle(payload string) {
	parts := strings.Split(payload, ":")
	if len(parts) < 3 {
		return
	}
	n, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return
	}
	switch parts[0] {
	case "o":
		if parts[2] == r.o.ReplicaID {
			return // our own: L1 was invalidated before publishing
		}
		r.m.Invalidations.WithLabelValues("pubsub").Inc()
		r.o.OnRemoteInvalidate(n)
	case "e":
		r.setEpoch(n)
	}
}

// Status is what /readyz reports about Redis.
type Status struct {
	Breaker    string `json:"breaker"`
	Subscribed bool   `json:"subscribed"`
	Pending    int    `json:"pending_invalidations"`
	Epoch      int64  `json:"epoch"`
	Ping       string `json:"ping"`
}

// Status pings Redis (bounded by ctx) and reports the tier's state.
func (r *Redis) Status(ctx context.Context) Status {
	r.mu.Lock()
	pending := len(r.pending)
	r.mu.Unlock()
	st := Status{
		Breaker:    r.brk.state(time.Now().UnixNano()).String(),
		Subscribed: r.subscribed.Load(),
		Pending:    pending,
		Epoch:      r.epoch.Load(),
		Ping:       "ok",
	}
	if err := r.c.Ping(ctx).Err(); err != nil {
		st.Ping = err.Error()
	}
	return st
}
