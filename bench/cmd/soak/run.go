package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/bench/internal/harness"
)

const tokenSecret = "soak-token-secret"

// sample is one reading of a replica's RSS and goroutines.
type sample struct {
	at         time.Duration // since the load started
	rss        int64
	goroutines float64
	bodyAvg    float64 // detail body bytes, averaged since the previous sample
	conns      int     // the soak's open connections to the replica
}

// result is everything the summary reports.
type result struct {
	o          *options
	dir        string
	started    time.Time
	ended      time.Time
	rec        *recorder
	win        *windows
	reps       []string
	samples    [][]sample // per replica
	sampleErrs int
	flat       []flatRow
	sseEnded   int64
	health     *healthLog
	healthErrs int64 // failed health scrapes
	// answers a replica wrote on an idle client connection (no request
	// waiting), as net/http's Transport reported them
	unsolicited int64
}

func (r *result) violations() int64 { return r.rec.totalViolations() }

func (o *options) validate() error {
	switch {
	case o.users < 1 || o.ordersPerUser < 1:
		return errors.New("-users and -orders must be at least 1")
	case o.sseWatchers+o.pollWatchers > o.users:
		return errors.New("-sse-watchers + -poll-watchers must not exceed -users")
	case o.pace <= 0 || o.redisEvery <= 0 || o.cmsEvery <= 0 || o.sampleEvery <= 0 || o.window <= 0:
		return errors.New("-pace, -redis-every, -cms-every, -sample-every and -window must be positive")
	case o.warmup+2*o.window > o.duration:
		return fmt.Errorf("-duration %v is too short for the flatness check: it needs -warmup + 2×-window = %v", o.duration, o.warmup+2*o.window)
	}
	return nil
}

// logMu serialises writes to o.log: the fault loops, the sampler and
// net/http's Transport (through the standard logger) write concurrently,
// and o.log need not be safe for that (a test's buffer).
var logMu sync.Mutex

func (o *options) logf(format string, args ...any) {
	logMu.Lock()
	defer logMu.Unlock()
	fmt.Fprintf(o.log, "soak: "+format+"\n", args...)
}

type lockedWriter struct{ w io.Writer }

func (l *lockedWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return l.w.Write(p)
}

