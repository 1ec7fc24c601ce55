package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/bench/internal/harness"
)

// commit is one admin change: its order and when the admin endpoint answered.
type commit struct {
	order int64
	start time.Time // the admin request was sent
	at    time.Time // it answered: the commit
	took  time.Duration
}

// result is one system's measurement.
type result struct {
	sys      system
	byMode   map[string]*modeResult
	commits  int
	upstream int64 // detail calls the fake saw during the measurement
	adminP50 time.Duration
	load     [2]string // /proc/loadavg's 1-minute figure before and after

	// Stages (see probe.go): commit to the probe's binlog read (negative:
	// read before the admin endpoint answered), the fake's detail answers,
	// and the probe's read to each client being served.
	binlog       []time.Duration
	upstreamTime []time.Duration
	afterBinlog  map[string][]time.Duration // mode -> served minus read
	// Split by the fake's detail answers: commit to the first refill
	// request arriving (anqi-edge's own binlog read, invalidation through
	// Redis/pub-sub, refill dispatch), that refill's answer time, and the
	// refill's end to each watcher served (delivery: response or SSE
	// write, client read).
	toRefill, refillTook []time.Duration
	delivery             map[string][]time.Duration
}

type modeResult struct {
	clients  int
	expected int // (client, change) pairs
	delays   []time.Duration
	early    int // served before the admin endpoint answered (counted as 0)
}

func run(ctx context.Context, o options) ([]result, error) {
	quiet = o.quiet
	root, err := absRoot(o.root)
	if err != nil {
		return nil, err
	}
	var sel []system
	for _, s := range systems(o) {
		if strings.Contains(","+o.only+",", ","+s.key+",") {
			sel = append(sel, s)
		}
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("-systems %q names none of cdc, ttl, nginx", o.only)
	}
	dir, err := os.MkdirTemp("", "cdcbench-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		logf("work directory %s (kept)", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	env := &runEnv{opts: o, dir: dir}

	logf("building anqi-edge from %s", root)
	env.edgeBin = filepath.Join(dir, "anqi-edge")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", env.edgeBin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build anqi-edge: %v\n%s", err, out)
	}

	var base harness.Group
	defer base.StopAll()
	logf("starting MariaDB (binlog on) and Redis")
	env.db, err = harness.StartMariaDB(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer env.db.Stop()
	if err := env.db.Exec(ctx, "CREATE DATABASE anqicms",
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", cdcUser, cdcPassword),
		fmt.Sprintf("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '%s'@'%%'", cdcUser),
		fmt.Sprintf("GRANT SELECT ON anqicms.* TO '%s'@'%%'", cdcUser)); err != nil {
		return nil, err
	}
	redisBin, err := harness.LookTool("redis-server")
	if err != nil {
		return nil, err
	}
	rp, redisAddr, err := harness.StartRedis(ctx, dir, redisBin, 0)
	if err != nil {
		return nil, err
	}
	base.Add(rp)
	env.redis = redisAddr

	pool, err := env.db.Root("anqicms")
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	pool.SetMaxOpenConns(32)
	pool.SetMaxIdleConns(32)
	fk, err := fake.NewWithDB(fake.Options{TokenSecret: tokenSecret}, pool)
	if err != nil {
		return nil, err
	}
	defer fk.Close()
	// Each system its own orders (one per user), so one system's replies
	// never grow another's bodies.
	users, orders := fk.Seed(o.orders*len(sel), 1)
	sctx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	pr := newProbe()
	env.upstream, err = serve(sctx, pr.timeUpstream(fk))
	if err != nil {
		return nil, err
	}
	env.probe = pr
	probeDone := make(chan error, 1)
	go func() {
		err := pr.runReader(sctx, env.db.Addr)
		if err != nil && sctx.Err() == nil {
			// The measurement goes on; only the stage table lacks the binlog rows.
			logf("binlog probe stopped: %v", err)
		}
		probeDone <- err
	}()
	defer func() { stopServing(); <-probeDone }()
	tokens := map[int64]string{}
	for _, u := range users {
		tokens[u.ID] = fk.Token(u.ID, 24*time.Hour)
	}

	var results []result
	for i, s := range sel {
		var mine []fake.Order
		mine = append(mine, orders[i*o.orders:(i+1)*o.orders]...)
		r, err := measure(ctx, env, fk, s, mine, tokens)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.label, err)
		}
		results = append(results, r)
	}
	return results, nil
}

