package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	detailPath = "/api/communication/order/detail"
	sendPath   = "/api/communication/message/send"
	watchPath  = "/api/communication/order/watch"
	eventsPath = "/api/communication/order/events"
)

// unavailable is the one error answer a client may get while AnqiCMS is
// down (DESIGN §6), with HTTP 502 or 504.
var unavailable = []byte(`{"code":-1,"msg":"upstream unavailable"}`)

// ack is a message whose send was answered code 0: from then on the user
// must see it (see the read-your-writes rules in main.go's comment).
type ack struct {
	order      int64
	content    string
	replica    int
	start, end time.Time
}

// user is one simulated customer with a token and its own orders.
type user struct {
	id     int64
	token  string
	orders []int64

	mu    sync.Mutex
	acked []ack

	// Only the user's own action loop touches these.
	next int // replica of the next action: round robin
	seq  int // message counter, for unique contents
}

// ackedBefore returns the user's acked sends to order that had been
// answered before t.
func (u *user) ackedBefore(order int64, t time.Time) []ack {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []ack
	for _, a := range u.acked {
		if a.order == order && a.end.Before(t) {
			out = append(out, a)
		}
	}
	return out
}

// load drives the users against the replicas and checks every answer.
type load struct {
	o    *options
	rec  *recorder
	win  *windows
	reps []*replica

	client      *http.Client // detail and send
	watchClient *http.Client // long-poll: answers after up to watch.max_wait
	sseClient   *http.Client // streams: no overall timeout, ended by the context

	sseEnded atomic.Int64 // streams the server ended without an error event
	conns    *connCounter

	lagMu sync.Mutex
	lags  []lagCase
}

func newLoad(o *options, rec *recorder, win *windows, reps []*replica) *load {
	conns := &connCounter{open: map[string]int{}}
	tr := func() *http.Transport {
		return &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 256, IdleConnTimeout: 60 * time.Second,
			DialContext: conns.dial}
	}
	return &load{o: o, rec: rec, win: win, reps: reps, conns: conns,
		client:      &http.Client{Transport: tr(), Timeout: 15 * time.Second},
		watchClient: &http.Client{Transport: tr(), Timeout: o.edge.MaxWait + 15*time.Second},
		sseClient:   &http.Client{Transport: tr()},
	}
}

