package proxy_test

// Issue 10: no client pays for an AnqiCMS restart, a race or a hostile
// request. End to end over real sockets: a fake AnqiCMS that routes as
// AnqiCMS does, one anqi-edge replica (internal/edgetest). Helpers are
// prefixed rl.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/proxy"
)

// rlLogs is a slog.Handler that keeps every record, for tests of what is
// logged.
type rlLogs struct {
	mu   sync.Mutex
	recs []rlRecord
}

type rlRecord struct {
	level slog.Level
	msg   string
	text  string // message and attributes, as one line
}

func (l *rlLogs) Enabled(context.Context, slog.Level) bool { return true }
func (l *rlLogs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *rlLogs) WithGroup(string) slog.Handler            { return l }
func (l *rlLogs) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.recs = append(l.recs, rlRecord{level: r.Level, msg: r.Message, text: b.String()})
	l.mu.Unlock()
	return nil
}

// find returns the records at level whose message is msg.
func (l *rlLogs) find(level slog.Level, msg string) []rlRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rlRecord
	for _, r := range l.recs {
		if r.level == level && r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// containing returns every record whose text contains s.
func (l *rlLogs) containing(s string) []rlRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rlRecord
	for _, r := range l.recs {
		if strings.Contains(r.text, s) {
			out = append(out, r)
		}
	}
	return out
}

// fasthttpAdvice is fasthttp's advice to its own users, which told an
// operator nothing about AnqiCMS.
const fasthttpAdvice = "make sure the server returns 'connection: close'"

// rlAnswer is one answer read off a raw connection.
type rlAnswer struct {
	status int
	header http.Header
	body   []byte
	code   int // envelope code; -999 when the body is not an envelope
	msg    string
}

func (a rlAnswer) String() string {
	return fmt.Sprintf("HTTP %d X-Cache=%q Age=%q body=%.160q", a.status, a.header.Get("X-Cache"), a.header.Get("Age"), a.body)
}

func rlParse(resp *http.Response, body []byte) rlAnswer {
	a := rlAnswer{status: resp.StatusCode, header: resp.Header, body: body, code: -999}
	var env struct {
		Code *int   `json:"code"`
		Msg  string `json:"msg"`
	}
	if json.Unmarshal(body, &env) == nil && env.Code != nil {
		a.code, a.msg = *env.Code, env.Msg
	}
	return a
}

// rlRaw writes request exactly as given (no line ending fixes) on a fresh
// connection to the public listener and reads one answer, or fails after
// 10s. It returns an error instead of failing the test.
func rlRaw(env *edgetest.Env, method, request string) (rlAnswer, error) {
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(env.URL, "http://"), 5*time.Second)
	if err != nil {
		return rlAnswer{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		return rlAnswer{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return rlAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return rlAnswer{}, err
	}
	return rlParse(resp, body), nil
}

// rlSend sends method target (a raw request-target, spelled exactly) with
// CRLF line endings, a Host, the given headers and body.
func rlSend(t testing.TB, env *edgetest.Env, method, target, body string, headers ...string) rlAnswer {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, strings.TrimPrefix(env.URL, "http://"))
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" || method == http.MethodPost {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("Connection: close\r\n\r\n" + body)
	a, err := rlRaw(env, method, b.String())
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return a
}

// rlHas reports whether the detail answer body lists a message with text.
func rlHas(body []byte, text string) bool {
	var env struct {
		Data struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		} `json:"data"`
	}
	json.Unmarshal(body, &env)
	return slices.ContainsFunc(env.Data.Messages, func(m struct {
		Content string `json:"content"`
	}) bool {
		return m.Content == text
	})
}

// --- item 1: an AnqiCMS restart ----------------------------------------

