package cache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"anqi-edge/metrics"
)

// ErrUnavailable means Redis is being skipped: the breaker is open, or
// invalidations queued during an outage have not been applied yet (reading
// before they are could serve an order known to have changed). A lookup
// that returns it never reached Redis: count it as skipped, not as a miss.
var ErrUnavailable = errors.New("redis skipped: breaker open or invalidations pending")

// NoGen marks a fill whose Redis generation is unknown (Redis was skipped
// when the flight started, or its epoch moved under the lookup). Such fills
// are never written to Redis.
const NoGen = -1

// DefaultChannelBase starts the default pub/sub channel; DefaultChannel
// appends the key prefix to it.
const DefaultChannelBase = "anqi-edge:invalidate"

// DefaultChannel is the channel used when RedisOptions.Channel is empty:
// one per key prefix, so two deployments sharing a Redis do not even hear
// each other. (Messages carry the prefix as well, so deployments that were
// configured onto one channel ignore each other's messages.)
func DefaultChannel(prefix string) string { return DefaultChannelBase + ":" + prefix }

// RedisOptions configures the Redis tier. Zero values mean the defaults.
type RedisOptions struct {
	Client redis.UniversalClient
	// Prefix starts every key ("ae").
	Prefix string
	// Channel carries invalidations between replicas (DefaultChannel(Prefix)).
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
	// NoAutopipeline sends each lookup on its own pooled connection
	// instead of through go-redis's autopipeliner (see lookup.go).
	NoAutopipeline bool
	// OnRemoteInvalidate drops an order from L1 when another replica
	// invalidated it; OnClear drops all of L1 (subscription re-established,
	// epoch moved, Redis found to have lost its data).
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
//
// # Redis losing its data
//
// A flush, a restart without persistence, a failover to an empty replica or
// an eviction can make any of these keys vanish while fills are in flight
// and replicas hold L1 copies. These rules make that safe:
//
//   - A generation counter is created by the lookup (never by the fill),
//     and a fill whose counter is missing is refused (FillDroppedReset). A
//     counter that is created or re-created starts at the Redis server's
//     clock (microseconds since 2020), not at 0, so it never takes a value an older
//     counter of the same order handed out: a fill that read generation G
//     before the data was lost can never match again, and an entry filled
//     under G is never served again. Fills push the counter's TTL past
//     their entry's, so it is not the first to expire.
//   - P:epoch is the incarnation marker: it exists from the first lookup
//     on, and only ever moves up. When it is missing (or lower than the
//     epoch a replica already uses), Redis lost it, and the replica that
//     notices sets it above every epoch it knew (and above the clock, like
//     a counter), and announces it. Every replica then adopts it, which
//     clears its L1 and refuses every fill looked up under the old epoch
//     (FillDroppedEpoch). On a single server the epoch is read by every
//     lookup, in the same MGET; on a cluster (where it lives in another
//     slot) by the background check every second, and by lookups every
//     100ms while the subscription is down. The background check runs on
//     a single server too, so an idle replica notices.
//   - A Redis that comes back with older data (a snapshot loaded on
//     restart, a failover to a replica that lagged) has an epoch and
//     counters, just old ones. Its run_id changed, though: the same
//     background check (and every reconnect of the subscription) compares
//     it, and on a change moves the epoch as above, once for all replicas.
//     Until then, a second at most, lookups may see what the old data
//     holds.
type Redis struct {
	o RedisOptions
	c redis.UniversalClient
	// batched is go-redis's autopipeliner for lookups that have company
	// (see lookup.go); nil when redis.autopipeline is off. inflight
	// counts the lookups under way.
	batched  redis.UniversalClient
	inflight atomic.Int64
	brk      *breaker
	log      *slog.Logger
	m        *metrics.Metrics

	// msgHead starts every message this deployment publishes (its quoted
	// key prefix); messages without it come from another deployment.
	msgHead string
	epochK  string // P:epoch
	// restartK (in P:epoch's cluster slot) names the run_ids the epoch was
	// last moved for; "" when the key prefix's braces leave no such name.
	restartK string
	// epochInGet: lookups read P:epoch in their own MGET (not on a
	// cluster, where it is in another slot).
	epochInGet bool
	cluster    bool

	// ev is the epoch in use and its view number, replaced (never edited)
	// on every move. Epochs only move up.
	ev atomic.Pointer[epochView]
	// epochMu serialises the reads, bumps and repairs of P:epoch, so a
	// burst of lookups that all notice a missing epoch repairs it once.
	// Lookups do not take it: adoption only moves up, so a value read
	// before a bump and handled after it is simply ignored.
	epochMu sync.Mutex
	// incMu guards runID, the run_id(s) of the Redis server(s) last seen
	// (checkIncarnation).
	incMu    sync.Mutex
	runID    string
	runIDOff bool // Redis refused INFO
	// epochFreshUntil (unix nanos) is how long the epoch in use may be
	// trusted on a cluster without re-reading it.
	epochFreshUntil atomic.Int64
	// blocked is true while queued invalidations wait; reads and fills skip
	// Redis until they are applied.
	blocked    atomic.Bool
	mu         sync.Mutex
	pending    map[int64]struct{}
	bumpEpoch  bool
	subscribed atomic.Bool

	// Confirmed invalidations (confirm.go): ackSeq numbers this replica's
	// requests for confirmation, confirms holds the writers waiting (under
	// confirmMu), acks queues the acks this replica owes other writers.
	ackSeq    atomic.Uint64
	confirmMu sync.Mutex
	confirms  map[uint64]*confirmation
	acks      chan ack
}

// epochView is an epoch and the number of moves this replica made to reach
// it. Generations carry the view, so a fill can tell the epoch moved since
// its lookup without carrying the (wide) epoch itself.
type epochView struct {
	epoch int64
	view  int64
}

const (
	// epochTrust is how long an epoch read by GET is used on a cluster
	// without the subscription vouching for it; epochTrustSubscribed while
	// it does (bumps then arrive as messages; the background check, every
	// epochCheckEvery, catches a loss of P:epoch, which sends no message,
	// and renews the trust before it lapses, so lookups do not stop for a
	// GET).
	epochTrust           = 100 * time.Millisecond
	epochTrustSubscribed = 5 * epochCheckEvery
	// epochCheckEvery is how often the background loop re-reads the epoch,
	// so a replica that makes no lookups still notices Redis lost its data.
	epochCheckEvery = time.Second
)

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

// genTTL is the least a generation counter lives after a lookup or an
// invalidation: long enough for any fill in flight. Fills stretch it past
// the entry they store (an expired counter only costs refused fills and
// misses, never a stale answer: see "Redis losing its data").
const genTTL = time.Hour

// luaClock yields the Redis server's clock in microseconds since 2020 as a
// decimal string (about 2^48 today, 2^52 in 2162), built from strings: Lua
// numbers are doubles and print big integers in exponent form.
const luaClock = `local function clock()
  local t = redis.call('TIME')
  return (tonumber(t[1]) - 1577836800) .. string.format('%06d', tonumber(t[2]))
end
`

var (
	// KEYS: gen, entry[, epoch]. ARGV: gen ttl ms.
	// Returns {gen, entry or false, epoch or false}. Creating the counter
	// here, not in the fill, is what lets a fill tell "no invalidation yet"
	// from "Redis lost the counter".
	getScript = redis.NewScript(luaClock + `
local g = redis.call('GET', KEYS[1])
if not g then
  g = clock()
  redis.call('SET', KEYS[1], g, 'PX', ARGV[1])
end
local ep = false
if #KEYS > 2 then ep = redis.call('GET', KEYS[3]) end
return {g, redis.call('GET', KEYS[2]), ep}`)
	// KEYS: gen, entry, index. ARGV: expected gen, value, ttl ms, index and
	// gen ttl ms, max entries per order. Returns a fillCode.
	fillScript = redis.NewScript(`
local g = redis.call('GET', KEYS[1])
if not g then return 3 end
if g ~= ARGV[1] then return 2 end
if redis.call('SISMEMBER', KEYS[3], KEYS[2]) == 0 and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[5]) then return 4 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], KEYS[2])
local keep = tonumber(ARGV[4])
if redis.call('PTTL', KEYS[3]) < keep then redis.call('PEXPIRE', KEYS[3], keep) end
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 1`)
	// KEYS: epoch[, restart marker]. ARGV: channel, message head, replica
	// id, the caller's epoch, mode ("bump", "repair" or "restarted"), the
	// run_ids of the restarted Redis ("restarted" only). Returns the epoch
	// now in Redis.
	//
	// bump moves above both Redis's epoch and the caller's. repair only
	// acts when Redis lost P:epoch or holds one lower than the caller's
	// (both mean Redis lost data): it moves above the caller's. restarted
	// moves above both unless the marker says a replica already moved for
	// these run_ids (one move per restart, not one per replica; without a
	// marker key, unless Redis is already above the caller's epoch). A
	// missing epoch restarts above the clock, so it also passes every
	// epoch that a replica that has since restarted once knew. Moving and
	// telling every replica is one step: a move no one hears of would
	// leave the others reading a key space that is meant to be retired.
	epochScript = redis.NewScript(luaClock + `
local cur = redis.call('GET', KEYS[1])
local mine = tonumber(ARGV[4])
local n
if ARGV[5] == 'restarted' then
  if KEYS[2] then
    if redis.call('GET', KEYS[2]) == ARGV[6] then return cur end
    redis.call('SET', KEYS[2], ARGV[6])
  elseif cur and tonumber(cur) > mine then
    return cur
  end
end
if not cur then
  n = math.max(mine + 1, tonumber(clock()))
elseif ARGV[5] ~= 'repair' then
  n = math.max(tonumber(cur), mine) + 1
elseif tonumber(cur) < mine then
  n = mine + 1
else
  return cur
end
local s = string.format('%d', n)
redis.call('SET', KEYS[1], s)
redis.call('PUBLISH', ARGV[1], ARGV[2] .. 'e:' .. s .. ':' .. ARGV[3])
return s`)
	// KEYS: gen, index. ARGV: gen ttl ms, channel, message.
	// Returns how many subscribers the message reached (PUBLISH's answer):
	// a writer that asked for confirmation waits for that many acks.
	// A missing counter restarts at the clock, never at 1 (see getScript).
	// The entry keys come from the index and share the {o:N} tag, so they
	// live in the same cluster slot as the declared keys.
	invalidateScript = redis.NewScript(luaClock + `
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCR', KEYS[1])
else
  redis.call('SET', KEYS[1], clock())
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ks = redis.call('SMEMBERS', KEYS[2])
for i = 1, #ks, 500 do redis.call('DEL', unpack(ks, i, math.min(i + 499, #ks))) end
redis.call('DEL', KEYS[2])
return redis.call('PUBLISH', ARGV[2], ARGV[3])`)
)

// NewRedis wraps a client. Call Run to start the subscription and the
// queue drainer.
func NewRedis(o RedisOptions) *Redis {
	if o.Prefix == "" {
		o.Prefix = "ae"
	}
	if o.Channel == "" {
		o.Channel = DefaultChannel(o.Prefix)
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
	_, cluster := o.Client.(*redis.ClusterClient)
	r := &Redis{
		o: o, c: o.Client, log: o.Log, m: o.Metrics,
		brk:        newBreaker(o.BreakerFailures, o.BreakerCooldown),
		pending:    map[int64]struct{}{},
		msgHead:    strconv.Quote(o.Prefix),
		epochK:     o.Prefix + ":epoch",
		restartK:   sameSlotKey(o.Prefix+":epoch", ":restarted"),
		epochInGet: !cluster,
		cluster:    cluster,
		batched:    autopipeliner(o.Client, !o.NoAutopipeline),
	}
	r.ev.Store(&epochView{})
	r.acks = make(chan ack, ackQueue)
	return r
}

func (r *Redis) tag(order int64) string {
	return r.o.Prefix + ":{o:" + strconv.FormatInt(order, 10) + "}"
}

func (r *Redis) entryKey(k Key, epoch int64) string {
	return r.tag(k.Order) + ":e:" + strconv.FormatInt(epoch, 10) + ":" + hex.EncodeToString(k.Sum[:])
}

// The generation Get hands out (and Fill takes back) is opaque to callers:
// it carries this replica's epoch view beside the order's Redis counter, so
// a fill that straddles an epoch move is dropped instead of writing data
// read before the move into the new key space. Views wrap after 2^11
// moves; a fill would have to span that many to be fooled.
const (
	counterBits = 52
	counterMask = 1<<counterBits - 1
	viewMask    = 1<<(63-counterBits) - 1
)

func packGen(view, counter int64) int64 {
	if counter < 0 || counter > counterMask {
		return NoGen // out of range: never fill, never wrong
	}
	return (view&viewMask)<<counterBits | counter
}

func unpackGen(gen int64) (view, counter int64) { return gen >> counterBits, gen & counterMask }

func (r *Redis) epochKey() string { return r.epochK }

// lookupKeys builds k's counter and entry keys (see Redis) in one
// allocation: a lookup is the hot path of a Redis hit.
func (r *Redis) lookupKeys(k Key, epoch int64) (gen, entry string) {
	var buf [192]byte
	b := append(buf[:0], r.o.Prefix...)
	b = append(b, ":{o:"...)
	b = strconv.AppendInt(b, k.Order, 10)
	b = append(b, '}')
	tag := len(b)
	b = append(b, ":g"...)
	g := len(b)
	b = append(b, b[:tag]...)
	b = append(b, ":e:"...)
	b = strconv.AppendInt(b, epoch, 10)
	b = append(b, ':')
	b = hex.AppendEncode(b, k.Sum[:])
	keys := string(b)
	return keys[:g], keys[g:]
}

// Epoch returns the global epoch in use.
func (r *Redis) epoch() int64 { return r.ev.Load().epoch }

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

// Get reads k's entry and the order's current generation in one round trip
// (on a single server the epoch too). gen is the value a later Fill must
// present (opaque: see packGen). An entry filled under another generation
// or epoch is reported as absent.
//
// A nil entry with a nil error is a miss. ErrUnavailable means Redis was
// skipped (breaker open, invalidations pending): not a miss, nothing was
// asked. Any other error is a failed Redis call. In both error cases gen is
// NoGen.
func (r *Redis) Get(ctx context.Context, k Key) (e *Entry, gen int64, err error) {
	if !r.usable() {
		return nil, NoGen, ErrUnavailable
	}
	if !r.epochInGet {
		if err := r.ensureEpoch(ctx); err != nil {
			return nil, NoGen, fmt.Errorf("redis get order %d: %w", k.Order, err)
		}
	}
	e, gen, moved, err := r.get(ctx, k)
	if moved && err == nil {
		// Once more in the epoch just adopted, so the first lookup after a
		// move can still fill; should it move again, a miss without a gen.
		e, gen, moved, err = r.get(ctx, k)
		if moved {
			return nil, NoGen, err
		}
	}
	return e, gen, err
}

// get is one lookup. moved reports that the epoch in Redis was not the one
// the lookup used; it has been adopted or repaired, and the result is a
// miss with NoGen (the entry read belongs to a retired key space).
func (r *Redis) get(ctx context.Context, k Key) (e *Entry, gen int64, moved bool, err error) {
	ev := r.ev.Load()
	genKey, entryKey := r.lookupKeys(k, ev.epoch)
	// A hit needs no script: its counter exists (the fill made sure), so
	// one MGET reads counter, entry and (on a single server) epoch at one
	// instant. Only an order without a counter takes the script that
	// creates it.
	var vals [3][]byte
	err = r.mget(ctx, genKey, entryKey, &vals)
	r.result("get", err)
	if err == nil && vals[0] == nil {
		err = r.createCounter(ctx, genKey, entryKey, &vals)
		r.result("get", err)
	}
	if err != nil {
		return nil, NoGen, false, fmt.Errorf("redis get order %d: %w", k.Order, err)
	}
	if r.epochInGet {
		if n, perr := strconv.ParseInt(bytesString(vals[2]), 10, 64); perr != nil || n != ev.epoch {
			// Another replica moved the epoch, or Redis lost it: the entry
			// read belongs to a retired key space either way. Catch up (or
			// repair).
			if err := r.checkEpoch(ctx, string(vals[2]), ev.epoch); err != nil {
				return nil, NoGen, true, fmt.Errorf("redis get order %d: %w", k.Order, err)
			}
			return nil, NoGen, true, nil
		}
	}
	counter, err := strconv.ParseInt(bytesString(vals[0]), 10, 64)
	if err != nil {
		return nil, NoGen, false, fmt.Errorf("redis get order %d: generation %q: %w", k.Order, vals[0], err)
	}
	gen = packGen(ev.view, counter)
	if vals[1] == nil {
		return nil, gen, false, nil
	}
	// The entry aliases the reply instead of copying it: the reply buffer
	// belongs to this lookup alone, and entries are immutable (see Entry).
	e, err = UnmarshalEntry(vals[1])
	if err != nil || int64(e.Gen) != counter {
		return nil, gen, false, nil
	}
	return e, gen, false, nil
}

// createCounter runs the lookup script for an order without a counter: it
// creates one and reads the same values as the lookup.
func (r *Redis) createCounter(ctx context.Context, genKey, entryKey string, vals *[3][]byte) error {
	keys := []string{genKey, entryKey, r.epochK}
	if !r.epochInGet {
		keys = keys[:2]
	}
	got, err := getScript.Run(ctx, r.c, keys, genTTL.Milliseconds()).Slice()
	if err != nil {
		return err
	}
	if len(got) != 3 {
		return fmt.Errorf("lookup script answered %d values, want 3", len(got))
	}
	for i, v := range got {
		vals[i] = nil
		if s, ok := v.(string); ok {
			vals[i] = []byte(s)
		}
	}
	return nil
}

// bytesString views b as a string for parsing, without copying.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// FillResult says what became of a fill. Its String is the result label of
// anqi_edge_cache_fills_total{tier="redis"}.
type FillResult int

const (
	// FillStored: the entry is in Redis.
	FillStored FillResult = iota
	// FillDroppedGeneration: an invalidation of the order overtook the fill.
	FillDroppedGeneration
	// FillDroppedEpoch: the global epoch moved since the lookup (a queue
	// overflow bump, or Redis found to have lost its data).
	FillDroppedEpoch
	// FillDroppedReset: the order's generation counter is gone from Redis
	// (flushed, restarted empty, failed over, evicted or expired), so no
	// one can tell whether an invalidation overtook the fill.
	FillDroppedReset
	// FillDroppedCap: the order already keeps maxEntriesPerOrder entries.
	FillDroppedCap
	// FillSkippedBreaker: Redis is being skipped (breaker open or
	// invalidations pending); nothing was sent.
	FillSkippedBreaker
	// FillSkippedNoGen: the lookup did not reach Redis (gen is NoGen).
	FillSkippedNoGen
	// FillError: the fill script failed; the error says why.
	FillError
)

var fillLabels = [...]string{"stored", "dropped_generation", "dropped_epoch", "dropped_reset",
	"dropped_cap", "skipped_breaker", "skipped_nogen", "error"}

// FillResults lists every FillResult, for pre-registering metric labels.
var FillResults = []FillResult{FillStored, FillDroppedGeneration, FillDroppedEpoch, FillDroppedReset,
	FillDroppedCap, FillSkippedBreaker, FillSkippedNoGen, FillError}

func (f FillResult) String() string {
	if f < 0 || int(f) >= len(fillLabels) {
		return "unknown"
	}
	return fillLabels[f]
}

// Outdated reports whether the refusal means the filled answer may predate
// a change (an invalidation, an epoch move, lost Redis data): it must then
// not be stored in L1 either. The other refusals (cap, breaker, no gen, an
// error) say nothing about the answer; L1 may keep it under its own
// generation check.
func (f FillResult) Outdated() bool {
	return f == FillDroppedGeneration || f == FillDroppedEpoch || f == FillDroppedReset
}

// fill script answers.
const (
	fillCodeStored     = 1
	fillCodeGeneration = 2
	fillCodeReset      = 3
	fillCodeCap        = 4
)

// Fill stores e under k for ttl if the order's generation is still gen. It
// reports whether the entry was written; false with a nil error is any
// refusal (see FillEntry for which).
func (r *Redis) Fill(ctx context.Context, k Key, e *Entry, gen int64, ttl time.Duration) (bool, error) {
	res, err := r.FillEntry(ctx, k, e, gen, ttl)
	return res == FillStored, err
}

// FillEntry is Fill that says why a fill was not stored. err is non-nil
// only with FillError.
func (r *Redis) FillEntry(ctx context.Context, k Key, e *Entry, gen int64, ttl time.Duration) (FillResult, error) {
	if gen == NoGen {
		return FillSkippedNoGen, nil
	}
	view, counter := unpackGen(gen)
	ev := r.ev.Load()
	if view != ev.view&viewMask {
		// The epoch moved since Get: what AnqiCMS answered may predate the
		// invalidations the move stands for.
		return FillDroppedEpoch, nil
	}
	// Checked last: a half-open breaker lets exactly one caller through
	// and needs to hear how its call went.
	if !r.usable() {
		return FillSkippedBreaker, nil
	}
	stored := *e
	stored.Gen = uint64(counter)
	val, _ := stored.MarshalBinary()
	tag := r.tag(k.Order)
	keep := max(ttl+time.Minute, genTTL)
	n, err := fillScript.Run(ctx, r.c, []string{tag + ":g", r.entryKey(k, ev.epoch), tag + ":i"},
		counter, val, ttl.Milliseconds(), keep.Milliseconds(), maxEntriesPerOrder).Int()
	r.result("fill", err)
	if err != nil {
		return FillError, fmt.Errorf("redis fill order %d: %w", k.Order, err)
	}
	switch n {
	case fillCodeStored:
		return FillStored, nil
	case fillCodeGeneration:
		return FillDroppedGeneration, nil
	case fillCodeReset:
		// Perhaps Redis lost everything: look at the epoch on the next
		// lookup (a cluster does not read it with every lookup).
		r.epochFreshUntil.Store(0)
		return FillDroppedReset, nil
	case fillCodeCap:
		return FillDroppedCap, nil
	}
	return FillError, fmt.Errorf("redis fill order %d: script answered %d", k.Order, n)
}

// Invalidate bumps order's generation, drops its entries and tells every
// replica. When Redis cannot be reached the invalidation is queued (queued
// = true) and applied before this replica reads Redis again.
func (r *Redis) Invalidate(ctx context.Context, order int64) (queued bool, err error) {
	queued, _, err = r.invalidateOrder(ctx, order, false)
	return queued, err
}

// InvalidateConfirmed is Invalidate whose message asks every replica it
// reaches to acknowledge, once it has dropped its L1 copy; the caller
// waits for them with the Confirmation's Wait (see confirm.go). The
// Confirmation is nil when there is nothing to wait for: the invalidation
// was queued (Redis skipped or failing; err says which), this replica is
// not subscribed (it would hear no ack), or the tier is a Redis Cluster,
// whose PUBLISH cannot count the subscribers it reached.
func (r *Redis) InvalidateConfirmed(ctx context.Context, order int64) (queued bool, c *Confirmation, err error) {
	return r.invalidateOrder(ctx, order, true)
}

func (r *Redis) invalidateOrder(ctx context.Context, order int64, confirm bool) (queued bool, c *Confirmation, err error) {
	if r.blocked.Load() || !r.brk.allow(time.Now().UnixNano()) {
		r.enqueue(order)
		return true, nil, nil
	}
	// Acks reach this replica over its subscription: without one, none
	// would be heard.
	var w *confirmation
	if confirm && !r.cluster && r.subscribed.Load() {
		w = r.expect() // before the message goes out
	}
	n, err := r.invalidate(ctx, order, w)
	if err != nil {
		if w != nil {
			r.forget(w)
		}
		r.enqueue(order)
		return true, nil, err
	}
	if w == nil {
		return false, nil, nil
	}
	w.reached(n)
	return false, &Confirmation{w}, nil
}

// invalidate runs the invalidate script and returns how many subscribers
// its message reached. With a waiter w, the message asks for
// confirmation under w's sequence number.
func (r *Redis) invalidate(ctx context.Context, order int64, w *confirmation) (int64, error) {
	tag := r.tag(order)
	msg := r.msgHead + "o:" + strconv.FormatInt(order, 10) + ":" + r.o.ReplicaID
	if w != nil {
		msg += ":" + strconv.FormatUint(w.seq, 10)
	}
	n, err := invalidateScript.Run(ctx, r.c, []string{tag + ":g", tag + ":i"},
		genTTL.Milliseconds(), r.o.Channel, msg).Int64()
	r.result("invalidate", err)
	if err != nil {
		return 0, fmt.Errorf("redis invalidate order %d: %w", order, err)
	}
	return n, nil
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
		n, err := r.moveEpoch(ctx, "bump", r.epoch(), "")
		if err != nil {
			return false
		}
		r.log.Warn("cache epoch bumped: every order cached before is dropped", "epoch", n)
	}
	if !bump && len(orders) == 0 {
		// Nothing queued: still answer the breaker, which may have let this
		// call through as its one half-open probe.
		err := r.c.Ping(ctx).Err()
		r.result("ping", err)
		return err == nil
	}
	for o := range orders {
		if _, err := r.invalidate(ctx, o, nil); err != nil {
			return false
		}
		delete(orders, o)
	}
	return true
}

// BumpEpoch moves every replica to a new key space now (the database change
// stream lost its place). When Redis cannot be reached the bump is queued
// like an overflowing invalidation queue: reads skip Redis until it is
// applied, so nothing from the old key space is served.
func (r *Redis) BumpEpoch(ctx context.Context) error {
	if !r.blocked.Load() && r.brk.allow(time.Now().UnixNano()) {
		if _, err := r.moveEpoch(ctx, "bump", r.epoch(), ""); err == nil {
			return nil
		}
	}
	r.mu.Lock()
	r.blocked.Store(true)
	r.pending, r.bumpEpoch = map[int64]struct{}{}, true
	r.mu.Unlock()
	r.log.Warn("redis unreachable; the cache epoch bump is queued until it answers")
	return nil
}

// moveEpoch runs epochScript (mode "bump", "repair" or "restarted", see
// there) and adopts its answer.
func (r *Redis) moveEpoch(ctx context.Context, mode string, mine int64, runIDs string) (int64, error) {
	r.epochMu.Lock()
	defer r.epochMu.Unlock()
	return r.moveEpochLocked(ctx, mode, mine, runIDs)
}

// moveEpochLocked is moveEpoch with r.epochMu held.
func (r *Redis) moveEpochLocked(ctx context.Context, mode string, mine int64, runIDs string) (int64, error) {
	keys := []string{r.epochK}
	if r.restartK != "" {
		keys = append(keys, r.restartK)
	}
	n, err := epochScript.Run(ctx, r.c, keys,
		r.o.Channel, r.msgHead, r.o.ReplicaID, mine, mode, runIDs).Int64()
	r.result("epoch", err)
	if err != nil {
		return 0, fmt.Errorf("moving the cache epoch (%s): %w", mode, err)
	}
	r.adopt(n)
	return n, nil
}

// adopt moves to epoch n if it is above the one in use. Epochs only move
// up, so a value read before a move and handled after it, or an old
// announcement, changes nothing.
//
// L1 is cleared after the move (not before): a fill that looked up the old
// epoch then either finds its view changed, or stores into L1 before the
// clear and is dropped by it.
//
// The first epoch a process learns clears nothing: until then no lookup
// reached Redis (each one learns the epoch first), so L1 holds nothing read
// from any key space. (What L1 filled from AnqiCMS while Redis was away is
// cleared when the subscription first comes up.) Clearing there would split
// the flights of a cold start for nothing.
func (r *Redis) adopt(n int64) bool {
	var first bool
	for {
		cur := r.ev.Load()
		if n <= cur.epoch {
			return false
		}
		if r.ev.CompareAndSwap(cur, &epochView{epoch: n, view: cur.view + 1}) {
			first = cur.epoch == 0
			break
		}
	}
	r.m.RedisEpoch.Set(float64(n))
	if !first {
		r.o.OnClear()
		r.m.L1Clears.Inc()
	}
	return true
}

// checkEpoch handles an epoch seen in Redis ("" when missing) that is not
// mine, the one the caller used. Higher: adopt it. Missing or lower: Redis
// lost P:epoch (a flush, a restart, a failover, an eviction), so repair it
// above mine and announce that (clearing every replica's L1).
func (r *Redis) checkEpoch(ctx context.Context, seen string, mine int64) error {
	if n, err := strconv.ParseInt(seen, 10, 64); err == nil && n > mine {
		r.adopt(n)
		return nil
	}
	r.epochMu.Lock()
	defer r.epochMu.Unlock()
	if r.epoch() > mine {
		return nil // moved while this caller waited (a burst repairs once)
	}
	if seen != "" || mine != 0 {
		r.logEpochLost(seen, mine)
	}
	_, err := r.moveEpochLocked(ctx, "repair", mine, "")
	return err
}

// checkIncarnation notices that Redis restarted or another server took
// over (its run_id changed) and then moves every replica to a new epoch.
// A restart without persistence is caught by P:epoch going missing; this
// catches the rest: a restart that loaded an older snapshot, or a failover
// to a replica that lagged, brings back counters and entries from before
// the last invalidations, which a missing key cannot show. The first
// check only learns the run_id. Until a check runs (at the latest
// epochCheckEvery after Redis is back, sooner when the subscription
// reconnects) lookups may still see such an entry.
func (r *Redis) checkIncarnation(ctx context.Context) error {
	r.incMu.Lock()
	defer r.incMu.Unlock()
	if r.runIDOff {
		return nil
	}
	// Not fed to the breaker: a server that refuses INFO (an ACL without
	// it) is still a working cache.
	ids, err := r.runIDs(ctx)
	if redis.HasErrorPrefix(err, "NOPERM") || redis.HasErrorPrefix(err, "unknown command") {
		r.runIDOff = true
		r.log.Warn("Redis refuses INFO; restarts that bring back older data go unnoticed", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Redis's run_id: %w", err)
	}
	if r.runID != "" && r.runID != ids {
		r.log.Warn("Redis restarted or failed over; moving every replica to a new cache epoch", "run_id", ids, "was", r.runID)
		r.loadScripts(ctx)
		if _, err := r.moveEpoch(ctx, "restarted", r.epoch(), ids); err != nil {
			return err // r.runID unchanged: the next check tries again
		}
	}
	r.runID = ids
	return nil
}

// sameSlotKey returns key+suffix or a spelling of it that Redis Cluster
// hashes to key's slot, or "" if key's braces leave none.
func sameSlotKey(key, suffix string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			return key + suffix // key's own hash tag places both
		}
	}
	if strings.ContainsRune(key, '}') {
		return ""
	}
	return "{" + key + "}" + suffix
}

