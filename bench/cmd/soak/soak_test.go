package main

import (
	"bytes"
	"context"
	stdlog "log"
	"testing"
	"time"

	"anqi-edge/bench/internal/harness"
)

// The whole soak, compressed: 20 s of load while Redis is killed every 6 s
// and AnqiCMS restarted every 9 s, every answer checked as in a full run.
// It builds anqi-edge and needs redis-server; -short skips it.
func TestSoak_CompressedRunHasNoViolations(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the compressed soak takes about a minute")
	}
	if _, err := harness.LookTool("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	o := defaultOptions()
	o.duration = 20 * time.Second
	o.users, o.sseWatchers, o.pollWatchers = 100, 10, 10
	o.redisEvery, o.redisDown = 6*time.Second, 500*time.Millisecond
	o.cmsEvery, o.cmsDown = 9*time.Second, time.Second
	o.warmup, o.window, o.sampleEvery = 4*time.Second, 5*time.Second, time.Second
	var out, log bytes.Buffer
	o.out, o.log = &out, &log

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := run(ctx, &o)
	t.Logf("progress:\n%s\nsummary:%s", log.String(), out.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := res.violations(); n > 0 {
		t.Fatalf("%d violations (summary above; work directory %s)", n, res.dir)
	}
	rec := res.rec
	if rec.kinds[kindDetail] == nil || rec.kinds[kindDetail].ok == 0 || rec.sends == 0 || rec.rywChecks == 0 {
		t.Fatalf("the load did not run: detail %+v, sends %d, read-your-writes checks %d", rec.kinds[kindDetail], rec.sends, rec.rywChecks)
	}
	if cms, redis := res.win.counts(); cms < 2 || redis < 3 {
		t.Fatalf("faults injected: AnqiCMS %d, Redis %d; want at least 2 and 3", cms, redis)
	}
}

// The allowances are exactly as wide as documented: a 502 only for a
// request that overlapped an AnqiCMS outage, and another replica's lag
// only for a send that overlapped a Redis outage, until cache.memory.ttl
// after the later of the send's answer and the window's end.
func TestWindows_AllowOnlyWhatOverlapsAnOutage(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	w := &windows{}
	c := w.open(&w.cms, at(10))
	w.close(&w.cms, c, at(13))
	r := w.open(&w.redis, at(20))
	w.close(&w.redis, r, at(24))

	for _, tc := range []struct {
		s, e float64
		want bool
	}{{8, 9.9, false}, {9, 10, true}, {11, 12, true}, {12.5, 14, true}, {13.1, 15, false}} {
		if got := w.cmsOverlaps(at(tc.s), at(tc.e)); got != tc.want {
			t.Errorf("request %v..%vs overlaps the AnqiCMS outage 10..13s: %v, want %v", tc.s, tc.e, got, tc.want)
		}
	}
	if _, ok := w.redisLagUntil(at(18), at(19.9), time.Second); ok {
		t.Error("a send answered before the Redis outage may lag")
	}
	if until, ok := w.redisLagUntil(at(21), at(22), time.Second); !ok || !until.Equal(at(25)) {
		t.Errorf("send 21..22s in Redis outage 20..24s: lag until %v (%v), want 25s (window end + memory ttl)", until.Sub(t0), ok)
	}
	if until, ok := w.redisLagUntil(at(23.5), at(26), time.Second); !ok || !until.Equal(at(27)) {
		t.Errorf("send 23.5..26s: lag until %v (%v), want 27s (send end + memory ttl)", until.Sub(t0), ok)
	}
	open := w.open(&w.redis, at(40))
	if until, ok := w.redisLagUntil(at(41), at(41.1), time.Second); !ok || until.Before(at(1e6)) {
		t.Errorf("send during an open Redis outage: lag until %v, want unbounded until the window closes", until.Sub(t0))
	}
	w.close(&w.redis, open, at(42))
}

// net/http's Transport reports a server's answer on an idle connection
// only through the standard logger; the summary counts those lines.
func TestStdLog_CountsUnsolicitedResponses(t *testing.T) {
	var buf bytes.Buffer
	c, restore := captureStdLog(&buf)
	defer restore()
	stdlog.Printf(`Unsolicited response received on idle HTTP channel starting with "HTTP/1.1 400 Bad Request"; err=<nil>`)
	stdlog.Printf("something else")
	if got := c.unsolicited.Load(); got != 1 {
		t.Errorf("counted %d unsolicited responses, want 1", got)
	}
	if !bytes.Contains(buf.Bytes(), []byte("something else")) {
		t.Errorf("other log lines are not passed on: %q", buf.String())
	}
}

// Another replica may lag only when the scrapes around a send do not show
// both replicas clean: same error count before and after, breaker closed,
// nothing queued, pub/sub up.
func TestHealthLog_TroubleOnlyWhenTheScrapesDoNotProveRedisWasReached(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	clean := func(s, errs float64) healthPoint {
		return healthPoint{start: at(s), end: at(s + 0.01), errors: errs, pubsubUp: 1}
	}
	h := newHealthLog(1)
	queued := clean(3, 1)
	queued.pending = 1
	h.points[0] = []healthPoint{clean(0, 0), clean(1, 0), clean(2, 1), queued, clean(4, 1), clean(5, 1)}

	for _, tc := range []struct {
		s, e float64
		want bool
	}{
		{0.5, 0.6, false}, // 0 errors before and after
		{1.5, 1.6, true},  // the error count moved
		{3.5, 3.6, true},  // something queued at the scrape before
		{4.5, 4.6, false},
		{5.5, 5.6, true}, // no scrape after: unknown counts as trouble
		{-1, -0.5, true}, // no scrape before
	} {
		if got := h.trouble(0, at(tc.s), at(tc.e)); got != tc.want {
			t.Errorf("send %v..%vs: trouble %v, want %v", tc.s, tc.e, got, tc.want)
		}
	}
	if got := h.clearAfter(0, at(2.5)); !got.Equal(at(4.01)) {
		t.Errorf("clean again after the queue at %v, want 4.01s", got.Sub(t0))
	}
	if got := h.clearAfter(0, at(5.5)); !got.Equal(farFuture) {
		t.Errorf("no scrape after 5.5s: clean again at %v, want never", got)
	}
}