func TestUpstream_AnqiCMSRestartWithAFullPoolCostsNoClientAnError(t *testing.T) {
	const pool = 64
	logs := &rlLogs{}
	env := edgetest.Start(t, edgetest.Options{Verify: true, Log: slog.New(logs), Config: func(c *config.Config) {
		c.Upstream.Timeout = config.Duration{Duration: 10 * time.Second}
	}})
	users, orders := env.Fake.Seed(pool+100, 1)
	tok := func(i int) string { return env.Fake.Token(users[i].ID, 48*time.Hour) }

	// Fill each of the three pools (detail reads, hooked writes,
	// pass-through) with 64 connections: 64 concurrent requests, each held
	// at the fake until all 64 have arrived, so each got its own
	// connection; once answered, they all sit idle in the pool.
	const listPath = "/api/communication/orders"
	kinds := []struct {
		path string
		do   func(i int) (int, []byte, error)
	}{
		{proxy.DetailPath, func(i int) (int, []byte, error) {
			return rlGet(edgetest.DetailURL(env.URL, orders[i].ID), tok(i))
		}},
		{edgetest.SendPath, func(i int) (int, []byte, error) {
			return rlPost(env.URL+edgetest.SendPath, fmt.Sprintf(`{"comm_order_id":%d,"content":"fill %d"}`, orders[i].ID, i), tok(i))
		}},
		{listPath, func(i int) (int, []byte, error) { return rlGet(env.URL+listPath, tok(i)) }},
	}
	for _, k := range kinds {
		holds := make([]*fake.Hold, pool)
		for i := range holds {
			holds[i] = env.Fake.Hold(k.path)
		}
		errs := make(chan error, pool)
		for i := range pool {
			go func() {
				st, b, err := k.do(i)
				if err == nil && (st != http.StatusOK || !strings.Contains(string(b), `"code":0`)) {
					err = fmt.Errorf("HTTP %d: %.120s", st, b)
				}
				errs <- err
			}()
		}
		edgetest.WaitStarted(t, holds)
		for _, h := range holds {
			h.Release()
		}
		for range pool {
			if err := <-errs; err != nil {
				t.Fatalf("filling the %s pool: %v", k.path, err)
			}
		}
	}

	// AnqiCMS restarts on the same address: every pooled connection is dead.
	if err := env.Fake.Restart(env.FakeURL); err != nil {
		t.Fatalf("restart the fake: %v", err)
	}

	// 100 cold reads, one after another: none may fail.
	for i := pool; i < pool+100; i++ {
		st, b, err := rlGet(edgetest.DetailURL(env.URL, orders[i].ID), tok(i))
		if err != nil || st != http.StatusOK || !strings.Contains(string(b), `"code":0`) {
			t.Fatalf("cold read %d after the restart: HTTP %d %v: %.120s", i-pool, st, err, b)
		}
	}
	// 10 sends, one after another, each shown by the next read; and 10
	// pass-through reads.
	for i := range 10 {
		text := fmt.Sprintf("after restart %d", i)
		st, b, err := rlPost(env.URL+edgetest.SendPath, fmt.Sprintf(`{"comm_order_id":%d,"content":%q}`, orders[i].ID, text), tok(i))
		if err != nil || st != http.StatusOK || !strings.Contains(string(b), `"code":0`) {
			t.Fatalf("send %d after the restart: HTTP %d %v: %.120s", i, st, err, b)
		}
		st, b, err = rlGet(edgetest.DetailURL(env.URL, orders[i].ID), tok(i))
		if err != nil || st != http.StatusOK || !rlHas(b, text) {
			t.Fatalf("read after send %d: HTTP %d %v, message %q missing: %.200s", i, st, err, text, b)
		}
		if st, b, err := rlGet(env.URL+listPath, tok(i)); err != nil || st != http.StatusOK {
			t.Fatalf("pass-through read %d after the restart: HTTP %d %v: %.120s", i, st, err, b)
		}
	}
	fams := edgetest.Scrape(t, env.Admin)
	for _, code := range []string{"502", "504"} {
		if n := edgetest.Sum(fams, "anqi_edge_requests_total", "code="+code); n != 0 {
			t.Errorf("%v requests answered %s across the restart, want 0", n, code)
		}
	}
	if bad := logs.containing(fasthttpAdvice); len(bad) > 0 {
		t.Errorf("the log repeats fasthttp's advice instead of saying what happened: %s", bad[0].text)
	}
}

func rlGet(u, token string) (int, []byte, error) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("token", token)
	return rlDo(req)
}

