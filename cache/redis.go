package cache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
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
	// epochMu is held across every read of P:epoch, the bump, and the
	// adoption of their result (and of "e:" messages). Epoch values come
	// from different goroutines over different connections; only doing one
	// at a time makes the order they are adopted in the order Redis ran
	// them, so a GET that ran before a bump can never be adopted after it.
	epochMu sync.Mutex
	// epochFreshUntil (unix nanos) is how long the epoch in use may be
	// trusted: forever while subscribed (bumps arrive as messages), briefly
	// after a GET while not. Past it, the next Redis read re-reads P:epoch.
	epochFreshUntil atomic.Int64
	// blocked is true while queued invalidations wait; reads and fills skip
	// Redis until they are applied.
	blocked    atomic.Bool
	mu         sync.Mutex
	pending    map[int64]struct{}
	bumpEpoch  bool
	subscribed atomic.Bool
}

// epochTrust is how long an epoch read by GET is used without the
// subscription vouching for it.
const epochTrust = 100 * time.Millisecond

// pubsubPing is how long the subscription may stay quiet before it is
// pinged; a ping unanswered for as long again means the connection is dead
// even if TCP has not noticed (a silently dropped connection would otherwise
// lose every message without anyone knowing).
const pubsubPing = 2 * time.Second

var errNoPong = errors.New("pub/sub connection did not answer a ping")

// maxEntriesPerOrder bounds the (site, identity) entries one order keeps in
// Redis. An order normally has a handful (its owner, staff); the bound stops
// a flood of distinct tokens (say, forged ones in fingerprint mode with
// cache.negative_ttl on) from growing the index that the invalidate script
// walks inside Redis. Past it, new identities are served but not stored in
// Redis until the order is invalidated or its entries expire.
const maxEntriesPerOrder = 1024

// genTTL keeps a generation counter well past any entry it guards.
const genTTL = 7 * 24 * time.Hour

var (
	// KEYS: gen, entry, index. ARGV: expected gen, value, ttl ms, index ttl ms, max entries per order.
	fillScript = redis.NewScript(`
local g = redis.call('GET', KEYS[1]) or '0'
if g ~= ARGV[1] then return 0 end
if redis.call('SISMEMBER', KEYS[3], KEYS[2]) == 0 and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[5]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], KEYS[2])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return 1`)
	// KEYS: epoch. ARGV: channel, replica id. Bumping and telling every
	// replica is one step: a bump no one hears of would leave the others
	// reading the key space it was meant to retire.
	bumpScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], 'e:' .. n .. ':' .. ARGV[2])
