package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/bench/internal/harness"
)

const (
	detailPath  = "/api/communication/order/detail"
	tokenSecret = "edgebench-secret"
	// ceilingLabel names the bench/cmd/ceiling row of the hot-key table,
	// the limit an L1 hit is held to; bareLabel the ceiling without
	// anqi-edge's listener timeouts, for reference.
	ceilingLabel = "bare fasthttp ceiling (same bytes, one map lookup, anqi-edge's listener timeouts)"
	bareLabel    = "bare fasthttp, no timeouts (reference)"
)

// target is one system under test, addressed by its detail URL.
type target struct {
	name  string // short id
	label string // table label
	base  string // http://127.0.0.1:PORT
	edge  *edge  // nil for nginx and direct
	pid   int    // process whose CPU time is charged to this system
	tree  bool   // also charge pid's descendants (nginx workers)
	// sidePID is a helper whose CPU is reported beside the system's own
	// (redis-server for the Redis-tier set-ups), 0 = none.
	sidePID int
}

func (t target) url(order int64) string {
	return t.base + detailPath + "?id=" + strconv.FormatInt(order, 10)
}

func (t target) hostPort() string {
	u, _ := url.Parse(t.base)
	return u.Host
}

// hotResult is every wrk round of one target.
type hotResult struct {
	target    target
	rounds    []wrkResult
	upstream  int64   // detail calls the fake saw during the measured runs
	edgeHits  float64 // anqi-edge X-Cache HIT answers during the measured runs (from /metrics)
	bodyBytes int     // detail body size
}

func (h *hotResult) medianRPS() float64 {
	return median(h.rounds, func(r wrkResult) float64 { return r.RPS })
}

func (h *hotResult) medianP99() time.Duration {
	return time.Duration(median(h.rounds, func(r wrkResult) float64 { return float64(r.P99) }))
}

// medianCores is the median CPU the system under test used, in cores.
func (h *hotResult) medianCores() float64 {
	return median(h.rounds, func(r wrkResult) float64 { return r.ServerCPU.Seconds() / r.Wall.Seconds() })
}

// medianPerCore is the median of requests per CPU-second of the system
// under test: throughput with the noise of CPU sharing taken out.
func (h *hotResult) medianPerCore() float64 {
	return median(h.rounds, func(r wrkResult) float64 {
		if r.ServerCPU <= 0 {
			return 0
		}
		return float64(r.Requests) / r.ServerCPU.Seconds()
	})
}

func (h *hotResult) medianP50() time.Duration {
	return time.Duration(median(h.rounds, func(r wrkResult) float64 { return float64(r.P50) }))
}