// runIDs returns the run_id of every master serving this tier, sorted: it
// changes whenever one of them restarts or another server takes over.
func (r *Redis) runIDs(ctx context.Context) (string, error) {
	cc, ok := r.c.(*redis.ClusterClient)
	if !ok {
		return runID(ctx, r.c)
	}
	var mu sync.Mutex
	var ids []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		id, err := runID(ctx, c)
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return err
	})
	slices.Sort(ids)
	return strings.Join(ids, ","), err
}

func runID(ctx context.Context, c redis.Cmdable) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(info) {
		if id, ok := strings.CutPrefix(line, "run_id:"); ok {
			return strings.TrimSpace(id), nil
		}
	}
	return "", errors.New("INFO server has no run_id")
}

func (r *Redis) logEpochLost(inRedis string, mine int64) {
	r.log.Warn("Redis lost the cache epoch; moving every replica to a new one", "epoch_in_redis", inRedis, "epoch", mine)
}

// setEpoch adopts epoch n announced by a message.
func (r *Redis) setEpoch(n int64) { r.adopt(n) }

// ensureEpoch re-reads the epoch when the one in use is not vouched for
// (on a cluster, where lookups do not read it).
func (r *Redis) ensureEpoch(ctx context.Context) error {
	if r.epochFresh() {
		return nil
	}
	return r.refreshEpoch(ctx, false)
}