// run sets everything up, runs the load and the faults for o.duration,
// tears down, and returns the result (already printed to o.out).
func run(ctx context.Context, o *options) (res *result, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	redisBin, err := harness.LookTool("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (install it, e.g. `make bench-deps`): %w", err)
	}
	goBin, err := harness.LookTool("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "anqi-edge-soak-")
	if err != nil {
		return nil, err
	}
	res = &result{o: o, dir: dir}
	defer func() {
		if err != nil || o.keep || res.violations() > 0 {
			o.logf("work directory kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	o.logf("building anqi-edge from %s", root)
	bin, err := harness.BuildEdge(ctx, goBin, root, dir)
	if err != nil {
		return res, err
	}

	fk := fake.New(fake.Options{TokenSecret: tokenSecret,
		Latency: map[string]time.Duration{detailPath: o.detailLatency}})
	seeded, orders := fk.Seed(o.users, o.ordersPerUser)
	users := make([]*user, len(seeded))
	byID := map[int64]*user{}
	for i, su := range seeded {
		users[i] = &user{id: su.ID, token: fk.Token(su.ID, 30*24*time.Hour)}
		byID[su.ID] = users[i]
	}
	for _, or := range orders {
		u := byID[or.UserID]
		u.orders = append(u.orders, or.ID)
	}
	cms, err := startCMS(fk)
	if err != nil {
		return res, err
	}
	defer cms.stop()

	rs, err := startRedisServer(ctx, dir, redisBin)
	if err != nil {
		return res, err
	}
	defer rs.stop()

	var reps []*replica
	defer func() {
		for _, r := range reps {
			r.proc.Stop(5 * time.Second)
		}
	}()
	for _, name := range []string{"edge-a", "edge-b"} {
		r, err := startReplica(ctx, dir, bin, name, o.edge, "http://"+cms.addr, rs.addr, tokenSecret)
		if err != nil {
			return res, err
		}
		reps = append(reps, r)
		res.reps = append(res.reps, name)
	}
	o.logf("fake AnqiCMS %s, redis %s, replicas %s and %s; work directory %s",
		cms.addr, rs.addr, reps[0].base, reps[1].base, dir)

	stdlog, restoreLog := captureStdLog(&lockedWriter{w: o.log})
	defer restoreLog()
	rec, win := newRecorder(), &windows{}
	res.rec, res.win, res.started = rec, win, rec.start
	res.samples = make([][]sample, len(reps))
	l := newLoad(o, rec, win, reps)
	defer l.closeIdle()

	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	chaosErr := make(chan error, 2)
	var chaos, load sync.WaitGroup
	chaos.Go(func() {
		if err := faultLoop(loadCtx, o, "redis", o.redisEvery, o.redisDown, &win.redis, win,
			rs.kill, func() error { return rs.restart(context.Background()) }, o.redisSettle); err != nil {
			chaosErr <- err
			stopLoad()
		}
	})
	chaos.Go(func() {
		if err := faultLoop(loadCtx, o, "AnqiCMS", o.cmsEvery, o.cmsDown, &win.cms, win,
			cms.stop, cms.start, 0); err != nil {
			chaosErr <- err
			stopLoad()
		}
	})
	chaos.Go(func() { sampleLoop(loadCtx, o, reps, res, l.conns) })
	res.health = newHealthLog(len(reps))
	chaos.Go(func() { res.health.poll(loadCtx, o.healthEvery, reps, &res.healthErrs) })
	for i, u := range users {
		load.Go(func() { l.runUser(loadCtx, u) })
		switch {
		case i < o.sseWatchers:
			load.Go(func() { l.runSSE(loadCtx, u, u.orders[0]) })
		case i < o.sseWatchers+o.pollWatchers:
			load.Go(func() { l.runLongPoll(loadCtx, u, u.orders[0]) })
		}
	}
	o.logf("load running for %v: %d users, %d SSE and %d long-poll watchers", o.duration, o.users, o.sseWatchers, o.pollWatchers)
	<-loadCtx.Done()
	load.Wait()
	chaos.Wait() // a fault in progress is completed: Redis and AnqiCMS are up again
	res.ended = time.Now()
	res.sseEnded = l.sseEnded.Load()
	res.unsolicited = stdlog.unsolicited.Load()
	l.judgeLags(res.health)
	close(chaosErr)
	if err := <-chaosErr; err != nil {
		return res, err
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("interrupted after %v", time.Since(res.started).Round(time.Second))
	}

	// SIGTERM: each replica must drain and exit 0 (DESIGN §6).
	for _, r := range reps {
		r.proc.Stop(15 * time.Second)
		if err := r.proc.WaitErr(); err != nil {
			rec.violate(vExit, "%s after SIGTERM: %v; log %s:\n%s", r.name, err, r.proc.LogPath, r.proc.Tail())
		}
	}
	res.flat = flatness(o, res)
	for _, f := range res.flat {
		if !f.ok {
			rec.violate(vFlat, "%s %s: end %.1f > limit %.1f (baseline %.1f)", f.replica, f.metric, f.end, f.limit, f.base)
		}
	}
	res.print(o.out)
	return res, nil
}

// faultLoop injects one fault every `every`: it opens the outage window,
// breaks (kill), waits `down`, repairs (restart) and closes the window
// `settle` after the repair. A fault that has begun is always completed,
// so the soak never ends with Redis or AnqiCMS down.
func faultLoop(ctx context.Context, o *options, what string, every, down time.Duration, list *[]window, win *windows,
	kill func(), restart func() error, settle time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if ctx.Err() != nil {
			return nil // the tick and the end came together: no fault after the load
		}
		i := win.open(list, time.Now())
		kill()
		time.Sleep(down)
		if err := restart(); err != nil {
			return err
		}
		back := time.Now()
		win.close(list, i, back.Add(settle))
		o.logf("t=%4.0fs %s down and back (%v)", back.Sub(start).Seconds(), what, down)
	}
}

// sampleLoop reads each replica's RSS and goroutines every o.sampleEvery.
func sampleLoop(ctx context.Context, o *options, reps []*replica, res *result, conns *connCounter) {
	c := &http.Client{Timeout: 5 * time.Second}
	t := time.NewTicker(o.sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := time.Since(res.started)
		body := res.rec.takeBodyAvg()
		for i, r := range reps {
			rss, err1 := r.rss()
			g, err2 := r.goroutines(ctx, c)
			if err := errors.Join(err1, err2); err != nil {
				if ctx.Err() == nil {
					res.sampleErrs++
					o.logf("sampling %s: %v", r.name, err)
				}
				continue
			}
			host := strings.TrimPrefix(r.base, "http://")
			res.samples[i] = append(res.samples[i], sample{at: at, rss: rss, goroutines: g, bodyAvg: body, conns: conns.count(host)})
		}
	}
}

// flatRow is the flatness verdict for one metric of one replica.
type flatRow struct {
	replica, metric  string
	base, end, limit float64
	baseN, endN      int
	ok               bool
	info             bool // shown for context, not judged
}

// flatness compares the average over [warmup, warmup+window) with the
// average over the last window: end ≤ base·(1+flatRatio) + slack.
func flatness(o *options, res *result) []flatRow {
	var rows []flatRow
	var bodyB, bodyE []float64
	for _, s := range res.samples[0] {
		if s.at >= o.warmup && s.at < o.warmup+o.window {
			bodyB = append(bodyB, s.bodyAvg)
		}
		if s.at >= o.duration-o.window {
			bodyE = append(bodyE, s.bodyAvg)
		}
	}
	for i, name := range res.reps {
		var rssB, rssE, gB, gE, cB, cE []float64
		for _, s := range res.samples[i] {
			if s.at >= o.warmup && s.at < o.warmup+o.window {
				rssB = append(rssB, float64(s.rss)/(1<<20))
				gB = append(gB, s.goroutines)
				cB = append(cB, float64(s.conns))
			}
			if s.at >= o.duration-o.window {
				rssE = append(rssE, float64(s.rss)/(1<<20))
				gE = append(gE, s.goroutines)
				cE = append(cE, float64(s.conns))
			}
		}
		for _, m := range []struct {
			metric    string
			base, end []float64
			slack     float64
		}{
			{"RSS MiB", rssB, rssE, float64(o.rssSlack) / (1 << 20)},
			{"goroutines", gB, gE, o.goroutineSlack},
		} {
			row := flatRow{replica: name, metric: m.metric, base: avg(m.base), end: avg(m.end), baseN: len(m.base), endN: len(m.end)}
			row.limit = row.base*(1+o.flatRatio) + m.slack
			row.ok = len(m.base) > 0 && len(m.end) > 0 && row.end <= row.limit
			rows = append(rows, row)
		}
		// Each client connection is a goroutine in the replica.
		rows = append(rows, flatRow{replica: name, metric: "soak's connections to it (info)", base: avg(cB), end: avg(cE),
			baseN: len(cB), endN: len(cE), ok: true, info: true})
	}
	// The orders grow by every message sent, and the replicas cache them:
	// part of any RSS growth is data, not a leak. Shown for that reading.
	rows = append(rows, flatRow{replica: "both", metric: "detail body bytes (info)", base: avg(bodyB), end: avg(bodyE),
		baseN: len(bodyB), endN: len(bodyE), ok: true, info: true})
	return rows
}

func avg(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
