package main

// The many-user workload (issue 13 item 3): thousands of customers, each
// polling their own order, while messages arrive. Run with
//
//	cd bench && go run ./cmd/edgebench -manyusers [-mu-users 5000] [-mu-duration 60s] [-mu-admin 2]
//
// With admin changes (-mu-admin > 0, the default) the fake keeps its
// orders in a private MariaDB and anqi-edge reads its binlog (mudb.go);
// -mu-admin 0 keeps the fake in memory and needs no mariadbd.
// It prints one Markdown table; it does not touch bench/README.md.

import (
	"anqi-edge/bench/internal/harness"
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms/fake"
)

const sendPath = "/api/communication/message/send"

// muOptions are the many-user workload's knobs (flags -mu-*).
type muOptions struct {
	users       int
	interval    time.Duration // each user's poll interval
	jitter      float64       // ± fraction of the interval
	sendsPerSec float64       // messages sent through the proxy
	// adminPerSec is changes made behind the proxy (the admin panel):
	// replies posted to the fake's admin endpoint, which writes only to
	// its database. Above 0 the fake runs in database mode on a private
	// mariadbd and both replicas read its binlog ([cdc]).
	adminPerSec float64
	warmup      time.Duration // polling before the measurement (the cold fill)
	duration    time.Duration // measured polling per system
	ttl         time.Duration // anqi-edge cache.ttl and nginx proxy_cache_valid
	workers     int           // client goroutines (each owns users/workers users)
	staleAfter  time.Duration // a change committed this long before a read must be in it
	messages    int           // messages added to every order before the run (body size)
}

func (m *muOptions) check() error {
	switch {
	case m.users < 1 || m.users > 100000:
		return fmt.Errorf("-mu-users must be between 1 and 100000, got %d", m.users)
	case m.interval < 10*time.Millisecond:
		return fmt.Errorf("-mu-interval must be at least 10ms, got %s", m.interval)
	case m.jitter < 0 || m.jitter >= 1:
		return fmt.Errorf("-mu-jitter must be in [0, 1), got %g", m.jitter)
	case m.sendsPerSec < 0 || m.sendsPerSec > 1000 || m.adminPerSec < 0 || m.adminPerSec > 1000:
		return fmt.Errorf("-mu-sends and -mu-admin must be between 0 and 1000 per second")
	case m.duration < time.Second || m.duration > 30*time.Minute || m.warmup < 0:
		return fmt.Errorf("-mu-duration must be between 1s and 30m and -mu-warmup >= 0")
	case m.workers < 1 || m.workers > 10000:
		return fmt.Errorf("-mu-workers must be between 1 and 10000, got %d", m.workers)
	case m.ttl <= 0 || m.staleAfter <= 0:
		return fmt.Errorf("-mu-ttl and -mu-stale-after must be > 0")
	case m.messages < 0 || m.messages > 1000:
		return fmt.Errorf("-mu-messages must be between 0 and 1000, got %d", m.messages)
	}
	return nil
}

// muSystem is one system under the workload: one or more front addresses
// (a load balancer's choice is random per request), the processes whose
// CPU is charged to it, and a helper reported beside it (redis-server).
type muSystem struct {
	label   string
	addrs   []string // host:port
	pids    []int
	tree    bool
	sidePID int
	admins  []string // anqi-edge admin bases, for cache_lookups_total by tier
}

// muResult is one system's numbers over the measured window.
type muResult struct {
	system        string
	wall          time.Duration
	reads         int64 // polls answered 200 with code 0
	errors        int64 // polls that failed (transport, status, envelope)
	lat           []time.Duration
	lagP99        time.Duration // how late polls started against their schedule
	detailCalls   int64         // upstream detail calls (the fake's counter)
	sendCalls     int64
	sends         int64 // answered sends through the proxy
	sendErrors    int64
	adminChanges  int64 // answered admin replies (committed in the database)
	adminErrors   int64
	ownMissed     int64 // (a) reads by the writer, started after the send's answer, without the message
	ownMissedSame int64 // of which: read through the same front (replica) the send went through
	ownReads      int64 // reads that had an own change to check
	rywMissed     int64 // of which: the read the sender makes right after its send
	rywReads      int64
	oldMissed     int64 // (b) reads started >= staleAfter after a commit, without it
	oldReads      int64 // reads that had such a change to check
	adminMissed   int64 // (b) for admin changes alone: reads started >= staleAfter after an admin commit, without it
	adminReads    int64 // reads that had such an admin change to check
	cpu, sideCPU  time.Duration
	requestsTotal int64 // polls + sends + read-after-write reads, for CPU per request
	// lookups is anqi_edge_cache_lookups_total over the window, summed over
	// the replicas, by its label set (anqi-edge only).
	lookups map[string]float64
}