func (r *Redis) epochFresh() bool { return time.Now().UnixNano() < r.epochFreshUntil.Load() }

// refreshEpoch reads P:epoch and adopts it, or repairs it when Redis lost
// it. The value is then trusted for epochTrust (epochTrustSubscribed while
// subscribed). Without force, a read that another caller made while this
// one waited for the lock is good enough: a burst of requests makes one
// GET, not one each.
func (r *Redis) refreshEpoch(ctx context.Context, force bool) error {
	r.epochMu.Lock()
	if !force && r.epochFresh() {
		r.epochMu.Unlock()
		return nil
	}
	mine := r.epoch()
	s, err := r.c.Get(ctx, r.epochKey()).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.epochMu.Unlock()
		r.result("epoch", err)
		return fmt.Errorf("reading the cache epoch: %w", err)
	}
	r.result("epoch", nil)
	if n, perr := strconv.ParseInt(s, 10, 64); perr != nil || n < mine {
		if s != "" || mine != 0 {
			r.logEpochLost(s, mine)
		}
		if _, err := r.moveEpochLocked(ctx, "repair", mine, ""); err != nil {
			r.epochMu.Unlock()
			return err
		}
	} else {
		r.adopt(n)
	}
	trust := epochTrust
	if r.subscribed.Load() {
		trust = epochTrustSubscribed
	}
	until := time.Now().Add(trust).UnixNano()
	for {
		cur := r.epochFreshUntil.Load()
		if cur >= until || r.epochFreshUntil.CompareAndSwap(cur, until) {
			break
		}
	}
	r.epochMu.Unlock()
	return nil
}