func rlPost(u, body, token string) (int, []byte, error) {
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("token", token)
	req.Header.Set("Content-Type", "application/json")
	return rlDo(req)
}

func rlDo(req *http.Request) (int, []byte, error) {
	resp, err := edgetest.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// --- items 1 (log text) and 13: failed pass-through calls are logged ----

// rlHangUp is an upstream that reads each request's headers and closes the
// connection without answering.
func rlHangUp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestPassThrough_FailedCallsLogOneRateLimitedWarningSayingWhatHappened(t *testing.T) {
	logs := &rlLogs{}
	base := edgetest.Start(t, edgetest.Options{Log: slog.New(logs)})
	_, edge, _ := base.Replica(t, func(c *config.Config) { c.Upstream.URL = rlHangUp(t) })

	const n = 30
	start := time.Now()
	for i := range n {
		req, _ := http.NewRequest(http.MethodPost, edge+"/api/anything?i="+fmt.Sprint(i), strings.NewReader("x=1"))
		st, b, err := rlDo(req)
		if err != nil || st != http.StatusBadGateway || string(b) != `{"code":-1,"msg":"upstream unavailable"}` {
			t.Fatalf("call %d: HTTP %d %v %q, want 502 with the envelope", i, st, err, b)
		}
	}
	elapsed := time.Since(start)
	warns := logs.find(slog.LevelWarn, "upstream call failed")
	if len(warns) == 0 {
		t.Fatal("30 failed pass-through calls logged no warning")
	}
	// One line per second at most (the first at once).
	if limit := 1 + int(elapsed/time.Second); len(warns) > limit {
		t.Errorf("%d warnings for %d failures in %v, want at most %d (rate limited)", len(warns), n, elapsed, limit)
	}
	w := warns[0].text
	if !strings.Contains(w, "/api/anything") || !strings.Contains(w, "closed the connection before answering") {
		t.Errorf("warning %q does not name the path and what happened", w)
	}
	if strings.Contains(w, fasthttpAdvice) {
		t.Errorf("warning repeats fasthttp's advice: %q", w)
	}
}

// --- items 5 and 16: route on the path AnqiCMS routes ------------------

func TestRouting_WritesAreHookedAndReadsCachedOnlyOnPathsAnqiCMSRoutes(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true})
	_, order, tok := edgetest.SeedOne(env)
	detail := fmt.Sprintf("?id=%d", order.ID)
	warm := func() {
		t.Helper()
		for range 3 {
			if a := rlSend(t, env, "GET", proxy.DetailPath+detail, "", "token: "+tok); a.header.Get("X-Cache") == "HIT" {
				return
			}
		}
		t.Fatal("the detail never became a HIT")
	}
	writes := func() float64 {
		return edgetest.Metric(t, env.Admin, "anqi_edge_invalidations_total", "source=write")
	}

	// Spellings AnqiCMS routes to message/send: each runs its hook, so the
	// next read shows the message.
	for i, p := range []string{
		"/api/communication/message/%73end",
		"/api/%63ommunication/%6Dessage/send",
		"/%61pi/communication/message/sen%64",
	} {
		warm()
		text := fmt.Sprintf("routed spelling %d", i)
		a := rlSend(t, env, "POST", p, fmt.Sprintf(`{"comm_order_id":%d,"content":%q}`, order.ID, text),
			"token: "+tok, "Content-Type: application/json")
		if a.status != 200 || a.code != 0 {
			t.Fatalf("POST %s: %v, want AnqiCMS to accept it (it routes this spelling)", p, a)
		}
		r := rlSend(t, env, "GET", proxy.DetailPath+detail, "", "token: "+tok)
		if !rlHas(r.body, text) {
			t.Fatalf("POST %s was accepted but the next read (X-Cache %s) misses its message: the hook did not run",
				p, r.header.Get("X-Cache"))
		}
	}

	// Spellings AnqiCMS does not route: forwarded untouched (its 404), no
	// hook, nothing changed.
	unrouted := []string{"/api/communication/message/send/", "//api/communication/message/send",
		"/api/communication//message/send", "/api/communication/message%2Fsend", "/api/communication/message%2fsend",
		"/api/communication/./message/send", "/api/communication/message/../message/send",
		"/API/communication/message/send", "/api/communication/Message/send", "/x/../api/communication/message/send"}
	for _, p := range unrouted {
		warm()
		before := writes()
		a := rlSend(t, env, "POST", p, fmt.Sprintf(`{"comm_order_id":%d,"content":"never"}`, order.ID),
			"token: "+tok, "Content-Type: application/json")
		if a.status != http.StatusNotFound {
			t.Fatalf("POST %s: %v, want AnqiCMS's 404 (it does not route this spelling)", p, a)
		}
		if got := writes(); got != before {
			t.Fatalf("POST %s ran the write hook (invalidations %v -> %v)", p, before, got)
		}
		if x := rlSend(t, env, "GET", proxy.DetailPath+detail, "", "token: "+tok).header.Get("X-Cache"); x != "HIT" {
			t.Fatalf("after POST %s the detail is %s, want still a HIT (nothing was invalidated)", p, x)
		}
	}
	if o, _ := env.Fake.Order(order.ID); slices.ContainsFunc(o.Messages, func(m fake.Message) bool { return m.Content == "never" }) {
		t.Fatal("an unrouted spelling reached AnqiCMS's send handler: the fake does not route like AnqiCMS")
	}

	// The detail: a percent-encoded letter is the detail (from the cache);
	// spellings AnqiCMS does not route are forwarded and never served from
	// the cache.
	warm()
	if a := rlSend(t, env, "GET", "/api/communication/order/%64etail"+detail, "", "token: "+tok); a.status != 200 || a.header.Get("X-Cache") != "HIT" {
		t.Fatalf("GET /api/communication/order/%%64etail: %v, want the cached detail", a)
	}
	for _, p := range []string{"/api/communication/order/detail/", "//api/communication/order/detail",
		"/api/communication/./order/detail", "/api/communication/order%2Fdetail", "/API/communication/order/detail",
		"/x/../api/communication/order/detail", "/api/communication/order//detail"} {
		a := rlSend(t, env, "GET", p+detail, "", "token: "+tok)
		if a.status != http.StatusNotFound || a.header.Get("X-Cache") == "HIT" || a.header.Get("X-Cache") == "STALE" {
			t.Fatalf("GET %s: %v, want AnqiCMS's 404, never the cached order", p, a)
		}
	}
}