// change is one committed change to an order: a message, by its id.
type change struct {
	id  int64
	at  time.Time // the send's answer (through the proxy) or the admin write's return
	own bool      // made by the order's user through the proxy
	via int       // index of the front the send went through
}

// muTracker holds, per user (one order each), the changes made during a run.
type muTracker struct {
	mu      []sync.Mutex
	changes [][]change
}

func newTracker(n int) *muTracker {
	return &muTracker{mu: make([]sync.Mutex, n), changes: make([][]change, n)}
}

func (t *muTracker) add(user int, c change) {
	t.mu[user].Lock()
	t.changes[user] = append(t.changes[user], c)
	t.mu[user].Unlock()
}

// readVerdict is what one read showed against the changes of its order.
type readVerdict struct {
	ownChecked, ownMissed     bool // (a): an own change answered before the read started
	ownVia                    int  // the front that own change went through
	oldChecked, oldMissed     bool // (b): any change committed staleAfter before the read started
	adminChecked, adminMissed bool // (b) for admin changes alone
}

// check judges a read of user's order started at t0 whose answer is body:
// whether it had an own change to show and missed it (a), whether it had
// a change committed staleAfter before t0 and missed it (b), and the same
// for admin changes alone. Messages are only appended, so the latest such
// change stands for all earlier ones.
func (t *muTracker) check(user int, t0 time.Time, body []byte, staleAfter time.Duration) (v readVerdict) {
	t.mu[user].Lock()
	cs := t.changes[user]
	var own, old, admin int64
	for i := len(cs) - 1; i >= 0 && (own == 0 || old == 0 || admin == 0); i-- {
		c := cs[i]
		if own == 0 && c.own && !c.at.After(t0) {
			own, v.ownVia = c.id, c.via
		}
		if !c.at.After(t0.Add(-staleAfter)) {
			if old == 0 {
				old = c.id
			}
			if admin == 0 && !c.own {
				admin = c.id
			}
		}
	}
	t.mu[user].Unlock()
	if own != 0 {
		v.ownChecked, v.ownMissed = true, !hasMessage(body, own)
	}
	if old != 0 {
		v.oldChecked, v.oldMissed = true, !hasMessage(body, old)
	}
	if admin != 0 {
		v.adminChecked, v.adminMissed = true, !hasMessage(body, admin)
	}
	return v
}

// hasMessage reports whether a detail body lists message id. A message is
// encoded as {"id":N,"comm_order_id":...}; the order's own "id" is followed
// by "order_id", so the pattern names messages only.
func hasMessage(body []byte, id int64) bool {
	var stack [48]byte
	p := append(stack[:0], `{"id":`...)
	p = strconv.AppendInt(p, id, 10)
	p = append(p, `,"comm_order_id"`...)
	return bytes.Contains(body, p)
}

// muUser is one scheduled poller.
type muUser struct {
	idx int
	due time.Time
}

type dueHeap []muUser

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(muUser)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// workerStats is one client goroutine's tally; merged at the end, so the
// hot path takes no lock.
type workerStats struct {
	reads, errors                                           int64
	ownReads, ownMissed, ownMissedSame, oldReads, oldMissed int64
	adminReads, adminMissed                                 int64
	lat, lag                                                []time.Duration
}

// muClient sends the workload's requests. One fasthttp.HostClient per
// front address; connections are reused across users, as a browser's
// would not be, so the numbers are the proxies' and not TCP set-up's.
type muClient struct {
	hosts []*fasthttp.HostClient
}