// measure starts s, lets the clients follow its orders while the writer
// replies at the set rate, and collects what each client saw.
func measure(ctx context.Context, env *runEnv, fk *fake.Server, s system, orders []fake.Order, tokens map[int64]string) (result, error) {
	o := env.opts
	var g harness.Group
	defer g.StopAll()
	logf("%s: starting", s.label)
	bases, err := s.start(ctx, env, &g)
	if err != nil {
		return result{}, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: o.clients + 8, DisableCompression: true, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	cctx, stopClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Stop the clients before waiting for them, on every return.
	defer func() { stopClients(); wg.Wait() }()
	clients := make([]*client, o.clients)
	for j := range clients {
		ord := orders[j%len(orders)]
		c := &client{
			mode: s.modes[j%len(s.modes)], order: ord.ID, token: tokens[ord.UserID],
			base: bases[j%len(bases)], marker: []byte("cdcbench-" + s.key + "-"),
			poll: o.poll, stagger: o.poll * time.Duration(j) / time.Duration(o.clients),
			hc: hc, ready: make(chan struct{}), seen: map[int]time.Time{},
		}
		clients[j] = c
		wg.Add(1)
		go func() { defer wg.Done(); c.run(cctx) }()
	}
	readyBy := time.NewTimer(30 * time.Second)
	defer readyBy.Stop()
	for _, c := range clients {
		select {
		case <-c.ready:
		case <-readyBy.C:
			return result{}, fmt.Errorf("a %s client of order %d was not served within 30s", c.mode, c.order)
		case <-ctx.Done():
			return result{}, ctx.Err()
		}
	}
	// A second for the watchers' subscriptions and the CDC reader to settle.
	if !pause(ctx, time.Second) {
		return result{}, ctx.Err()
	}
	callsBefore := fk.Calls(detailPath)
	upMark := env.probe.upstreamMark()
	load0 := loadavg()

	logf("%s: %d clients on %d orders, %.1f admin replies/s for %s", s.label, o.clients, len(orders), o.rate, o.duration)
	commits, err := write(ctx, env.upstream, s.key, orders, o.rate, o.duration)
	if err != nil {
		return result{}, err
	}
	// Drain: until every client has seen every change of its order, or -drain.
	deadline := time.Now().Add(o.drain)
	for time.Now().Before(deadline) && !allSeen(clients, commits) {
		if !pause(ctx, 100*time.Millisecond) {
			return result{}, ctx.Err()
		}
	}
	upstream := fk.Calls(detailPath) - callsBefore
	stopClients()
	wg.Wait()

	r := result{sys: s, byMode: map[string]*modeResult{}, commits: len(commits), upstream: upstream,
		load: [2]string{load0, loadavg()}, upstreamTime: env.probe.upstreamSince(upMark),
		afterBinlog: map[string][]time.Duration{}, delivery: map[string][]time.Duration{}}
	var took []time.Duration
	readAt := map[int]time.Time{}
	for seq, cm := range commits {
		took = append(took, cm.took)
		if at, ok := env.probe.readAt(cm.order, cm.start); ok {
			readAt[seq] = at
			r.binlog = append(r.binlog, at.Sub(cm.at))
		}
		// Between changes the orders are served from the cache (ttl 30s):
		// the first detail answer after the admin request was sent is the
		// refill the change caused.
		if sp, ok := env.probe.refillAfter(cm.order, cm.start); ok {
			r.toRefill = append(r.toRefill, sp.start.Sub(cm.at))
			r.refillTook = append(r.refillTook, sp.end.Sub(sp.start))
		}
	}
	r.adminP50 = percentile(took, 0.50)
	for _, c := range clients {
		m := r.byMode[c.mode]
		if m == nil {
			m = &modeResult{}
			r.byMode[c.mode] = m
		}
		m.clients++
		for seq, cm := range commits {
			if cm.order != c.order {
				continue
			}
			m.expected++
			if at, ok := c.saw(seq); ok {
				if ra, ok := readAt[seq]; ok {
					r.afterBinlog[c.mode] = append(r.afterBinlog[c.mode], at.Sub(ra))
					if end, ok := env.probe.lastRefillBefore(c.order, cm.start, at); ok && c.mode != modePoll {
						r.delivery[c.mode] = append(r.delivery[c.mode], at.Sub(end))
					}
				}
				d := at.Sub(cm.at)
				if d < 0 {
					m.early++
					d = 0
				}
				m.delays = append(m.delays, d)
			}
		}
	}
	for _, m := range r.byMode {
		sort.Slice(m.delays, func(i, j int) bool { return m.delays[i] < m.delays[j] })
	}
	logf("%s: %d changes measured", s.label, len(commits))
	return r, nil
}

func allSeen(clients []*client, commits map[int]commit) bool {
	for _, c := range clients {
		for seq, cm := range commits {
			if cm.order == c.order {
				if _, ok := c.saw(seq); !ok {
					return false
				}
			}
		}
	}
	return true
}

// write posts admin replies to the fake's admin endpoint (the database
// only) at rate for d, round robin over orders; each reply's content is
// "cdcbench-<key>-<seq>". A slow answer delays the next reply rather than
// piling replies up.
func write(ctx context.Context, upstream, key string, orders []fake.Order, rate float64, d time.Duration) (map[int]commit, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	interval := time.Duration(float64(time.Second) / rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.Now().Add(d)
	commits := map[int]commit{}
	for seq := 1; time.Now().Before(end); seq++ {
		ord := orders[seq%len(orders)]
		body, _ := json.Marshal(map[string]any{"comm_order_id": ord.ID, "content": fmt.Sprintf("cdcbench-%s-%d", key, seq)})
		start := time.Now()
		resp, err := hc.Post(upstream+fake.AdminReplyPath, "application/json", bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("admin reply %d: %w", seq, err)
		}
		var a struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		}
		err = json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		at := time.Now()
		if err != nil || a.Code != fake.CodeOK {
			return nil, fmt.Errorf("admin reply %d: code %d %q (%v)", seq, a.Code, a.Msg, err)
		}
		commits[seq] = commit{order: ord.ID, start: start, at: at, took: at.Sub(start)}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	if len(commits) == 0 {
		return nil, errors.New("no admin reply was made: -duration too short for -rate")
	}
	return commits, nil
}

// loadavg is the 1-minute load average (the machine is shared: it says
// how much else ran).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// percentile of sorted-or-not ds (nearest rank); 0 for none.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}
