package cache

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The breaker takes the time as an argument, so these tests drive a clock
// of their own and never sleep.

func TestBreaker_OpensAfterConsecutiveFailuresOnly(t *testing.T) {
	b := newBreaker(3, time.Second)
	now := int64(1_000_000_000)
	for range 5 { // failures separated by a success never add up
		b.failure(now)
		b.failure(now)
		b.success()
	}
	if !b.allow(now) || b.state(now) != BreakerClosed {
		t.Fatalf("non-consecutive failures opened the breaker: %v", b.state(now))
	}
	b.failure(now)
	b.failure(now)
	if !b.allow(now) {
		t.Fatal("opened after 2 of 3 failures")
	}
	b.failure(now)
	if b.allow(now) || b.state(now) != BreakerOpen {
		t.Fatalf("3 consecutive failures: allow=true state=%v, want open", b.state(now))
	}
	if b.allow(now + int64(time.Second) - 1) {
		t.Fatal("allowed a call before the cooldown ended")
	}
}

func TestBreaker_AfterTheCooldownExactlyOneCallerProbes(t *testing.T) {
	b := newBreaker(1, time.Second)
	now := int64(1_000_000_000)
	b.failure(now)
	later := now + int64(time.Second)
	if s := b.state(later); s != BreakerHalfOpen {
		t.Fatalf("state after cooldown %v, want half-open", s)
	}
	var granted atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.allow(later) {
				granted.Add(1)
			}
		}()
	}
	wg.Wait()
	if g := granted.Load(); g != 1 {
		t.Fatalf("%d concurrent callers probed, want 1", g)
	}
}

func TestBreaker_ProbeResultClosesOrReopens(t *testing.T) {
	b := newBreaker(1, time.Second)
	now := int64(1_000_000_000)
	b.failure(now)

	now += int64(time.Second)
	if !b.allow(now) {
		t.Fatal("no probe after cooldown")
	}
	b.failure(now) // the probe failed: open for another cooldown
	if b.allow(now+int64(time.Second)-1) || b.state(now+1) != BreakerOpen {
		t.Fatalf("failed probe did not reopen the breaker: %v", b.state(now+1))
	}

	now += int64(time.Second)
	if !b.allow(now) {
		t.Fatal("no second probe after the second cooldown")
	}
	b.success()
	if b.state(now) != BreakerClosed {
		t.Fatalf("successful probe: state %v, want closed", b.state(now))
	}
	for range 3 {
		if !b.allow(now) {
			t.Fatal("closed breaker refused a call")
		}
	}
}

// A caller that takes the probe and never reports (it returned early) must
// not leave the breaker half-open for ever: the slot frees after a cooldown.
func TestBreaker_AProbeThatNeverReportsDoesNotWedgeIt(t *testing.T) {
	b := newBreaker(1, time.Second)
	now := int64(1_000_000_000)
	b.failure(now)
	now += int64(time.Second)
	if !b.allow(now) {
		t.Fatal("no probe after cooldown")
	}
	// ... and the prober forgets to report.
	if b.allow(now + int64(time.Second) - 1) {
		t.Fatal("a second probe while the first may still be running")
	}
	if !b.allow(now + int64(time.Second)) {
		t.Fatal("probe slot still held a cooldown after a probe that never reported")
	}
	b.success()
	if b.state(now+int64(time.Second)) != BreakerClosed {
		t.Fatal("did not close after the replacement probe succeeded")
	}
}

func TestBreaker_DefaultsAndNames(t *testing.T) {
	b := newBreaker(0, 0)
	if b.max != 5 || b.cooldown != time.Second {
		t.Fatalf("defaults: max %d cooldown %v, want 5 and 1s", b.max, b.cooldown)
	}
	for s, want := range map[BreakerState]string{BreakerClosed: "closed", BreakerOpen: "open", BreakerHalfOpen: "half-open"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
	// /metrics exports the numbers: 0 closed, 1 open, 2 half-open.
	if BreakerClosed != 0 || BreakerOpen != 1 || BreakerHalfOpen != 2 {
		t.Fatal("breaker state numbers changed; the dashboards read them")
	}
}