func (l *load) closeIdle() {
	for _, c := range []*http.Client{l.client, l.watchClient, l.sseClient} {
		c.CloseIdleConnections()
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// runUser is one user's steady loop: every pace·U(0.5,1.5) one action on
// the next replica (round robin), a send with probability o.sendShare,
// else a detail read, each on one of the user's own orders.
func (l *load) runUser(ctx context.Context, u *user) {
	rng := rand.New(rand.NewPCG(uint64(u.id), 0x50a4))
	if !sleep(ctx, time.Duration(rng.Float64()*float64(l.o.pace))) {
		return
	}
	for {
		rep := u.next % len(l.reps)
		u.next++
		order := u.orders[rng.IntN(len(u.orders))]
		if rng.Float64() < l.o.sendShare {
			l.send(ctx, u, rep, order)
		} else {
			l.read(ctx, u, rep, order)
		}
		if !sleep(ctx, time.Duration((0.5+rng.Float64())*float64(l.o.pace))) {
			return
		}
	}
}

// exchange sends req and reads the whole answer.
func exchange(c *http.Client, req *http.Request) (resp *http.Response, body []byte, start, end time.Time, err error) {
	start = time.Now()
	resp, err = c.Do(req)
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
	}
	return resp, body, start, time.Now(), err
}

func (l *load) newRequest(ctx context.Context, u *user, method string, rep int, pathQuery string, body []byte) *http.Request {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.reps[rep].base+pathQuery, rd)
	if err != nil {
		panic(err) // the soak builds every URL itself
	}
	req.Header.Set("token", u.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func (l *load) read(ctx context.Context, u *user, rep int, order int64) {
	req := l.newRequest(ctx, u, http.MethodGet, rep, detailPath+"?id="+strconv.FormatInt(order, 10), nil)
	resp, body, start, end, err := exchange(l.client, req)
	if ctx.Err() != nil {
		return // the soak is ending: not an answer
	}
	if !l.classify(kindDetail, rep, start, end, resp, body, err) {
		return
	}
	l.rec.mu.Lock()
	l.rec.xcache[cmpOr(resp.Header.Get("X-Cache"), "(none)")]++
	l.rec.bodyBytes += int64(len(body))
	l.rec.bodyN++
	l.rec.mu.Unlock()
	if have, ok := l.checkOrder(u, order, rep, "detail", body, resp.Header); ok {
		l.checkRYW(u, order, rep, start, have, "detail", resp.Header)
	}
}

func (l *load) send(ctx context.Context, u *user, rep int, order int64) {
	u.seq++
	content := fmt.Sprintf("soak u%d n%d", u.id, u.seq)
	payload, _ := json.Marshal(map[string]any{"comm_order_id": order, "content": content})
	req := l.newRequest(ctx, u, http.MethodPost, rep, sendPath, payload)
	resp, body, start, end, err := exchange(l.client, req)
	if ctx.Err() != nil {
		return
	}
	if !l.classify(kindSend, rep, start, end, resp, body, err) {
		return
	}
	var env struct {
		Code *int   `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Code == nil {
		l.rec.violate(vBadBody, "send of user %d order %d via %s: not an envelope: %.200q", u.id, order, l.reps[rep].name, body)
		return
	}
	if *env.Code != 0 {
		l.rec.violate(vAppError, "send of user %d order %d via %s: code %d msg %q", u.id, order, l.reps[rep].name, *env.Code, env.Msg)
		return
	}
	u.mu.Lock()
	u.acked = append(u.acked, ack{order: order, content: content, replica: rep, start: start, end: end})
	u.mu.Unlock()
	l.rec.add(&l.rec.sends, 1)
}

// classify records the answer's outcome and reports whether it is a 2xx
// (or a long-poll's 304) whose body is to be checked.
func (l *load) classify(kind string, rep int, start, end time.Time, resp *http.Response, body []byte, err error) bool {
	name := l.reps[rep].name
	inWin := l.win.cmsOverlaps(start, end)
	if err != nil {
		l.rec.failed(kind)
		l.rec.errClass("no answer: "+errClass(err), inWin)
		l.rec.violate(vTransport, "%s via %s: %v", kind, name, err)
		return false
	}
	d := end.Sub(start)
	if resp.StatusCode/100 == 2 || (resp.StatusCode == http.StatusNotModified && kind == kindLongPoll) {
		l.rec.answered(kind, d, "ok")
		return true
	}
	documented := (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout) &&
		bytes.Equal(bytes.TrimSpace(body), unavailable)
	class := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if documented {
		class += " upstream unavailable"
	} else {
		class += fmt.Sprintf(" %.60q", body)
	}
	l.rec.errClass(class, inWin)
	if inWin && documented {
		l.rec.answered(kind, d, "window")
		return false
	}
	l.rec.answered(kind, d, "error")
	typ := vErrOutside
	if inWin {
		typ = vErrInWindow
	}
	l.rec.violate(typ, "%s via %s (%s..%s after start): HTTP %d X-Cache %q body %.200q",
		kind, name, l.since(start), l.since(end), resp.StatusCode, resp.Header.Get("X-Cache"), body)
	return false
}

func (l *load) since(t time.Time) string {
	return fmt.Sprintf("%.3fs", t.Sub(l.rec.start).Seconds())
}

// errClass names a client-side failure briefly, for the error table.
func errClass(err error) string {
	s := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(s, "Client.Timeout"):
		return "timeout"
	case strings.Contains(s, "connection refused"):
		return "connection refused"
	case strings.Contains(s, "connection reset"):
		return "connection reset"
	case strings.Contains(s, "EOF"):
		return "EOF"
	}
	return "other"
}

// orderView is what the soak reads of a detail answer.
type orderView struct {
	Code *int   `json:"code"`
	Msg  string `json:"msg"`
	Data *struct {
		ID       int64 `json:"id"`
		UserID   int64 `json:"user_id"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	} `json:"data"`
}

// checkOrder checks a detail body (from the detail endpoint, a long-poll
// or an SSE event): code 0, the asked order, and the reader's own. It
// returns the message contents the order showed.
func (l *load) checkOrder(u *user, order int64, rep int, how string, body []byte, h http.Header) (map[string]bool, bool) {
	name := l.reps[rep].name
	var v orderView
	if err := json.Unmarshal(body, &v); err != nil || v.Code == nil {
		l.rec.violate(vBadBody, "%s of user %d order %d via %s: not an envelope: %.200q", how, u.id, order, name, body)
		return nil, false
	}
	if *v.Code != 0 || v.Data == nil {
		l.rec.violate(vAppError, "%s of user %d order %d via %s: code %d msg %q (X-Cache %q)", how, u.id, order, name, *v.Code, v.Msg, h.Get("X-Cache"))
		return nil, false
	}
	if v.Data.UserID != u.id || v.Data.ID != order {
		l.rec.violate(vLeak, "%s of user %d order %d via %s answered order %d of user %d (X-Cache %q)",
			how, u.id, order, name, v.Data.ID, v.Data.UserID, h.Get("X-Cache"))
		return nil, false
	}
	have := make(map[string]bool, len(v.Data.Messages))
	for _, m := range v.Data.Messages {
		have[m.Content] = true
	}
	return have, true
}

// checkRYW checks that an answer to a read that started at start shows
// every message the user had sent to order (answered code 0) before then,
// within the rules in main.go's comment.
func (l *load) checkRYW(u *user, order int64, rep int, start time.Time, have map[string]bool, how string, h http.Header) {
	acks := u.ackedBefore(order, start)
	var checks int64
	for _, a := range acks {
		checks++
		if have[a.content] {
			continue
		}
		desc := fmt.Sprintf("%s of user %d order %d via %s started %s, %v after send %q via %s answered code 0 (sent %s..%s): message missing; X-Cache %q Age %q ETag %q",
			how, u.id, order, l.reps[rep].name, l.since(start), start.Sub(a.end).Round(time.Millisecond), a.content,
			l.reps[a.replica].name, l.since(a.start), l.since(a.end), h.Get("X-Cache"), h.Get("Age"), h.Get("ETag"))
		if a.replica != rep {
			// Whether the other replica may still lag depends on the
			// Redis state of both around the send: judged at the end,
			// when every scrape of it is in.
			l.lagMu.Lock()
			l.lags = append(l.lags, lagCase{a: a, reader: rep, readStart: start, desc: desc})
			l.lagMu.Unlock()
			continue
		}
		l.rec.violateAt(start, vRYW, "%s", desc)
	}
	l.rec.mu.Lock()
	l.rec.rywChecks += checks
	l.rec.mu.Unlock()
}

// lagCase is a read through the other replica that missed an acked send.
type lagCase struct {
	a         ack
	reader    int
	readStart time.Time
	desc      string
}

// judgeLags decides each lagCase by the read-your-writes rules in main.go's
// comment: allowed while the send's invalidation may not have reached the
// reader (a Redis outage the soak caused, or either replica unable to reach
// Redis or hear pub/sub around the send), until cache.memory.ttl after the
// later of the send's answer and the end of that trouble; a violation
// otherwise.
func (l *load) judgeLags(h *healthLog) {
	memTTL := l.o.edge.MemTTL
	for _, c := range l.lags {
		var deadline time.Time
		why := "no Redis outage and neither replica short of Redis or pub/sub around the send"
		if until, ok := l.win.redisLagUntil(c.a.start, c.a.end, memTTL); ok {
			deadline, why = until, fmt.Sprintf("send in a Redis outage window; lag allowed until %s", l.since(until))
		}
		if h.trouble(c.a.replica, c.a.start, c.a.end) || h.trouble(c.reader, c.a.start, c.a.end) {
			clear := h.clearAfter(c.a.replica, c.a.end)
			d := c.a.end
			if clear.After(d) {
				d = clear
			}
			if d = d.Add(memTTL); d.After(deadline) {
				deadline = d
				why = fmt.Sprintf("a replica was short of Redis around the send; %s clean again at %s; lag allowed until %s",
					l.reps[c.a.replica].name, l.since(clear), l.since(d))
			}
		}
		if c.readStart.Before(deadline) {
			l.rec.add(&l.rec.rywLagged, 1)
			continue
		}
		l.rec.violateAt(c.readStart, vRYW, "%s (%s)", c.desc, why)
	}
}

// runLongPoll watches one order by long-polling, alternating replicas,
// passing back the ETag of the last answer.
func (l *load) runLongPoll(ctx context.Context, u *user, order int64) {
	var etag string
	var have map[string]bool // messages of the answer etag came from
	for i := 0; ctx.Err() == nil; i++ {
		rep := i % len(l.reps)
		q := url.Values{"id": {strconv.FormatInt(order, 10)}}
		if etag != "" {
			q.Set("etag", etag)
		}
		req := l.newRequest(ctx, u, http.MethodGet, rep, watchPath+"?"+q.Encode(), nil)
		resp, body, start, end, err := exchange(l.watchClient, req)
		if ctx.Err() != nil {
			return
		}
		if !l.classify(kindLongPoll, rep, start, end, resp, body, err) {
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		if resp.StatusCode == http.StatusNotModified {
			// "Nothing changed since etag": the answer etag came from must
			// then already show every acked send from before this request.
			if have != nil {
				l.checkRYW(u, order, rep, start, have, "long-poll 304", resp.Header)
			}
			continue
		}
		h, ok := l.checkOrder(u, order, rep, "long-poll", body, resp.Header)
		if !ok {
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		l.checkRYW(u, order, rep, start, h, "long-poll", resp.Header)
		etag, have = resp.Header.Get("ETag"), h
		// A watcher whose etag never matches would spin: pace it.
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// runSSE holds an SSE stream on one order, reconnecting (to the other
// replica) when it ends.
func (l *load) runSSE(ctx context.Context, u *user, order int64) {
	for i := 0; ctx.Err() == nil; i++ {
		l.streamOnce(ctx, u, order, i%len(l.reps))
		if !sleep(ctx, time.Second) {
			return
		}
	}
}

func (l *load) streamOnce(ctx context.Context, u *user, order int64, rep int) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	name := l.reps[rep].name
	req := l.newRequest(sctx, u, http.MethodGet, rep, eventsPath+"?id="+strconv.FormatInt(order, 10), nil)
	req.Header.Set("Accept", "text/event-stream")
	start := time.Now()
	resp, err := l.sseClient.Do(req)
	if ctx.Err() != nil {
		if err == nil {
			resp.Body.Close()
		}
		return
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}
		l.classify(kindSSE, rep, start, time.Now(), resp, body, err)
		return
	}
	defer resp.Body.Close()
	l.classify(kindSSE, rep, start, time.Now(), resp, nil, nil)

	// A live stream writes at least a heartbeat every watch.heartbeat.
	stallAfter := 3*l.o.edge.Heartbeat + 5*time.Second
	var stalled atomic.Bool
	watchdog := time.AfterFunc(stallAfter, func() { stalled.Store(true); cancel() })
	defer watchdog.Stop()

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var event string
	var data []string
	for sc.Scan() {
		watchdog.Reset(stallAfter)
		line := sc.Text()
		switch {
		case line == "":
			if len(data) > 0 || event != "" {
				l.sseEvent(u, order, rep, event, strings.Join(data, "\n"))
			}
			event, data = "", nil
		case strings.HasPrefix(line, ":"): // comment: heartbeat, resumed
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	switch {
	case ctx.Err() != nil: // the soak is ending
	case stalled.Load():
		l.rec.violate(vSSE, "SSE of user %d order %d via %s: nothing (not even a heartbeat) for %v", u.id, order, name, stallAfter)
	case sc.Err() != nil:
		l.rec.violate(vSSE, "SSE of user %d order %d via %s: read error %v", u.id, order, name, sc.Err())
	default:
		l.sseEnded.Add(1)
	}
}

func (l *load) sseEvent(u *user, order int64, rep int, event, data string) {
	switch event {
	case "detail":
		l.rec.add(&l.rec.sseEvents, 1)
		l.checkOrder(u, order, rep, "SSE event", []byte(data), http.Header{})
	case "shutdown":
	default:
		l.rec.violate(vSSE, "SSE of user %d order %d via %s: event %q data %.200q", u.id, order, l.reps[rep].name, event, data)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// connCounter counts the soak's open connections per address: each is a
// goroutine in the replica, so the goroutine verdict is read beside it.
type connCounter struct {
	mu   sync.Mutex
	open map[string]int
}

func (c *connCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.add(addr, 1)
	return &countedConn{Conn: conn, c: c, addr: addr}, nil
}

func (c *connCounter) add(addr string, n int) {
	c.mu.Lock()
	c.open[addr] += n
	c.mu.Unlock()
}

func (c *connCounter) count(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open[addr]
}

type countedConn struct {
	net.Conn
	c    *connCounter
	addr string
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.c.add(c.addr, -1) })
	return c.Conn.Close()
}
