package main

import (
	"sync"
	"time"
)

// An outage window: from just before the fault is injected to when the
// system is back (for Redis: back plus the settle time replicas need to
// close their breakers and resubscribe). end is zero while the window is
// still open.
type window struct{ start, end time.Time }

// windows records the outages as they happen. A window is opened before
// the fault is injected, so every answer the fault can spoil is looked up
// after its window exists.
type windows struct {
	mu    sync.Mutex
	cms   []window
	redis []window
}

func (w *windows) open(list *[]window, at time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	*list = append(*list, window{start: at})
	return len(*list) - 1
}

func (w *windows) close(list *[]window, i int, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	(*list)[i].end = at
}

// overlaps reports whether [s, e] overlaps a window of list.
func overlaps(list []window, s, e time.Time) bool {
	for _, win := range list {
		if !e.Before(win.start) && (win.end.IsZero() || !s.After(win.end)) {
			return true
		}
	}
	return false
}

// cmsOverlaps reports whether a request that ran over [s, e] overlapped an
// AnqiCMS outage: only then may it be answered 502/504.
func (w *windows) cmsOverlaps(s, e time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return overlaps(w.cms, s, e)
}

// redisLagUntil says how long another replica may still serve an order
// without a message whose send ran over [s, e]: when the send overlapped a
// Redis outage window, until memTTL after the later of the send's end and
// the window's end (forever while the window is open); otherwise not at
// all (ok false).
func (w *windows) redisLagUntil(s, e time.Time, memTTL time.Duration) (until time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, win := range w.redis {
		if !overlaps([]window{win}, s, e) {
			continue
		}
		if win.end.IsZero() {
			return time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), true
		}
		t := win.end
		if e.After(t) {
			t = e
		}
		t = t.Add(memTTL)
		if t.After(until) {
			until = t
		}
		ok = true
	}
	return until, ok
}

func (w *windows) counts() (cms, redis int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.cms), len(w.redis)
}
