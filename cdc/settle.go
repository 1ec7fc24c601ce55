package cdc

import (
	"context"
	"sync"
	"time"
)

// The settle guard. The server may send a transaction's events to a binlog
// reader a moment before the commit is visible to other sessions (the binlog
// is written in the commit's prepare/flush phase, the storage engine commits
// after). So this can happen:
//
//	reader: event for order 7 arrives        → Invalidate(7)
//	proxy:  miss on 7, reads AnqiCMS          → AnqiCMS still sees the old row
//	server: commit becomes visible
//	proxy:  stores the old row under the new generation (nothing bumped it since)
//
// and the stale copy would live until cache.ttl. A second Invalidate after
// cdc.settle closes that window at the cost of at most one more refill per
// changed order. Checking visibility instead (re-reading the row over SQL
// until it shows the new image) would need SELECT grants and a query per
// row, and still race with the fill; the timer is simpler and bounded.
//
// Orders changed again before their settle fires are coalesced: each order
// has one pending deadline, moved to the latest change, so a burst of changes
// to one order costs one settle refill, not one per change.
type settler struct {
	delay time.Duration
	fire  func(ctx context.Context, order int64)

	mu    sync.Mutex
	due   map[int64]time.Time // latest deadline per order
	queue []settleItem        // deadlines in order (delay is constant)
	wake  chan struct{}
}

type settleItem struct {
	order int64
	due   time.Time
}

func newSettler(delay time.Duration, fire func(ctx context.Context, order int64)) *settler {
	return &settler{delay: delay, fire: fire, due: map[int64]time.Time{}, wake: make(chan struct{}, 1)}
}

// add schedules a second invalidation of orders after the delay.
func (s *settler) add(orders []int64) {
	if s.delay < 0 || len(orders) == 0 {
		return
	}
	due := time.Now().Add(s.delay)
	s.mu.Lock()
	wasEmpty := len(s.queue) == 0
	for _, o := range orders {
		s.due[o] = due
		s.queue = append(s.queue, settleItem{o, due})
	}
	s.mu.Unlock()
	if wasEmpty {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// pending reports how many orders wait for their settle invalidation.
func (s *settler) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.due)
}

// run fires due invalidations until ctx ends; pending ones are dropped then
// (the process is stopping or the reader is gone).
func (s *settler) run(ctx context.Context) {
	if s.delay < 0 {
		return
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		var ready []int64
		next := time.Duration(-1)
		s.mu.Lock()
		for len(s.queue) > 0 {
			it := s.queue[0]
			if it.due.After(now) {
				next = it.due.Sub(now)
				break
			}
			s.queue = s.queue[1:]
			// A later change moved this order's deadline: that later item fires.
			if d, ok := s.due[it.order]; ok && d.Equal(it.due) {
				delete(s.due, it.order)
				ready = append(ready, it.order)
			}
		}
		if len(s.queue) == 0 {
			s.queue = nil // let the backing array go
		}
		s.mu.Unlock()
		for _, o := range ready {
			s.fire(ctx, o)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if next >= 0 {
			timer.Reset(next)
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}
