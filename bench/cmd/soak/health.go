package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// healthPoint is one scrape of a replica's Redis state. The state was
// read at some moment in [start, end].
type healthPoint struct {
	start, end time.Time
	errors     float64 // anqi_edge_redis_errors_total, summed over op
	breaker    float64 // anqi_edge_redis_breaker_state: 0 closed
	pending    float64 // anqi_edge_redis_pending_invalidations
	pubsubUp   float64 // anqi_edge_pubsub_up
}

func (p healthPoint) clean() bool { return p.breaker == 0 && p.pending == 0 && p.pubsubUp == 1 }

// healthLog is each replica's Redis state over the run, scraped every few
// hundred milliseconds from its admin /metrics. Redis can be out of reach
// for a replica without the soak killing it: a command times out
// (redis.timeout, 100ms) when a 2-core machine is busy. A send whose
// invalidation timed out is queued on its replica and not published, and
// DESIGN §4 then bounds the other replica's lag by cache.memory.ttl after
// the queue is replayed; the log tells such sends from those that reached
// Redis.
type healthLog struct {
	mu     sync.Mutex
	points [][]healthPoint // per replica, in scrape order
}

func newHealthLog(n int) *healthLog { return &healthLog{points: make([][]healthPoint, n)} }

// poll scrapes every replica every `every` until ctx ends.
func (h *healthLog) poll(ctx context.Context, every time.Duration, reps []*replica, failures *int64) {
	c := &http.Client{Timeout: 5 * time.Second}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for i, r := range reps {
			p, err := scrapeHealth(ctx, c, r)
			if err != nil {
				if ctx.Err() == nil {
					h.mu.Lock()
					*failures++
					h.mu.Unlock()
				}
				continue
			}
			h.mu.Lock()
			h.points[i] = append(h.points[i], p)
			h.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func scrapeHealth(ctx context.Context, c *http.Client, r *replica) (healthPoint, error) {
	p := healthPoint{start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.admin+"/metrics", nil)
	if err != nil {
		return p, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return p, fmt.Errorf("GET %s/metrics: %s", r.admin, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	p.end = time.Now()
	if err != nil {
		return p, fmt.Errorf("parsing %s/metrics: %w", r.admin, err)
	}
	sum := func(name string) (float64, bool) {
		mf := mfs[name]
		if mf == nil {
			return 0, false
		}
		var s float64
		for _, m := range mf.GetMetric() {
			s += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return s, true
	}
	var ok [4]bool
	p.errors, ok[0] = sum("anqi_edge_redis_errors_total")
	p.breaker, ok[1] = sum("anqi_edge_redis_breaker_state")
	p.pending, ok[2] = sum("anqi_edge_redis_pending_invalidations")
	p.pubsubUp, ok[3] = sum("anqi_edge_pubsub_up")
	// A counter vector without children is not exported: no errors yet.
	ok[0] = true
	for i, o := range ok {
		if !o {
			return p, fmt.Errorf("%s/metrics lacks metric %d of redis_errors_total, redis_breaker_state, redis_pending_invalidations, pubsub_up", r.admin, i)
		}
	}
	return p, nil
}

// trouble reports whether replica i may have been unable to reach Redis
// (or to hear pub/sub) at some moment in [s, e]: unless a scrape that
// ended before s and one that started after e show the same error count,
// and every scrape between them (those two included) shows the breaker
// closed, nothing queued and the subscription up, it may have.
func (h *healthLog) trouble(i int, s, e time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	pts := h.points[i]
	first := sort.Search(len(pts), func(k int) bool { return !pts[k].end.Before(s) }) - 1 // last with end < s
	last := sort.Search(len(pts), func(k int) bool { return !pts[k].start.Before(e) })    // first with start >= e
	if first < 0 || last >= len(pts) {
		return true
	}
	if pts[last].errors != pts[first].errors {
		return true
	}
	for k := first; k <= last; k++ {
		if !pts[k].clean() {
			return true
		}
	}
	return false
}

// clearAfter is the end of the first scrape started at or after e that
// shows replica i clean (breaker closed, queue replayed, subscribed); far
// in the future when there is none.
func (h *healthLog) clearAfter(i int, e time.Time) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	pts := h.points[i]
	for k := sort.Search(len(pts), func(k int) bool { return !pts[k].start.Before(e) }); k < len(pts); k++ {
		if pts[k].clean() {
			return pts[k].end
		}
	}
	return farFuture
}

var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