// --- item 6: Range and conditional headers on a shared flight ----------

// rlRangeUpstream is the fake behind a layer that honours Range (answering
// 206 with the requested bytes) and If-Match (412), as a CDN or nginx in
// front of AnqiCMS may; it records every such header a detail read carried.
func rlRangeUpstream(t *testing.T, target string) (string, func() []string) {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == proxy.DetailPath {
			for _, h := range []string{"Range", "If-Range", "If-Match", "If-Unmodified-Since"} {
				if v := r.Header.Get(h); v != "" {
					mu.Lock()
					seen = append(seen, h+": "+v)
					mu.Unlock()
				}
			}
			if r.Header.Get("If-Match") != "" {
				w.WriteHeader(http.StatusPreconditionFailed)
				return
			}
			if rg := r.Header.Get("Range"); rg != "" {
				rec := httptest.NewRecorder()
				r.Header.Del("Range")
				rp.ServeHTTP(rec, r)
				b := rec.Body.Bytes()
				w.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
				w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-9/%d", len(b)))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(b[:10])
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func TestDetail_RangeAndPreconditionsNeverReachASharedFlight(t *testing.T) {
	base := edgetest.Start(t, edgetest.Options{Verify: true})
	_, order, tok := edgetest.SeedOne(base)
	up, seen := rlRangeUpstream(t, base.FakeURL)
	_, edge, admin := base.Replica(t, func(c *config.Config) { c.Upstream.URL = up })
	u := edgetest.DetailURL(edge, order.ID)

	leaderHeaders := [][]string{
		{"Range: bytes=0-9"},
		{"Range: bytes=0-9", `If-Range: "x"`},
		{`If-Match: "nope"`},
		{"If-Unmodified-Since: Mon, 01 Jan 2001 00:00:00 GMT"},
	}
	for _, lh := range leaderHeaders {
		edgetest.Purge(t, admin, order.ID)
		// The leader (with the header) reaches AnqiCMS and is held there;
		// the follower joins its flight.
		hold := base.Fake.Hold(proxy.DetailPath)
		collapsed := edgetest.Metric(t, admin, "anqi_edge_singleflight_collapsed_total")
		leader := make(chan rlAnswer, 1)
		go func() {
			st, b, h, err := rlGetWith(u, append([]string{"token: " + tok}, lh...)...)
			if err != nil {
				st = -1
			}
			leader <- rlAnswer{status: st, body: b, header: h}
		}()
		edgetest.WaitStarted(t, []*fake.Hold{hold})
		follower := make(chan rlAnswer, 1)
		go func() {
			st, b, h, err := rlGetWith(u, "token: "+tok)
			if err != nil {
				st = -1
			}
			follower <- rlAnswer{status: st, body: b, header: h}
		}()
		// Give the follower a moment to join the held flight. Nothing below
		// depends on it having joined: a header forwarded upstream fails
		// the test either way (seen), a joined follower shows the harm.
		time.Sleep(100 * time.Millisecond)
		hold.Release()
		f, l := <-follower, <-leader
		if f.status != http.StatusOK || !strings.Contains(string(f.body), `"code":0`) || f.header.Get("Content-Range") != "" {
			t.Fatalf("leader with %q: the follower got %v, want the whole detail", lh, f)
		}
		if l.status != http.StatusOK || !strings.Contains(string(l.body), `"code":0`) {
			t.Fatalf("leader with %q got %v, want the whole detail (anqi-edge answers it itself)", lh, l)
		}
		if edgetest.Metric(t, admin, "anqi_edge_singleflight_collapsed_total") > collapsed {
			t.Logf("leader with %q: the follower shared its flight", lh)
		}
	}
	if s := seen(); len(s) > 0 {
		t.Fatalf("detail reads forwarded %q to AnqiCMS", s)
	}
}

func rlGetWith(u string, headers ...string) (int, []byte, http.Header, error) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := edgetest.Client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header, err
}

// --- item 12: every detail answer says where it came from --------------

func TestDetail_ErrorAnswersCarryXCacheBypassAndAge(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true, Config: func(c *config.Config) {
		c.Upstream.Timeout = config.Duration{Duration: 300 * time.Millisecond}
	}})
	_, order, tok := edgetest.SeedOne(env)
	check := func(what string, a rlAnswer, status int) {
		t.Helper()
		if a.status != status || a.code != -1 {
			t.Fatalf("%s: %v, want HTTP %d with the envelope", what, a, status)
		}
		if a.header.Get("X-Cache") != "BYPASS" || a.header.Get("Age") == "" {
			t.Fatalf("%s: X-Cache %q Age %q, want BYPASS and an Age", what, a.header.Get("X-Cache"), a.header.Get("Age"))
		}
	}
	for _, bad := range []string{"", "?id=", "?id=x", "?id=0", "?id=-1", "?id=99999999999999999999", "?id=1&id=2"} {
		check("bad id "+bad, rlSend(t, env, "GET", proxy.DetailPath+bad, "", "token: "+tok), http.StatusOK)
	}
	// 504: AnqiCMS slower than upstream.timeout.
	env.Fake.SetLatency(proxy.DetailPath, 3*time.Second)
	check("slow upstream", rlSend(t, env, "GET", proxy.DetailPath+fmt.Sprintf("?id=%d", order.ID), "", "token: "+tok), http.StatusGatewayTimeout)
	env.Fake.SetLatency(proxy.DetailPath, 0)
	// 502: AnqiCMS gone.
	_, edge, _ := env.Replica(t, func(c *config.Config) { c.Upstream.URL = "http://" + closedAddr(t) })
	st, b, h, err := rlGetWith(edgetest.DetailURL(edge, order.ID), "token: "+tok)
	if err != nil {
		t.Fatal(err)
	}
	check("upstream down", rlAnswer{status: st, body: b, header: h, code: -1}, http.StatusBadGateway)
}