// Run keeps the subscription alive, drains the queue, sends the acks this
// replica owes other writers, probes Redis while the breaker is open, and
// checks once a second whether Redis lost or rolled back its data. It
// returns when ctx is done.
func (r *Redis) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.maintain(ctx)
	}()
	go func() {
		defer wg.Done()
		r.sendAcks(ctx)
	}()
	r.subscribe(ctx)
	wg.Wait()
}

func (r *Redis) maintain(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var lastEpochCheck time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		if time.Since(lastEpochCheck) >= epochCheckEvery && !r.blocked.Load() && r.brk.state(now) == BreakerClosed {
			// An idle replica notices a Redis that lost its data too (a
			// flush sends no message and breaks no connection).
			lastEpochCheck = time.Now()
			r.checkEpochAndIncarnation(ctx)
		}
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

// loadScripts puts every script into Redis's script cache (on a cluster,
// every master's), so the first calls after a start or a restart of Redis
// do not all answer NOSCRIPT and send their script again at once.
func (r *Redis) loadScripts(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for _, s := range []*redis.Script{getScript, fillScript, epochScript, invalidateScript} {
		if err := s.Load(ctx, r.c).Err(); err != nil {
			r.log.Debug("loading a script into Redis failed; it is sent with its first call", "err", err)
			return
		}
	}
}

// checkEpochAndIncarnation runs checkIncarnation, then re-reads the epoch
// (repairing it if Redis lost it), each bounded by a second.
func (r *Redis) checkEpochAndIncarnation(ctx context.Context) {
	ictx, cancel := context.WithTimeout(ctx, time.Second)
	if err := r.checkIncarnation(ictx); err != nil {
		r.log.Debug("checking whether Redis restarted failed", "err", err)
	}
	cancel()
	ectx, cancel := context.WithTimeout(ctx, time.Second)
	if err := r.refreshEpoch(ectx, true); err != nil {
		r.log.Debug("re-reading the cache epoch failed", "err", err)
	}
	cancel()
}

// subscribe listens for other replicas' invalidations. go-redis reconnects
// a connection that fails and re-sends SUBSCRIBE; a connection that goes
// silent is found by an unanswered ping and replaced. Every confirmation
// after a failure means messages may have been missed, so L1 is cleared and
// the epoch re-read.
func (r *Redis) subscribe(ctx context.Context) {
	var mu sync.Mutex // guards ps against the closer below
	// One connection hears both the invalidations and the acks of this
	// replica's own confirmed invalidations (confirm.go).
	channels := []string{r.o.Channel, r.ackChannel(r.o.ReplicaID)}
	ps := r.c.Subscribe(ctx, channels...)
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
					ps = r.c.Subscribe(ctx, channels...)
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
			// The ack channel is confirmed by the same SUBSCRIBE, right
			// after: only the invalidation channel's confirmation counts.
			if m.Kind != "subscribe" || m.Channel != r.o.Channel {
				continue
			}
			if !clean {
				r.o.OnClear()
				r.m.L1Clears.Inc()
			}
			clean = false // any later confirmation follows a reconnect
			r.subscribed.Store(true)
			r.m.PubSubUp.Set(1)
			// Bumps made while unsubscribed were not heard; nor is a Redis
			// that came back (a restart: the likeliest reason for the
			// reconnect, and one that emptied its script cache), which
			// this handles.
			r.loadScripts(ctx)
			r.checkEpochAndIncarnation(ctx)
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

// handle applies one pub/sub message: the publishing deployment's quoted
// key prefix (msgHead), then one of (see parseMessage)
//
//	o:ORDER:REPLICA       an invalidation
//	o:ORDER:REPLICA:SEQ   an invalidation whose writer waits for acks
//	e:EPOCH:REPLICA       an epoch move
//	a:SEQ:REPLICA         an ack of REPLICA's invalidation SEQ
//
// Messages of another deployment sharing the channel are ignored: its
// orders and epochs are another key space.
func (r *Redis) handle(payload string) {
	m, ok := parseMessage(payload, r.msgHead)
	if !ok {
		return
	}
	switch m.kind {
	case "o":
		if m.replica == r.o.ReplicaID {
			// Our own: L1 was invalidated before publishing. Its coming
			// back is our own ack: the script counted this subscription
			// among the receivers.
			if m.seq != 0 {
				r.acked(m.seq)
			}
			return
		}
		r.m.Invalidations.WithLabelValues("pubsub").Inc()
		// The originating replica logged it at info; here it is an echo.
		r.log.Debug("order invalidated by another replica", "order", m.num, "site", "*", "source", "pubsub", "replica", m.replica)
		r.o.OnRemoteInvalidate(m.num)
		// Only now: the ack promises that L1 no longer serves the order
		// and its watchers were woken.
		if m.seq != 0 {
			r.queueAck(ack{writer: m.replica, seq: m.seq})
		}
	case "e":
		r.setEpoch(m.num) // ignored unless above the epoch in use
	case "a":
		if m.replica == r.o.ReplicaID && m.num > 0 {
			r.acked(uint64(m.num))
		}
	}
}

// message is one parsed pub/sub message (see handle).
type message struct {
	kind    string
	num     int64 // the order, the epoch, or the acked SEQ
	replica string
	seq     uint64 // an invalidation's request for an ack; 0 = none
}

// parseMessage reads a message of the deployment whose messages start with
// head. An invalidation's SEQ follows its replica id, so replicas that
// predate acks read "REPLICA:SEQ" as a replica id that is not theirs and
// apply the invalidation as before (replica ids hold no ':' followed by
// digits only). An invalidation whose SEQ does not read is still applied,
// just not acked.
func parseMessage(payload, head string) (m message, ok bool) {
	body, ok := strings.CutPrefix(payload, head)
	if !ok {
		return m, false
	}
	kind, rest, _ := strings.Cut(body, ":")
	num, replica, ok := strings.Cut(rest, ":")
	if !ok {
		return m, false
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return m, false
	}
	m = message{kind: kind, num: n, replica: replica}
	if i := strings.LastIndexByte(replica, ':'); kind == "o" && i >= 0 {
		if seq, err := strconv.ParseUint(replica[i+1:], 10, 64); err == nil && seq > 0 {
			m.replica, m.seq = replica[:i], seq
		}
	}
	return m, true
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
		Epoch:      r.epoch(),
		Ping:       "ok",
	}
	if err := r.c.Ping(ctx).Err(); err != nil {
		st.Ping = err.Error()
	}
	return st
}