func newMuClient(addrs []string, conns int) *muClient {
	c := &muClient{}
	for _, a := range addrs {
		c.hosts = append(c.hosts, &fasthttp.HostClient{Addr: a, MaxConns: conns,
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxIdleConnDuration: time.Minute})
	}
	return c
}

// detail GETs order with token through a random front and returns the
// body (appended to dst) when the answer is 200 with code 0, and the front.
func (c *muClient) detail(dst []byte, order int64, token string, req *fasthttp.Request, resp *fasthttp.Response) ([]byte, int, error) {
	via := rand.IntN(len(c.hosts))
	h := c.hosts[via]
	req.Reset()
	resp.Reset()
	var stack [128]byte
	uri := append(stack[:0], "http://"...)
	uri = append(uri, h.Addr...)
	uri = append(uri, detailPath+"?id="...)
	uri = strconv.AppendInt(uri, order, 10)
	req.SetRequestURIBytes(uri)
	req.Header.Set("token", token)
	if err := h.Do(req, resp); err != nil {
		return dst, via, err
	}
	body := resp.Body()
	if resp.StatusCode() != fasthttp.StatusOK || !bytes.HasPrefix(body, []byte(`{"code":0,`)) {
		return dst, via, fmt.Errorf("detail %d: HTTP %d %.120s", order, resp.StatusCode(), body)
	}
	return append(dst, body...), via, nil
}