// --- item 15: requests anqi-edge must answer itself ----------------------

func TestServer_HeadersUpToMaxHeaderBytesPassAndBeyondAre431WithTheEnvelope(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{})
	// 20KiB of Cookie: over fasthttp's 4KiB default, within 32KiB.
	cookie := "Cookie: big=" + strings.Repeat("a", 20<<10)
	a := rlSend(t, env, "GET", "/__echo/long-cookie", "", cookie)
	if a.status != http.StatusOK {
		t.Fatalf("20KiB Cookie: %v, want it forwarded (AnqiCMS accepts it)", a)
	}
	var echo fake.Echo
	if json.Unmarshal(a.body, &echo) != nil || len(echo.Headers.Get("Cookie")) != len(cookie)-len("Cookie: ") {
		t.Fatalf("20KiB Cookie did not arrive whole: %.200s", a.body)
	}
	a = rlSend(t, env, "GET", "/__echo/huge-cookie", "", "Cookie: big="+strings.Repeat("a", 40<<10))
	if a.status != http.StatusRequestHeaderFieldsTooLarge || a.code != -1 || a.header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("40KiB Cookie: %v, want 431 with the envelope", a)
	}
	if n := env.Fake.Calls("/__echo/huge-cookie"); n != 0 {
		t.Fatalf("the oversized request reached AnqiCMS %d times", n)
	}
}

