package cache

import (
	"sync/atomic"
	"time"
)

// BreakerState is the Redis circuit breaker's state, as exported in metrics
// (the numeric values) and /readyz (the names).
type BreakerState int

const (
	BreakerClosed   BreakerState = 0 // Redis is used
	BreakerOpen     BreakerState = 1 // Redis is skipped until the cooldown ends
	BreakerHalfOpen BreakerState = 2 // one probe is in flight
)

func (s BreakerState) String() string {
	switch s {
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "closed"
}

// breaker skips Redis after `max` consecutive failures, so a dead or slow
// Redis costs one short timeout per cooldown instead of one per request.
// After the cooldown a single caller probes; its result closes or reopens.
// A probe that never reports (a caller that returned early) holds the slot
// for one cooldown only; then another caller may probe, so a forgotten
// report cannot leave the breaker half-open for ever.
type breaker struct {
	max      int32
	cooldown time.Duration

	failures  atomic.Int32
	openUntil atomic.Int64 // unix nanos; 0 = closed
	probeAt   atomic.Int64 // unix nanos the probe in flight started; 0 = none
}

func newBreaker(max int, cooldown time.Duration) *breaker {
	if max <= 0 {
		max = 5
	}
	if cooldown <= 0 {
		cooldown = time.Second
	}
	return &breaker{max: int32(max), cooldown: cooldown}
}

// allow reports whether a call may go to Redis now. In half-open state only
// the first caller gets true; it must report success or failure.
func (b *breaker) allow(now int64) bool {
	until := b.openUntil.Load()
	if until == 0 {
		return true
	}
	if now < until {
		return false
	}
	p := b.probeAt.Load()
	if p != 0 && now-p < int64(b.cooldown) {
		return false // one probe at a time
	}
	return b.probeAt.CompareAndSwap(p, max(now, 1))
}

func (b *breaker) success() {
	b.failures.Store(0)
	if b.openUntil.Load() != 0 {
		b.openUntil.Store(0)
	}
	b.probeAt.Store(0)
}

func (b *breaker) failure(now int64) {
	if b.probeAt.Load() != 0 || b.failures.Add(1) >= b.max {
		b.openUntil.Store(now + int64(b.cooldown))
		b.probeAt.Store(0)
	}
}

func (b *breaker) state(now int64) BreakerState {
	until := b.openUntil.Load()
	switch {
	case until == 0:
		return BreakerClosed
	case b.probeAt.Load() != 0 || now >= until:
		return BreakerHalfOpen
	}
	return BreakerOpen
}