func median[T any](xs []T, f func(T) float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// results is everything the report needs.
type results struct {
	opts       options
	env        machine
	hot        []*hotResult
	storms     []stormResult
	polls      []pollResult
	profile    *cpuProfile // when profiled
	profileErr string
	// The Redis-tier hit's profile, taken when it misses its CPU target.
	redisProfile    *cpuProfile
	redisProfileErr string
}

func bench(ctx context.Context, o options) (err error) {
	if err := needTools(); err != nil {
		return err
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		return err
	}
	if o.readme == "" {
		o.readme = filepath.Join(root, "bench", "README.md")
	}
	dir, err := os.MkdirTemp("", "edgebench-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep || err != nil {
			logf("work directory kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	res := &results{opts: o, env: describeMachine()}
	res.env.tree = gitState(root)
	logf("machine: %d CPUs, %s, %s; %s; %s; %s", res.env.nproc, res.env.cpu, res.env.kernel, res.env.goVersion, res.env.nginx, res.env.wrk)

	logf("building anqi-edge and the bare fasthttp ceiling")
	bin, err := harness.BuildEdge(ctx, tools["go"], root, dir)
	if err != nil {
		return err
	}
	ceilingBin, err := buildCeiling(ctx, root, dir)
	if err != nil {
		return err
	}

	// The fake AnqiCMS runs in this process, so its call counters are read
	// directly. It is idle while the caches are measured, except for the
	// "direct" rows, where it is the system under test.
	fk := fake.New(fake.Options{TokenSecret: tokenSecret,
		Latency: map[string]time.Duration{detailPath: o.detailLatency}})
	users, orders := fk.Seed(1, 1)
	token := fk.Token(users[0].ID, 30*24*time.Hour)
	hotOrder := orders[0].ID
	fakeBase, err := fk.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer fk.Close()
	calls := func() int64 { return fk.Calls(detailPath) }
	coldOrder := func(what string) int64 {
		return fk.AddOrder(fake.Order{UserID: users[0].ID, Title: "edgebench " + what,
			Content: "cold order for the " + what, OrderExtra: map[string]any{"size": "M"},
			Messages: []fake.Message{{SenderID: users[0].ID, SenderType: "user", SenderName: users[0].Name, Content: "hello"}}}).ID
	}

	var procs harness.Group
	defer procs.StopAll()

	logf("starting redis-server")
	rp, redisAddr, err := harness.StartRedis(ctx, dir, tools["redis-server"], 0)
	if err != nil {
		return err
	}
	procs.Add(rp)
	res.env.redis = redisVersion()

	specs := []edgeSpec{
		{name: "l1", label: "anqi-edge L1 only", l1: true, ttl: 30 * time.Second, pprof: true, keyspace: "eb-l1"},
		{name: "l1redis", label: "anqi-edge L1 + Redis", l1: true, redis: true, ttl: 30 * time.Second, keyspace: "eb-l1redis"},
		{name: "redis", label: "anqi-edge Redis only", redis: true, ttl: 30 * time.Second, pprof: true, keyspace: "eb-redis"},
	}
	var edges []*edge
	for _, s := range specs {
		logf("starting %s", s.label)
		e, err := startEdge(ctx, dir, bin, s, fakeBase, tokenSecret, redisAddr)
		if err != nil {
			return err
		}
		procs.Add(e.proc)
		edges = append(edges, e)
	}
	logf("starting nginx (%d workers)", runtime.NumCPU())
	np, nports, err := startNginx(ctx, dir, runtime.NumCPU(), strings.TrimPrefix(fakeBase, "http://"), o.pollTTL)
	if err != nil {
		return err
	}
	procs.Add(np)

	// The ceiling replays anqi-edge L1's own hit for the hot order, so it is
	// started once L1 holds it.
	l1Hot := target{base: edges[0].base}.url(hotOrder)
	if _, _, err := warm(ctx, target{label: specs[0].label, base: edges[0].base}, hotOrder, token); err != nil {
		return err
	}
	logf("starting the bare fasthttp ceiling, with and without anqi-edge's listener timeouts (replays %s)", l1Hot)
	cp, ceilingBase, err := startCeiling(ctx, dir, ceilingBin, "ceiling", l1Hot, token, true)
	if err != nil {
		return err
	}
	procs.Add(cp)
	bp, bareBase, err := startCeiling(ctx, dir, ceilingBin, "ceiling-bare", l1Hot, token, false)
	if err != nil {
		return err
	}
	procs.Add(bp)

	targets := []target{
		{name: "l1", label: specs[0].label, base: edges[0].base, edge: edges[0], pid: edges[0].proc.PID()},
		{name: "l1redis", label: specs[1].label, base: edges[1].base, edge: edges[1], pid: edges[1].proc.PID(), sidePID: rp.PID()},
		{name: "redis", label: specs[2].label, base: edges[2].base, edge: edges[2], pid: edges[2].proc.PID(), sidePID: rp.PID()},
		{name: "nginx", label: "nginx proxy_cache", base: fmt.Sprintf("http://127.0.0.1:%d", nports.hot), pid: np.PID(), tree: true},
		// The fake runs in this process, which is otherwise idle during the run.
		{name: "direct", label: "direct (fake AnqiCMS, no cache)", base: fakeBase, pid: os.Getpid()},
		// The limit: fasthttp answering L1's bytes after one map lookup.
		{name: "ceiling", label: ceilingLabel, base: ceilingBase, pid: cp.PID()},
		{name: "bare", label: bareLabel, base: bareBase, pid: bp.PID()},
	}

	// Reference body straight from the fake; every cache must serve it byte for byte.
	ref, _, err := get(ctx, targets[4].url(hotOrder), token)
	if err != nil {
		return fmt.Errorf("reading the hot order from the fake: %w", err)
	}

	// 1. Hot key.
	for _, t := range targets {
		res.hot = append(res.hot, &hotResult{target: t, bodyBytes: len(ref)})
	}
	for _, h := range res.hot {
		body, label, err := warm(ctx, h.target, hotOrder, token)
		if err != nil {
			return err
		}
		if !bytes.Equal(body, ref) {
			return fmt.Errorf("%s serves a different body for order %d than the fake (%d vs %d bytes)", h.target.label, hotOrder, len(body), len(ref))
		}
		if h.target.name != "direct" && label != "HIT" {
			return fmt.Errorf("%s: second request for the hot key answered X-Cache %q, want HIT", h.target.label, label)
		}
	}
	for round := 1; round <= o.rounds; round++ {
		for _, h := range res.hot {
			if err := ctx.Err(); err != nil {
				return errInterrupted
			}
			if _, _, err := warm(ctx, h.target, hotOrder, token); err != nil {
				return err
			}
			c0, hits0 := calls(), edgeHits(ctx, h.target.edge)
			cpu0, cpuOK := cpuOf(h.target.pid, h.target.tree)
			side0, sideOK := cpuOf(h.target.sidePID, false)
			r, err := runWrk(ctx, o.threads, o.conns, o.duration, token, h.target.url(hotOrder))
			if err != nil {
				return err
			}
			if cpu1, ok := cpuOf(h.target.pid, h.target.tree); ok && cpuOK {
				r.ServerCPU = cpu1 - cpu0
			}
			if side1, ok := cpuOf(h.target.sidePID, false); ok && sideOK && h.target.sidePID != 0 {
				r.SideCPU = side1 - side0
			}
			up := calls() - c0
			h.upstream += up
			h.edgeHits += edgeHits(ctx, h.target.edge) - hits0
			h.rounds = append(h.rounds, r)
			logf("hot round %d/%d %-32s %9.0f req/s  p50 %-9s p99 %-9s CPU: server %.2f, wrk %.2f cores; upstream calls %d; non-2xx %d, socket errors %d",
				round, o.rounds, h.target.label, r.RPS, fmtDur(r.P50), fmtDur(r.P99),
				r.ServerCPU.Seconds()/r.Wall.Seconds(), r.ClientCPU.Seconds()/r.Wall.Seconds(), up, r.Non2xx, r.SockErrs)
		}
	}
	l1, ng, ceil := res.hot[0], res.hot[3], res.hot[5]
	ratio := l1.medianRPS() / ng.medianRPS()
	logf("anqi-edge L1 / nginx: %.2fx req/s, %.2fx req per CPU-second; p99 %s vs %s", ratio,
		l1.medianPerCore()/ng.medianPerCore(), fmtDur(l1.medianP99()), fmtDur(ng.medianP99()))
	logf("anqi-edge L1 / bare fasthttp ceiling: %.2fx req/s, %.2fx req per CPU-second", l1.medianRPS()/ceil.medianRPS(),
		l1.medianPerCore()/ceil.medianPerCore())
	if bare := res.hot[6]; bare.medianRPS() > 0 {
		logf("anqi-edge L1 / bare fasthttp without timeouts: %.2fx req/s, %.2fx req per CPU-second", l1.medianRPS()/bare.medianRPS(),
			l1.medianPerCore()/bare.medianPerCore())
	}
	if rd := res.hot[2]; rd.medianPerCore() > 0 && l1.medianPerCore() > 0 {
		logf("anqi-edge Redis-tier hit / L1 hit: %.2fx server CPU per request (%.1f µs vs %.1f µs)",
			l1.medianPerCore()/rd.medianPerCore(), 1e6/rd.medianPerCore(), 1e6/l1.medianPerCore())
	}

	// 2. CPU profile of anqi-edge L1 under the same load, when it falls short.
	if o.profile == "always" || (o.profile == "auto" && (ratio < 1.5 || l1.medianP99() > ng.medianP99())) {
		logf("profiling anqi-edge L1 for %ds under wrk", o.profileSeconds)
		prof, err := profileEdge(ctx, dir, bin, edges[0], o, token, targets[0].url(hotOrder))
		if err != nil {
			logf("profile failed: %v", err)
			res.profileErr = err.Error()
		} else {
			res.profile = prof
			logf("anqi-edge handler: %.1f%% of its CPU; write(2) %.1f%%, read(2) %.1f%%",
				prof.share[shareHandler], prof.share[shareWrite], prof.share[shareRead])
		}
	}

	// 2b. The same for a Redis-tier hit when it costs more than its target.
	if rd := res.hot[2]; o.profile == "always" || (o.profile == "auto" && rd.medianPerCore() > 0 &&
		l1.medianPerCore()/rd.medianPerCore() > redisTierTarget) {
		logf("profiling anqi-edge Redis only for %ds under wrk", o.profileSeconds)
		prof, err := profileEdge(ctx, dir, bin, edges[2], o, token, targets[2].url(hotOrder))
		if err != nil {
			logf("profile failed: %v", err)
			res.redisProfileErr = err.Error()
		} else {
			res.redisProfile = prof
			logf("anqi-edge Redis only: Redis.Get %.1f%% of its CPU, handler %.1f%%", prof.share[shareRedisGet], prof.share[shareHandler])
		}
	}

	// 3. Cold-key storms.
	for _, t := range targets[:4] {
		if err := ctx.Err(); err != nil {
			return errInterrupted
		}
		order := coldOrder("storm on " + t.name)
		c0 := calls()
		s, err := storm(ctx, t.hostPort(), detailPath+"?id="+strconv.FormatInt(order, 10), token, o.storm)
		if err != nil {
			return fmt.Errorf("%s: %w", t.label, err)
		}
		time.Sleep(500 * time.Millisecond) // a late fill or refresh still counts
		s.System, s.Upstream = t.label, calls()-c0
		res.storms = append(res.storms, s)
		logf("storm %-32s %d requests, %d ok, upstream calls %d, %s, wall %s", t.label, s.Requests, s.OK, s.Upstream, counts(s.Cache), fmtDur(s.Wall))
	}

	// 4. Polling, with cache.ttl = pollTTL: fresh anqi-edge processes.
	for _, e := range edges {
		e.proc.Stop(5 * time.Second)
	}
	var pollTargets []target
	for _, s := range specs {
		s.name += "-poll"
		s.keyspace += "-poll"
		s.ttl = o.pollTTL
		s.pprof = false
		logf("starting %s with cache.ttl %s", s.label, s.ttl)
		e, err := startEdge(ctx, dir, bin, s, fakeBase, tokenSecret, redisAddr)
		if err != nil {
			return err
		}
		procs.Add(e.proc)
		pollTargets = append(pollTargets, target{name: s.name, label: s.label, base: e.base, edge: e})
	}
	pollTargets = append(pollTargets,
		target{name: "nginx-poll", label: "nginx proxy_cache (lock)", base: fmt.Sprintf("http://127.0.0.1:%d", nports.poll)},
		target{name: "nginx-pollstale", label: "nginx proxy_cache (lock + use_stale updating)", base: fmt.Sprintf("http://127.0.0.1:%d", nports.pollStale)},
		target{name: "direct", label: "direct (fake AnqiCMS, no cache)", base: fakeBase})
	for _, t := range pollTargets {
		if err := ctx.Err(); err != nil {
			return errInterrupted
		}
		order := coldOrder("polling on " + t.name)
		p := poll(ctx, t.url(order), token, o.pollClients, o.pollInterval, o.pollDuration, o.pollTTL, calls)
		p.System = t.label
		res.polls = append(res.polls, p)
		logf("poll %-48s %d requests, %d errors, upstream calls %d, per %s window %v", t.label, p.Requests, p.Errors, p.Upstream, o.pollTTL, p.Windows)
	}
	if err := ctx.Err(); err != nil {
		return errInterrupted
	}

	res.env.loadEnd = loadAvg()
	md := res.markdown()
	fmt.Println(md)
	if o.write {
		if err := updateReadme(o.readme, md); err != nil {
			return err
		}
		logf("wrote %s", o.readme)
	}
	return nil
}

// warm requests the hot key twice and returns the second body and its
// cache label.
func warm(ctx context.Context, t target, order int64, token string) ([]byte, string, error) {
	if _, _, err := get(ctx, t.url(order), token); err != nil {
		return nil, "", fmt.Errorf("%s: warming: %w", t.label, err)
	}
	body, label, err := get(ctx, t.url(order), token)
	if err != nil {
		return nil, "", fmt.Errorf("%s: warming: %w", t.label, err)
	}
	return body, label, nil
}

// get fetches url with the token and checks for HTTP 200 with code 0.
func get(ctx context.Context, u, token string) (body []byte, cacheLabel string, err error) {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(c, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte(`{"code":0,`)) {
		return nil, "", fmt.Errorf("GET %s: %s %.200s", u, resp.Status, body)
	}
	return body, resp.Header.Get("X-Cache") + resp.Header.Get("X-Cache-Status"), nil
}

// edgeHits reads anqi_edge_detail_results_total{cache="HIT"} from e's
// metrics; 0 for targets that are not anqi-edge.
func edgeHits(ctx context.Context, e *edge) float64 {
	if e == nil {
		return 0
	}
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodGet, e.admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, `anqi_edge_detail_results_total{cache="HIT"} `); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// profileEdge records a CPU profile of e while wrk loads it, and reads it
// with `go tool pprof -top`.
func profileEdge(ctx context.Context, dir, bin string, e *edge, o options, token, u string) (*cpuProfile, error) {
	type wrkOut struct {
		r   wrkResult
		err error
	}
	done := make(chan wrkOut, 1)
	go func() {
		r, err := runWrk(ctx, o.threads, o.conns, time.Duration(o.profileSeconds+2)*time.Second, token, u)
		done <- wrkOut{r, err}
	}()
	time.Sleep(time.Second)
	path := filepath.Join(dir, "edge-"+e.spec.name+".cpu.pprof")
	perr := fetchProfile(ctx, e.admin, o.profileSeconds, path)
	w := <-done
	if perr != nil {
		return nil, perr
	}
	if w.err != nil {
		return nil, w.err
	}
	logf("profile run: %.0f req/s, p99 %s; profile %s", w.r.RPS, fmtDur(w.r.P99), path)
	pp := func(extra ...string) (string, error) {
		args := append([]string{"tool", "pprof", "-top"}, extra...)
		args = append(args, bin, path)
		c, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(c, tools["go"], args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go tool pprof: %v\n%s", err, out)
		}
		return string(out), nil
	}
	p := &cpuProfile{rps: w.r.RPS}
	var err error
	if p.top, err = pp("-nodecount=30"); err != nil {
		return nil, err
	}
	if p.cum, err = pp("-cum", "-nodecount=30"); err != nil {
		return nil, err
	}
	all, err := pp("-cum", "-nodecount=100000")
	if err != nil {
		return nil, err
	}
	p.share = profileShares(all)
	return p, nil
}

func fetchProfile(ctx context.Context, admin string, seconds int, path string) error {
	c, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, seconds), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET /debug/pprof/profile: %s %s", resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}