func TestServer_ClientErrorsAreThe400sOfTheClientNotUpstreamErrors(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{})

	// HTTP/1.0 without Host: AnqiCMS picks its site by Host.
	a, err := rlRaw(env, "GET", "GET /api/anything HTTP/1.0\r\n\r\n")
	if err != nil || a.status != http.StatusBadRequest || a.code != -1 {
		t.Fatalf("HTTP/1.0 without Host: %v %v, want 400 with the envelope", a, err)
	}

	// A malformed chunked body: on pass-through and on a hooked write.
	host := strings.TrimPrefix(env.URL, "http://")
	for _, p := range []string{"/__raw", edgetest.SendPath} {
		for _, body := range []string{"zz\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\nnot-a-size\r\n\r\n", "5\r\nhelloXX0\r\n\r\n"} {
			req := "POST " + p + " HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body
			a, err := rlRaw(env, "POST", req)
			if err != nil || a.status != http.StatusBadRequest {
				t.Fatalf("POST %s with chunked body %q: %v %v, want 400", p, body, a, err)
			}
		}
	}
	fams := edgetest.Scrape(t, env.Admin)
	if n := edgetest.Sum(fams, "anqi_edge_upstream_requests_total", "outcome=error"); n != 0 {
		t.Errorf("client errors counted as %v upstream errors, want 0", n)
	}
	if n := edgetest.Sum(fams, "anqi_edge_requests_total", "code=502"); n != 0 {
		t.Errorf("%v client errors answered 502, want 0", n)
	}
}

func TestServer_BareLFRequestsAreAnsweredAtOnceNotAtReadTimeout(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Config: func(c *config.Config) {
		// A hang would last this long; the client below gives up after 10s.
		c.Server.ReadTimeout = config.Duration{Duration: time.Minute}
	}})
	host := strings.TrimPrefix(env.URL, "http://")
	for _, c := range []struct {
		req    string
		status int
	}{
		// The block ends in a bare LF: refused at once.
		{"GET /__echo/lf HTTP/1.1\nHost: " + host + "\nConnection: close\n\n", http.StatusBadRequest},
		{"GET /__echo/lf HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\n\n", http.StatusBadRequest},
		{"GET /__echo/lf HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\n\r\n", http.StatusBadRequest},
		{"GET /__echo/lf HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\n", http.StatusBadRequest},
		// A bare LF inside a block that ends in CRLFCRLF: served.
		{"GET /__echo/lf HTTP/1.1\r\nHost: " + host + "\nConnection: close\r\n\r\n", http.StatusOK},
		{"\r\nGET /__echo/lf HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n", http.StatusOK},
	} {
		a, err := rlRaw(env, "GET", c.req)
		if err != nil {
			t.Fatalf("%q: no answer: %v", c.req, err)
		}
		if a.status != c.status || (c.status == http.StatusBadRequest && a.code != -1) {
			t.Fatalf("%q: %v, want HTTP %d (400 with the envelope)", c.req, a, c.status)
		}
	}
}

