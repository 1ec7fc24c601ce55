package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"anqi-edge/cdc"
)

// probe splits the CDC delay into its stages from the outside:
//   - binlog: anqi-edge's own binlog reader (package cdc), run inside
//     cdcbench with its own server id, notes when each order's row event
//     reaches Invalidate — commit to "the change is read from the binlog";
//   - upstream: every detail answer of the fake AnqiCMS is timed — the refill.
//
// What is left of a watcher's delay (SSE, long-poll) is anqi-edge's
// invalidation (Redis, pub/sub to the other replica, waking the watchers),
// the refill's queueing, and the write to the client.
type probe struct {
	mu       sync.Mutex
	inval    map[int64][]time.Time // order -> times its row events were read
	upstream []time.Duration       // detail answers of the fake
	refills  map[int64][]span      // order -> its detail answers, in start order
}

// span is one detail answer of the fake: when the request arrived and when
// the answer was written.
type span struct{ start, end time.Time }

func newProbe() *probe {
	return &probe{inval: map[int64][]time.Time{}, refills: map[int64][]span{}}
}

// runReader reads the binlog of addr until ctx ends.
func (p *probe) runReader(ctx context.Context, addr string) error {
	r, err := cdc.New(cdc.Options{
		Addr: addr, User: cdcUser, Password: cdcPassword, ServerID: 4242,
		Tables: []cdc.Table{{Name: "communication_orders", OrderColumn: "id"},
			{Name: "communication_messages", OrderColumn: "comm_order_id"}},
		Settle: -1, // the first invalidation is what is timed
		Invalidate: func(_ context.Context, order int64) error {
			now := time.Now()
			p.mu.Lock()
			p.inval[order] = append(p.inval[order], now)
			p.mu.Unlock()
			return nil
		},
		ResetAll: func(context.Context) error { return nil },
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// readAt is when the probe's reader first saw a change of order made by a
// request that started at start.
func (p *probe) readAt(order int64, start time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := p.inval[order]
	i := sort.Search(len(ts), func(i int) bool { return !ts[i].Before(start) })
	if i == len(ts) {
		return time.Time{}, false
	}
	return ts[i], true
}

// refillAfter is the first detail answer for order whose request arrived
// at or after t: the refill an invalidation read at t caused (the first of
// the replicas to ask).
func (p *probe) refillAfter(order int64, t time.Time) (span, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, sp := range p.refills[order] {
		if !sp.start.Before(t) {
			return sp, true
		}
	}
	return span{}, false
}

// lastRefillBefore is the latest end, before served, of a detail answer for
// order that began at or after t: the refill that served a client at served.
func (p *probe) lastRefillBefore(order int64, t, served time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, sp := range p.refills[order] {
		if !sp.start.Before(t) && !sp.end.After(served) && sp.end.After(last) {
			last = sp.end
		}
	}
	return last, !last.IsZero()
}

// timeUpstream wraps the fake, timing its detail answers.
func (p *probe) timeUpstream(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != detailPath {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		h.ServeHTTP(w, r)
		end := time.Now()
		order, _ := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
		p.mu.Lock()
		p.upstream = append(p.upstream, end.Sub(start))
		p.refills[order] = append(p.refills[order], span{start, end})
		p.mu.Unlock()
	})
}

// upstreamSince returns the detail answers timed since mark (an index from
// upstreamMark).
func (p *probe) upstreamMark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.upstream)
}

func (p *probe) upstreamSince(mark int) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.upstream[mark:]...)
}

// serve serves h on a free port of 127.0.0.1 until ctx ends.
func serve(ctx context.Context, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	return "http://" + ln.Addr().String(), nil
}