// send posts a message to order as its user through a random front and
// returns the message id and the front.
func (c *muClient) send(order int64, token, content string) (id int64, via int, err error) {
	via = rand.IntN(len(c.hosts))
	h := c.hosts[via]
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + h.Addr + sendPath)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set("token", token)
	b, _ := json.Marshal(map[string]any{"comm_order_id": order, "content": content})
	req.SetBody(b)
	if err := h.Do(req, resp); err != nil {
		return 0, via, err
	}
	var ans struct {
		Code int `json:"code"`
		Data struct {
			ID int64 `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(resp.Body(), &ans); err != nil || resp.StatusCode() != fasthttp.StatusOK || ans.Code != 0 || ans.Data.ID == 0 {
		return 0, via, fmt.Errorf("send to %d: HTTP %d %.120s", order, resp.StatusCode(), resp.Body())
	}
	return ans.Data.ID, via, nil
}

// runManyUsers drives one system for warmup + duration and returns what
// happened in the measured window. admin makes the admin changes (nil when
// -mu-admin is 0).
func runManyUsers(ctx context.Context, m muOptions, sys muSystem, fk *fake.Server, admin *adminClient, orders []int64, tokens []string) (*muResult, error) {
	// Every worker and writer may pick the same front at once.
	client := newMuClient(sys.addrs, m.workers+8)
	tr := newTracker(len(orders))
	start := time.Now()
	measureFrom := start.Add(m.warmup)
	end := measureFrom.Add(m.duration)
	res := &muResult{system: sys.label}

	// Counters are read when the measured window opens.
	type snapshot struct {
		detail, send int64
		cpu, side    time.Duration
		lookups      map[string]float64
	}
	var snap0 snapshot
	var snapOnce sync.Once
	take := func() snapshot {
		var s snapshot
		s.detail, s.send = fk.Calls(detailPath), fk.Calls(sendPath)
		for _, pid := range sys.pids {
			c, _ := cpuOf(pid, sys.tree)
			s.cpu += c
		}
		if sys.sidePID != 0 {
			s.side, _ = cpuOf(sys.sidePID, false)
		}
		s.lookups = scrapeLookups(ctx, sys.admins)
		return s
	}
	var sends, sendErrs, admins, adminErrs, rywReads, rywMissed, rywMissedSame atomic.Int64

	var wg sync.WaitGroup
	stats := make([]workerStats, m.workers)
	for w := range m.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[w]
			var h dueHeap
			for u := w; u < len(orders); u += m.workers {
				// First polls are spread over the warm-up (at least one
				// interval), so the entries' ages, and with them the
				// expiries, are spread as in a steady state instead of
				// expiring together once per ttl.
				h = append(h, muUser{idx: u, due: start.Add(time.Duration(rand.Int64N(int64(max(m.interval, m.warmup)))))})
			}
			if len(h) == 0 {
				return
			}
			heap.Init(&h)
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			var body []byte
			for {
				next := h[0]
				if !next.due.Before(end) {
					return
				}
				if wait := time.Until(next.due); wait > 0 {
					timer.Reset(wait)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				}
				t0 := time.Now()
				var err error
				var via int
				body, via, err = client.detail(body[:0], orders[next.idx], tokens[next.idx], req, resp)
				d := time.Since(t0)
				if !t0.Before(measureFrom) {
					st.lag = append(st.lag, t0.Sub(next.due))
					if err != nil {
						st.errors++
					} else {
						st.reads++
						st.lat = append(st.lat, d)
						v := tr.check(next.idx, t0, body, m.staleAfter)
						st.ownReads, st.oldReads = st.ownReads+b2i(v.ownChecked), st.oldReads+b2i(v.oldChecked)
						st.ownMissed, st.oldMissed = st.ownMissed+b2i(v.ownMissed), st.oldMissed+b2i(v.oldMissed)
						st.ownMissedSame += b2i(v.ownMissed && v.ownVia == via)
						st.adminReads, st.adminMissed = st.adminReads+b2i(v.adminChecked), st.adminMissed+b2i(v.adminMissed)
					}
				}
				step := float64(m.interval) * (1 + m.jitter*(2*rand.Float64()-1))
				h[0].due = next.due.Add(time.Duration(step))
				heap.Fix(&h, 0)
			}
		}()
	}

	// Writers: messages through the proxy, each followed by the writer's
	// own read (a UI refreshing after "send"); admin changes behind it.
	// Each write runs on its own goroutine (at most 32 at once), so a slow
	// answer does not lower the rate.
	writer := func(perSec float64, do func(n int)) {
		if perSec <= 0 {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, 32)
			tick := time.NewTicker(time.Duration(float64(time.Second) / perSec))
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case now := <-tick.C:
					if !now.Before(end) {
						return
					}
					select {
					case sem <- struct{}{}:
					default:
						continue // 32 writes outstanding: the system is not keeping up
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						do(n)
					}()
				}
			}
		}()
	}
	writer(m.sendsPerSec, func(n int) {
		u := rand.IntN(len(orders))
		id, sentVia, err := client.send(orders[u], tokens[u], fmt.Sprintf("message %d from the many-user benchmark", n))
		measured := !time.Now().Before(measureFrom)
		if err != nil {
			if measured {
				sendErrs.Add(1)
			}
			return
		}
		at := time.Now()
		tr.add(u, change{id: id, at: at, own: true, via: sentVia})
		if !measured {
			return
		}
		sends.Add(1)
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		body, via, err := client.detail(nil, orders[u], tokens[u], req, resp)
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if err == nil {
			rywReads.Add(1)
			if !hasMessage(body, id) {
				rywMissed.Add(1)
				if via == sentVia {
					rywMissedSame.Add(1)
				}
			}
		}
	})
	if admin != nil {
		writer(m.adminPerSec, func(n int) {
			u := rand.IntN(len(orders))
			id, err := admin.reply(orders[u], fmt.Sprintf("admin note %d from the many-user benchmark", n))
			// Committed when the endpoint answered: the insert is in the
			// database (and its binlog) by then.
			at := time.Now()
			measured := !at.Before(measureFrom)
			if err != nil {
				if measured {
					adminErrs.Add(1)
				}
				return
			}
			tr.add(u, change{id: id, at: at})
			if measured {
				admins.Add(1)
			}
		})
	}

	// Open the measured window on time, whatever the workers are doing.
	go func() {
		t := time.NewTimer(time.Until(measureFrom))
		defer t.Stop()
		select {
		case <-t.C:
			snapOnce.Do(func() { snap0 = take() })
		case <-ctx.Done():
		}
	}()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, errInterrupted
	}
	snapOnce.Do(func() { snap0 = take() })
	snap1 := take()
	res.wall = time.Since(measureFrom)
	res.detailCalls, res.sendCalls = snap1.detail-snap0.detail, snap1.send-snap0.send
	res.cpu, res.sideCPU = snap1.cpu-snap0.cpu, snap1.side-snap0.side
	if len(sys.admins) > 0 {
		res.lookups = map[string]float64{}
		for k, v := range snap1.lookups {
			res.lookups[k] = v - snap0.lookups[k]
		}
	}
	res.sends, res.sendErrors, res.adminChanges, res.adminErrors = sends.Load(), sendErrs.Load(), admins.Load(), adminErrs.Load()
	res.rywReads, res.rywMissed = rywReads.Load(), rywMissed.Load()
	var lag []time.Duration
	for i := range stats {
		s := &stats[i]
		res.reads += s.reads
		res.errors += s.errors
		res.ownReads += s.ownReads
		res.ownMissed += s.ownMissed
		res.ownMissedSame += s.ownMissedSame
		res.oldReads += s.oldReads
		res.oldMissed += s.oldMissed
		res.adminReads += s.adminReads
		res.adminMissed += s.adminMissed
		res.lat = append(res.lat, s.lat...)
		lag = append(lag, s.lag...)
	}
	// The read right after one's own send is a read after one's own write too.
	res.ownReads += res.rywReads
	res.ownMissed += res.rywMissed
	res.ownMissedSame += rywMissedSame.Load()
	slices.Sort(res.lat)
	slices.Sort(lag)
	res.lagP99 = quantile(lag, 0.99)
	res.requestsTotal = res.reads + res.errors + res.sends + res.sendErrors + res.rywReads
	return res, nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// quantile of sorted durations (0 for none).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

// manyUsers sets up the fake, Redis, two anqi-edge replicas and nginx, runs
// the workload through each system in turn and prints the table.
func manyUsers(ctx context.Context, o options) error {
	_, md, err := manyUsersResults(ctx, o)
	if err != nil {
		return err
	}
	fmt.Println(md)
	return nil
}

// manyUsersResults does manyUsers' work and returns the results and table.
func manyUsersResults(ctx context.Context, o options) (results []*muResult, md string, err error) {
	m := o.mu
	if err := needTools(); err != nil {
		return nil, "", err
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp("", "edgebench-mu-")
	if err != nil {
		return nil, "", err
	}
	defer func() {
		if o.keep || err != nil {
			logf("work directory kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	env := describeMachine()
	env.tree = gitState(root)
	logf("building anqi-edge")
	bin, err := harness.BuildEdge(ctx, tools["go"], root, dir)
	if err != nil {
		return nil, "", err
	}

	fopts := fake.Options{TokenSecret: tokenSecret,
		Latency: map[string]time.Duration{detailPath: o.detailLatency}}
	var fk *fake.Server
	var db *muDB
	if m.adminPerSec > 0 {
		logf("starting mariadbd (binlog on): the fake's database, read by anqi-edge's [cdc]")
		if db, err = startMuDB(ctx, dir); err != nil {
			return nil, "", err
		}
		defer db.stop()
		if err = db.pool.QueryRowContext(ctx, "SELECT VERSION()").Scan(&env.db); err != nil {
			return nil, "", fmt.Errorf("mariadbd: %w", err)
		}
		v, _, _ := strings.Cut(env.db, "-") // 10.11.19-MariaDB-0+deb12u1-log
		env.db = "MariaDB " + v
		if fk, err = fake.NewWithDB(fopts, db.pool); err != nil {
			return nil, "", err
		}
	} else {
		fk = fake.New(fopts)
	}
	seedStart := time.Now()
	users, seeded := fk.Seed(m.users, 1)
	orders := make([]int64, len(seeded))
	tokens := make([]string, len(users))
	for i := range users {
		orders[i], tokens[i] = seeded[i].ID, fk.Token(users[i].ID, 30*24*time.Hour)
	}
	if err = seedOrders(fk, orders, m.messages); err != nil {
		return nil, "", err
	}
	logf("seeded %d orders with %d more messages each in %s", len(orders), m.messages, time.Since(seedStart).Round(time.Millisecond))
	var bodyBytes int
	if o, ok := fk.Order(orders[0]); ok {
		b, _ := json.Marshal(o)
		bodyBytes = len(b) + len(`{"code":0,"msg":"","data":}`)
	}
	fakeBase, err := fk.Start("127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	defer fk.Close()

	var procs harness.Group
	defer procs.StopAll()
	logf("starting redis-server")
	rp, redisAddr, err := harness.StartRedis(ctx, dir, tools["redis-server"], 0)
	if err != nil {
		return nil, "", err
	}
	procs.Add(rp)
	env.redis = redisVersion()
	var replicas []*edge
	for _, name := range []string{"a", "b"} {
		s := edgeSpec{name: "mu-" + name, label: "anqi-edge replica " + name, l1: true, redis: true, ttl: m.ttl, keyspace: "mu"}
		if db != nil {
			s.cdc = db.cdc
		}
		logf("starting %s", s.label)
		e, err := startEdge(ctx, dir, bin, s, fakeBase, tokenSecret, redisAddr)
		if err != nil {
			return nil, "", err
		}
		procs.Add(e.proc)
		replicas = append(replicas, e)
	}
	var admin *adminClient
	if db != nil {
		logf("waiting for a replica to stream the binlog")
		if err = waitCDC(ctx, []string{replicas[0].admin, replicas[1].admin}); err != nil {
			return nil, "", err
		}
		admin = newAdminClient(fakeBase)
	}
	logf("starting nginx (%d workers)", runtime.NumCPU())
	np, nports, err := startNginx(ctx, dir, runtime.NumCPU(), strings.TrimPrefix(fakeBase, "http://"), m.ttl)
	if err != nil {
		return nil, "", err
	}
	procs.Add(np)

	systems := []muSystem{
		{label: "anqi-edge, 2 replicas sharing one redis-server (L1 + Redis)",
			addrs:   []string{target{base: replicas[0].base}.hostPort(), target{base: replicas[1].base}.hostPort()},
			pids:    []int{replicas[0].proc.PID(), replicas[1].proc.PID()},
			sidePID: rp.PID(),
			admins:  []string{replicas[0].admin, replicas[1].admin}},
		{label: "nginx proxy_cache (lock; key $host$request_uri$http_token)",
			addrs: []string{fmt.Sprintf("127.0.0.1:%d", nports.poll)},
			pids:  []int{np.PID()}, tree: true},
	}
	for _, sys := range systems {
		logf("many users: %s: %d users every %s (±%.0f%%), %.0f sends/s, %.0f admin changes/s, %s warm-up + %s measured",
			sys.label, m.users, m.interval, 100*m.jitter, m.sendsPerSec, m.adminPerSec, m.warmup, m.duration)
		r, err := runManyUsers(ctx, m, sys, fk, admin, orders, tokens)
		if err != nil {
			return nil, "", err
		}
		logf("  %d reads (%d errors), p50 %s p99 %s, upstream detail %.1f/s, stale (a) %d/%d (same replica %d) (b) %d/%d (admin %d/%d), admin changes %d (%d errors), CPU/request %.1f µs",
			r.reads, r.errors, fmtDur(quantile(r.lat, 0.5)), fmtDur(quantile(r.lat, 0.99)),
			float64(r.detailCalls)/r.wall.Seconds(), r.ownMissed, r.ownReads, r.ownMissedSame, r.oldMissed, r.oldReads,
			r.adminMissed, r.adminReads, r.adminChanges, r.adminErrors, r.cpuPerRequest())
		results = append(results, r)
	}
	env.loadEnd = loadAvg()
	return results, muMarkdown(env, o, bodyBytes, results), nil
}

func (r *muResult) cpuPerRequest() float64 {
	if r.requestsTotal == 0 {
		return 0
	}
	return r.cpu.Seconds() * 1e6 / float64(r.requestsTotal)
}

// muMarkdown renders the many-user table.
func muMarkdown(env machine, o options, bodyBytes int, rs []*muResult) string {
	m := o.mu
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("| | |\n|---|---|\n")
	w("| run | %s |\n", env.date)
	w("| machine | %d CPUs, %s, %s, %s; load average %s at the start, %s at the end |\n", env.nproc, env.cpu, env.mem, env.kernel, env.loadStart, env.loadEnd)
	software := []string{env.goVersion, env.nginx, env.redis}
	if env.db != "" {
		software = append(software, env.db+" (binlog ROW, read by anqi-edge's [cdc])")
	}
	w("| software | %s; anqi-edge %s |\n", strings.Join(software, ", "), env.tree)
	w("| command | `%s` |\n", env.command)
	w("| load | %d users, one order each (~%d B detail), each polls its own order every %s ± %.0f%% (uniform); %.0f messages/s sent "+
		"through the proxy to random orders as their owner, each followed at once by the sender's own read; admin changes behind the proxy: %s |\n",
		m.users, bodyBytes, m.interval, 100*m.jitter, m.sendsPerSec, adminNote(m.adminPerSec))
	w("| window | %s warm-up (cold fill, not counted), then %s measured per system; %d client goroutines (fasthttp), keep-alive |\n",
		m.warmup, m.duration, m.workers)
	w("| caches | anqi-edge `cache.ttl = %q` (defaults otherwise: `cache.memory.ttl` 5s, stale-while-revalidate 30s), each request to a random replica; "+
		"nginx `proxy_cache_valid 200 %s`, `proxy_cache_lock on`, key `$host$request_uri$http_token`; fake detail latency %s |\n\n",
		m.ttl.String(), m.ttl, o.detailLatency)
	w("| system | reads | errors | client p50 | client p99 | upstream detail calls/s | sends (errors) | admin changes (errors) | server CPU per request | (a) reads after own write missing it | (a) of which through the replica that took the write | (b) reads ≥ %s after a commit missing it | (b) for admin changes alone | poll start lag p99 |\n", m.staleAfter)
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		cpu := fmt.Sprintf("%.1f µs", r.cpuPerRequest())
		if r.sideCPU > 0 && r.requestsTotal > 0 {
			cpu += fmt.Sprintf(" (+ %.1f µs redis-server)", r.sideCPU.Seconds()*1e6/float64(r.requestsTotal))
		}
		adminStale := "–" // no admin changes made
		if m.adminPerSec > 0 {
			adminStale = fmt.Sprintf("**%d** of %d", r.adminMissed, r.adminReads)
		}
		w("| %s | %d | %d | %s | %s | %.1f | %d (%d) | %d (%d) | %s | **%d** of %d (right after the send: %d of %d) | %d | **%d** of %d | %s | %s |\n",
			r.system, r.reads, r.errors, fmtDur(quantile(r.lat, 0.5)), fmtDur(quantile(r.lat, 0.99)),
			float64(r.detailCalls)/r.wall.Seconds(), r.sends, r.sendErrors, r.adminChanges, r.adminErrors, cpu,
			r.ownMissed, r.ownReads, r.rywMissed, r.rywReads, r.ownMissedSame, r.oldMissed, r.oldReads, adminStale, fmtDur(r.lagP99))
	}
	for _, r := range rs {
		if len(r.lookups) == 0 {
			continue
		}
		keys := slices.Sorted(maps.Keys(r.lookups))
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, r.lookups[k]))
		}
		w("\n%s, cache lookups during the window (`anqi_edge_cache_lookups_total`, both replicas): %s.\n", r.system, strings.Join(parts, ", "))
	}
	return b.String()
}

func adminNote(perSec float64) string {
	if perSec <= 0 {
		return "off (`-mu-admin 0`: the fake keeps its orders in memory)"
	}
	return fmt.Sprintf("%g/s, replies to random orders posted to the fake's admin endpoint, which inserts them into its MariaDB "+
		"(never through a proxy; committed = the endpoint answered); anqi-edge learns of them from the binlog (`[cdc]`, both replicas, one reading under the lease), nginx only by expiry", perSec)
}

// scrapeLookups sums anqi_edge_cache_lookups_total over the replicas'
// /metrics, by label set ({result="hit",tier="l1"} → "l1 hit").
func scrapeLookups(ctx context.Context, admins []string) map[string]float64 {
	out := map[string]float64{}
	for _, a := range admins {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(c, http.MethodGet, a+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		for line := range strings.SplitSeq(string(b), "\n") {
			rest, ok := strings.CutPrefix(line, "anqi_edge_cache_lookups_total{")
			if !ok {
				continue
			}
			labels, val, ok := strings.Cut(rest, "} ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				continue
			}
			var result, tier string
			for kv := range strings.SplitSeq(labels, ",") {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "result":
					result = strings.Trim(v, `"`)
				case "tier":
					tier = strings.Trim(v, `"`)
				}
			}
			out[tier+" "+result] += v
		}
	}
	return out
}