// --- item 17: what AnqiCMS keys on -----------------------------------------

func TestDetail_LangQueryIsForwardedToAnqiCMSNeverCached(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true})
	_, order, tok := edgetest.SeedOne(env)
	u := proxy.DetailPath + fmt.Sprintf("?id=%d", order.ID)
	rlSend(t, env, "GET", u, "", "token: "+tok) // cached
	for i := range 3 {
		calls := edgetest.DetailCalls(env)
		a := rlSend(t, env, "GET", u+"&lang=en", "", "token: "+tok)
		if a.status != http.StatusTemporaryRedirect || !strings.Contains(a.header.Get("Set-Cookie"), "lang=en") {
			t.Fatalf("read %d with ?lang=en: %v Set-Cookie %q, want AnqiCMS's 307 with a lang cookie", i, a, a.header.Get("Set-Cookie"))
		}
		if a.header.Get("X-Cache") != "BYPASS" || edgetest.DetailCalls(env) != calls+1 {
			t.Fatalf("read %d with ?lang=en: X-Cache %q, upstream calls %d -> %d: want forwarded", i, a.header.Get("X-Cache"), calls, edgetest.DetailCalls(env))
		}
	}
}

func TestDetail_HeadIsServedFromTheCacheElseForwardedAsHead(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true})
	_, order, tok := edgetest.SeedOne(env)
	u := proxy.DetailPath + fmt.Sprintf("?id=%d", order.ID)
	// Not cached: AnqiCMS's answer to HEAD (it does not route HEAD: 404).
	a := rlSend(t, env, "HEAD", u, "", "token: "+tok)
	if a.status != http.StatusNotFound || a.header.Get("X-Cache") != "BYPASS" || len(a.body) != 0 {
		t.Fatalf("HEAD, not cached: %v, want AnqiCMS's 404 to HEAD, X-Cache BYPASS", a)
	}
	if got := rlSend(t, env, "GET", u, "", "token: "+tok); got.status != 200 {
		t.Fatalf("GET: %v", got)
	}
	calls := edgetest.DetailCalls(env)
	a = rlSend(t, env, "HEAD", u, "", "token: "+tok)
	if a.status != http.StatusOK || a.header.Get("X-Cache") != "HIT" || a.header.Get("ETag") == "" || len(a.body) != 0 {
		t.Fatalf("HEAD, cached: %v, want 200 from the cache without a body", a)
	}
	if edgetest.DetailCalls(env) != calls {
		t.Fatal("HEAD of a cached detail reached AnqiCMS")
	}
}

func TestDetail_NegativeEntriesAreNeverServedInAnotherLanguage(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true, Config: func(c *config.Config) {
		c.Cache.NegativeTTL = config.Duration{Duration: time.Minute}
	}})
	users, _ := env.Fake.Seed(2, 1)
	tok := env.Fake.Token(users[0].ID, 48*time.Hour)
	// An order of the other user: AnqiCMS answers code != 0 with a
	// localised msg, which negative_ttl stores.
	u := proxy.DetailPath + "?id=2"
	clients := []struct{ name, header, want string }{
		{"english", "Accept-Language: en-US,en;q=0.9", "No access"},
		{"chinese", "Accept-Language: zh-CN,zh;q=0.9", "无权操作"},
		{"english, other spelling", "Accept-Language: EN-us", "No access"},
		{"chinese cookie beats an english header", "Cookie: lang=zh-cn\r\nAccept-Language: en", "无权操作"},
	}
	for round := range 2 {
		for _, c := range clients {
			a := rlSend(t, env, "GET", u, "", "token: "+tok, c.header)
			if a.code == 0 || a.msg != c.want {
				t.Fatalf("round %d, %s client: %v msg %q, want %q", round, c.name, a, a.msg, c.want)
			}
			if round == 1 && c.name != "english, other spelling" && a.header.Get("X-Cache") != "HIT" {
				t.Fatalf("round %d, %s client: X-Cache %q, want the stored negative entry", round, c.name, a.header.Get("X-Cache"))
			}
		}
	}
}