return n`)
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

func (r *Redis) entryKey(k Key, epoch int64) string {
	return r.tag(k.Order) + ":e:" + strconv.FormatInt(epoch, 10) + ":" + hex.EncodeToString(k.Sum[:])
}

// The generation Get hands out (and Fill takes back) is opaque to callers:
// it carries the epoch the entry key was built with beside the order's
// Redis counter, so a fill that straddles an epoch bump is dropped instead
// of writing data read before the bump into the new key space.
const (
	genBits  = 32
	genMask  = 1<<genBits - 1
	maxEpoch = 1<<(63-genBits) - 1
)

func packGen(epoch, counter int64) int64 {
	if epoch < 0 || epoch > maxEpoch || counter < 0 || counter > genMask {
		return NoGen // out of range: never fill, never wrong
	}
	return epoch<<genBits | counter
}

func unpackGen(gen int64) (epoch, counter int64) { return gen >> genBits, gen & genMask }

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
// gen is the value a later Fill must present (opaque: see packGen). An
// entry filled under an older generation is reported as absent. While the
// subscription is down, the epoch is re-read first (at most every
// epochTrust), since bumps are then not heard.
func (r *Redis) Get(ctx context.Context, k Key) (e *Entry, gen int64, err error) {
	if !r.usable() {
		return nil, NoGen, ErrUnavailable
	}
	if err := r.ensureEpoch(ctx); err != nil {
		return nil, NoGen, fmt.Errorf("redis get order %d: %w", k.Order, err)
	}
	epoch := r.epoch.Load()
	tag := r.tag(k.Order)
	vals, err := r.c.MGet(ctx, tag+":g", r.entryKey(k, epoch)).Result()
	r.result("get", err)
	if err != nil {
		return nil, NoGen, fmt.Errorf("redis get order %d: %w", k.Order, err)
	}
	var counter int64
	if s, ok := vals[0].(string); ok {
		if counter, err = strconv.ParseInt(s, 10, 64); err != nil {
			return nil, NoGen, fmt.Errorf("redis get order %d: generation %q: %w", k.Order, s, err)
		}
	}
	gen = packGen(epoch, counter)
	s, ok := vals[1].(string)
	if !ok {
		return nil, gen, nil
	}
	e, err = UnmarshalEntry([]byte(s))
	if err != nil || int64(e.Gen) != counter {
		return nil, gen, nil
	}
	return e, gen, nil
}

// Fill stores e under k for ttl if the order's generation is still gen. It
// reports whether the entry was written; false with a nil error means an
// invalidation overtook the fill.
func (r *Redis) Fill(ctx context.Context, k Key, e *Entry, gen int64, ttl time.Duration) (bool, error) {
	if gen == NoGen {
		return false, nil
	}
	epoch, counter := unpackGen(gen)
	if epoch != r.epoch.Load() {
		// The epoch moved since Get: what AnqiCMS answered may predate the
		// invalidations the bump stands for.
		return false, nil
	}
	// Checked last: a half-open breaker lets exactly one caller through
	// and needs to hear how its call went.
	if !r.usable() {
		return false, nil
	}
	stored := *e
	stored.Gen = uint64(counter)
	val, _ := stored.MarshalBinary()
	tag := r.tag(k.Order)
	n, err := fillScript.Run(ctx, r.c, []string{tag + ":g", r.entryKey(k, epoch), tag + ":i"},
		counter, val, ttl.Milliseconds(), (ttl + time.Minute).Milliseconds(), maxEntriesPerOrder).Int()
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
	r.addPendingLocked(order)
	r.m.RedisPending.Set(float64(len(r.pending)))
}

// addPendingLocked queues order, or gives up on remembering orders once
// the queue is full. r.mu must be held.
func (r *Redis) addPendingLocked(order int64) {
	if r.bumpEpoch {
		return // the bump will cover it
	}
	if len(r.pending) >= r.o.QueueMax {
		// Too many orders to remember: forget them all and, once Redis is
		// back, move every replica to a new key space instead.
		r.pending = map[int64]struct{}{}
		r.bumpEpoch = true
		r.log.Warn("invalidation queue overflowed; the cache epoch will be bumped when Redis answers", "max", r.o.QueueMax)
		return
	}
	r.pending[order] = struct{}{}
}

// drain applies queued invalidations. Reads stay blocked until all are in.
//
// It takes the whole queue before touching Redis, so an invalidation that
// is queued while it runs (a write landing mid-drain, for an order already
// drained or not) is kept for the next round instead of being lost.
func (r *Redis) drain(ctx context.Context) {
	r.mu.Lock()
	orders, bump := r.pending, r.bumpEpoch
	r.pending, r.bumpEpoch = map[int64]struct{}{}, false
	r.mu.Unlock()

	done := r.applyQueued(ctx, orders, bump)

	r.mu.Lock()
	defer r.mu.Unlock()
	if !done {
		// Put back what was not applied; newer entries stay.
		if bump {
			r.pending, r.bumpEpoch = map[int64]struct{}{}, true
		}
		for o := range orders {
			r.addPendingLocked(o)
		}
	} else if len(r.pending) == 0 && !r.bumpEpoch {
		r.blocked.Store(false)
		r.log.Info("queued invalidations applied; reading Redis again")
	}
	r.m.RedisPending.Set(float64(len(r.pending)))
}

// applyQueued runs a bump and the invalidations of orders, deleting each
// from orders once applied. It reports whether all of it went through.
func (r *Redis) applyQueued(ctx context.Context, orders map[int64]struct{}, bump bool) bool {
	if bump {
		r.epochMu.Lock()
		n, err := bumpScript.Run(ctx, r.c, []string{r.epochKey()}, r.o.Channel, r.o.ReplicaID).Int64()
		r.result("epoch", err)
		changed := err == nil && r.setEpochLocked(n)
		r.epochMu.Unlock()
		if err != nil {
			return false
		}
		r.epochChanged(changed)
		r.log.Warn("cache epoch bumped after invalidation queue overflow", "epoch", n)
	}
	if !bump && len(orders) == 0 {
		// Nothing queued: still answer the breaker, which may have let this
		// call through as its one half-open probe.
		err := r.c.Ping(ctx).Err()
		r.result("ping", err)
		return err == nil
	}
	for o := range orders {
		if err := r.invalidate(ctx, o); err != nil {
			return false
		}
		delete(orders, o)
	}
	return true
}

// BumpEpoch moves every replica to a new key space now. When Redis cannot
// be reached the bump is queued like an invalidation: reads skip Redis
// until it is applied, so nothing from the old key space is served.
func (r *Redis) BumpEpoch(ctx context.Context) error {
	if r.applyQueued(ctx, map[int64]struct{}{}, true) {
		return nil
	}
	r.mu.Lock()
	r.blocked.Store(true)
	r.pending, r.bumpEpoch = map[int64]struct{}{}, true
	r.mu.Unlock()
	r.log.Warn("redis unreachable; the cache epoch bump is queued until it answers")
	return nil
}

// setEpochLocked moves to epoch n (r.epochMu held) and reports whether it
// changed; the caller then calls epochChanged.
func (r *Redis) setEpochLocked(n int64) bool {
	r.m.RedisEpoch.Set(float64(n))
	return r.epoch.Swap(n) != n
}

// epochChanged clears L1 after a move to another epoch: its entries were
// filled from the old key space. Clearing after the move (not before) means
// a fill that read the old key space cannot store into the cleared L1.
func (r *Redis) epochChanged(changed bool) {
	if changed {
		r.o.OnClear()
		r.m.L1Clears.Inc()
	}
}

// setEpoch adopts epoch n announced by a message.
func (r *Redis) setEpoch(n int64) {
	r.epochMu.Lock()
	changed := r.setEpochLocked(n)
	r.epochMu.Unlock()
	r.epochChanged(changed)
}

// ensureEpoch re-reads the epoch when the one in use is not vouched for.
func (r *Redis) ensureEpoch(ctx context.Context) error {
	if r.epochFresh() {
		return nil
	}
	return r.refreshEpoch(ctx, false)
}

func (r *Redis) epochFresh() bool { return time.Now().UnixNano() < r.epochFreshUntil.Load() }

// refreshEpoch reads P:epoch and adopts it. Unless the subscription is up
// (it then delivers every later bump), the value is trusted for epochTrust.
// Without force, a read that another caller made while this one waited for
// the lock is good enough: a burst of requests makes one GET, not one each.
func (r *Redis) refreshEpoch(ctx context.Context, force bool) error {
	r.epochMu.Lock()
	if !force && r.epochFresh() {
		r.epochMu.Unlock()
		return nil
	}
	n, err := r.c.Get(ctx, r.epochKey()).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.epochMu.Unlock()
		r.result("epoch", err)
		return fmt.Errorf("reading the cache epoch: %w", err)
	}
	changed := r.setEpochLocked(n)
	until := time.Now().Add(epochTrust).UnixNano()
	for {
		cur := r.epochFreshUntil.Load()
		if cur >= until || r.epochFreshUntil.CompareAndSwap(cur, until) {
			break
		}
	}
	r.epochMu.Unlock()
	r.result("epoch", nil)
	r.epochChanged(changed)
	return nil
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
// a connection that fails and re-sends SUBSCRIBE; a connection that goes
// silent is found by an unanswered ping and replaced. Every confirmation
// after a failure means messages may have been missed, so L1 is cleared and
// the epoch re-read.
func (r *Redis) subscribe(ctx context.Context) {
	var mu sync.Mutex // guards ps against the closer below
	ps := r.c.Subscribe(ctx, r.o.Channel)
	// A blocked receive does not watch ctx; closing the subscription does
	// unblock it.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		ps.Close()
		mu.Unlock()
	})
	defer stop()
	defer func() {
		mu.Lock()
		ps.Close()
		mu.Unlock()
	}()
	// clean: no failure since start, so nothing can have been missed.
	clean := true
	awaitingPong := false
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, pubsubPing)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				if !awaitingPong {
					// Quiet channel: make sure the connection is still there.
					if perr := ps.Ping(ctx); perr == nil {
						awaitingPong = true
						continue
					}
				} else {
					// Pinged and heard nothing: the connection is dead even
					// though TCP has not said so. Start over on a new one.
					err = errNoPong
					mu.Lock()
					ps.Close()
					ps = r.c.Subscribe(ctx, r.o.Channel)
					mu.Unlock()
				}
			}
			awaitingPong = false
			clean = false
			r.lost(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		awaitingPong = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if !clean {
				r.o.OnClear()
				r.m.L1Clears.Inc()
			}
			clean = false // any later confirmation follows a reconnect
			r.subscribed.Store(true)
			r.m.PubSubUp.Set(1)
			ectx, cancel := context.WithTimeout(ctx, time.Second)
			if err := r.refreshEpoch(ectx, true); err == nil {
				// Every later bump arrives as a message.
				r.epochFreshUntil.Store(math.MaxInt64)
			}
			cancel()
		case *redis.Message:
			r.handle(m.Payload)
		}
	}
}

// lost records that the subscription is down: bumps of the epoch are no
// longer heard, so the epoch in use is re-read before Redis is read again.
func (r *Redis) lost(err error) {
	r.epochFreshUntil.Store(0)
	if r.subscribed.Swap(false) {
		r.m.PubSubUp.Set(0)
		r.log.Warn("invalidation subscription lost; L1 will be cleared on reconnect", "err", err)
	}
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
		// The originating replica logged it at info; here it is an echo.
		r.log.Debug("order invalidated by another replica", "order", n, "site", "*", "source", "pubsub", "replica", parts[2])
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
