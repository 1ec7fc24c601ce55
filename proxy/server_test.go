package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
	"go.uber.org/goleak"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/redistest"
	"anqi-edge/metrics"
	"anqi-edge/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, edgetest.LibraryGoroutines...)
}

const internalErrorBody = `{"code":-1,"msg":"internal error"}`

func TestServer_HandlerPanicIs500EnvelopeAndTheNextRequestSucceeds(t *testing.T) {
	// A real listener with a static-file handler that panics on /__panic
	// in the middle of an answer; everything else goes to a fake AnqiCMS.
	env := startEdge(t, nil)
	m := metrics.New(nil)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	up, err := proxy.NewUpstream(env.Config.Upstream, "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := env.Config.Server
	cfg.Listen = "127.0.0.1:0"
	srv := proxy.New(proxy.Options{
		Server:  cfg,
		Pass:    proxy.NewPassThrough(up, int64(cfg.MaxRequestBody), m, log),
		Hooks:   proxy.NewWriteHooks(nil, up, nil, m, log),
		Static:  panicky{},
		Metrics: m,
		Log:     log,
	})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() {
		edgetest.Client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	base := "http://" + srv.Addr()

	for i := range 3 {
		resp, body := edgetest.Get(t, base+"/__panic", "X-Request-Id: panic-"+string(rune('a'+i)))
		if resp.StatusCode != http.StatusInternalServerError || string(body) != internalErrorBody {
			t.Fatalf("panic %d: %d %q, want 500 %s", i, resp.StatusCode, body, internalErrorBody)
		}
		if c := resp.Header.Values("Set-Cookie"); len(c) != 0 {
			t.Fatalf("panic %d: the 500 carries Set-Cookie %q", i, c)
		}
		if got := resp.Header.Get("X-Request-Id"); got != "panic-"+string(rune('a'+i)) {
			t.Fatalf("panic %d: X-Request-Id %q", i, got)
		}
		// The next request, likely on the same keep-alive connection.
		resp, body = edgetest.Get(t, base+"/__echo/after-panic")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("after panic %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// Panics on many connections at once do not take the process down.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			resp, err := edgetest.Client.Get(base + "/__panic")
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusInternalServerError {
				errs <- errors.New(resp.Status)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent panic: %v", err)
	}
	if resp, _ := edgetest.Get(t, base+"/__echo/still-alive"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after concurrent panics: %d", resp.StatusCode)
	}
	if n := testutil.ToFloat64(m.Panics); n != 23 {
		t.Errorf("panics_total = %v, want 23", n)
	}
}

// panicky panics half-way through answering /__panic and serves nothing else.
type panicky struct{}

func (panicky) Serve(ctx *fasthttp.RequestCtx) bool {
	if string(ctx.Path()) != "/__panic" {
		return false
	}
	// Half-built answers must not leak into the 500.
	ctx.Response.Header.Set("Set-Cookie", "leak=1")
	ctx.SetBodyString("partial")
	panic("boom")
}

func TestServer_ShutdownFinishesInFlightRequestsAndRefusesNewConnections(t *testing.T) {
	env := startEdge(t, nil)
	const n = 5
	holds := make([]*fake.Hold, n)
	for i := range holds {
		holds[i] = env.Fake.Hold("/__echo/slow")
	}
	results := edgetest.InFlight(edgetest.Client, env.URL+"/__echo/slow", n)
	edgetest.WaitStarted(t, holds)

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- env.Edge.Shutdown(ctx)
	}()

	if !edgetest.Refused(env.Edge.Addr()) {
		t.Fatal("the public listener still accepts connections 5s into Shutdown")
	}
	// While draining, the admin listener says so.
	resp, body := edgetest.Get(t, env.Admin+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"status":"draining"`) {
		t.Errorf("readyz while draining: %d %s", resp.StatusCode, body)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) with %d requests still in flight", err, n)
	default:
	}

	for _, h := range holds {
		h.Release()
	}
	for i := range n {
		select {
		case err := <-results:
			if err != nil {
				t.Errorf("in-flight request %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("in-flight request %d never finished", i)
		}
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the in-flight requests finished")
	}
	if !edgetest.Refused(env.Edge.AdminAddr()) {
		t.Fatal("the admin listener still accepts connections after Shutdown")
	}
}

func TestServer_ShutdownWaitsForSlowUpstreamCalls(t *testing.T) {
	env := startEdge(t, nil)
	const n = 4
	results := edgetest.InFlight(edgetest.Client, env.URL+"/__sleep?d=1s", n)
	for deadline := time.Now().Add(10 * time.Second); env.Fake.Calls("/__sleep") < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d slow requests reached the upstream", env.Fake.Calls("/__sleep"), n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.Edge.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Shutdown has returned: every answer has been written.
	for i := range n {
		select {
		case err := <-results:
			if err != nil {
				t.Errorf("slow request %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("slow request %d never finished", i)
		}
	}
}

func TestServer_ShutdownGivesUpAfterItsDeadline(t *testing.T) {
	env := startEdge(t, nil)
	hold := env.Fake.Hold("/__echo/stuck")
	defer hold.Release()
	results := edgetest.InFlight(edgetest.Client, env.URL+"/__echo/stuck", 1)
	edgetest.WaitStarted(t, []*fake.Hold{hold})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- env.Edge.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Shutdown reported success with a request still stuck")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown ignored its deadline")
	}
	hold.Release()
	select {
	case <-results:
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck request never ended")
	}
}

func TestAdmin_HealthzAlwaysOK(t *testing.T) {
	env := startEdge(t, func(c *config.Config) { c.Upstream.URL = "http://" + closedAddr(t) })
	resp, body := edgetest.Get(t, env.Admin+"/healthz")
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
	}
	// Admin routes are never on the public port.
	if _, body := edgetest.Get(t, env.URL+"/healthz"); string(body) == "ok\n" {
		t.Fatal("/healthz answered on the public port")
	}
}

type readiness struct {
	Status   string `json:"status"`
	Upstream struct {
		URL       string `json:"url"`
		Reachable bool   `json:"reachable"`
		Error     string `json:"error"`
	} `json:"upstream"`
	Redis json.RawMessage `json:"redis"`
}

func readyz(t *testing.T, env *edgetest.Env) readiness {
	t.Helper()
	resp, body := edgetest.Get(t, env.Admin+"/readyz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	var r readiness
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if r.Status != "ready" {
		t.Fatalf("/readyz status %q", r.Status)
	}
	return r
}

func TestAdmin_ReadyzReportsUpstreamAndRedis(t *testing.T) {
	t.Run("upstream up, no redis", func(t *testing.T) {
		env := startEdge(t, nil)
		r := readyz(t, env)
		if !r.Upstream.Reachable || r.Upstream.URL != env.FakeURL || r.Upstream.Error != "" {
			t.Errorf("upstream %+v, want reachable %s", r.Upstream, env.FakeURL)
		}
		if string(r.Redis) != `"disabled"` {
			t.Errorf("redis %s, want \"disabled\"", r.Redis)
		}
	})
	t.Run("upstream down stays ready", func(t *testing.T) {
		env := startEdge(t, func(c *config.Config) { c.Upstream.URL = "http://" + closedAddr(t) })
		r := readyz(t, env)
		if r.Upstream.Reachable || r.Upstream.Error == "" {
			t.Errorf("upstream %+v, want unreachable with an error", r.Upstream)
		}
	})
	t.Run("upstream goes away", func(t *testing.T) {
		env := startEdge(t, nil)
		if r := readyz(t, env); !r.Upstream.Reachable {
			t.Fatalf("upstream %+v before the fake stopped", r.Upstream)
		}
		env.Fake.Close()
		if r := readyz(t, env); r.Upstream.Reachable {
			t.Errorf("upstream %+v after the fake stopped", r.Upstream)
		}
	})
	t.Run("redis down stays ready", func(t *testing.T) {
		env := edgetest.Start(t, edgetest.Options{Redis: []string{closedAddr(t)}})
		r := readyz(t, env)
		var st struct{ Ping, Breaker string }
		if err := json.Unmarshal(r.Redis, &st); err != nil || st.Ping == "ok" || st.Ping == "" {
			t.Errorf("redis %s, want a failed ping", r.Redis)
		}
	})
	t.Run("redis up", func(t *testing.T) {
		env := edgetest.Start(t, edgetest.Options{Redis: []string{redistest.Shared(t)}})
		r := readyz(t, env)
		var st struct{ Ping string }
		if err := json.Unmarshal(r.Redis, &st); err != nil || st.Ping != "ok" {
			t.Errorf("redis %s, want ping ok", r.Redis)
		}
	})
}

func TestAdmin_MetricsCountRequestsByRouteAndCodeAndUpstreamLatency(t *testing.T) {
	env := startEdge(t, nil)
	edgetest.Get(t, env.URL+"/__echo/m")
	edgetest.Get(t, env.URL+"/__echo/m")
	edgetest.Get(t, env.URL+"/__status/503")
	edgetest.Get(t, env.URL+"/api/communication/order/detail?id=abc") // answered by anqi-edge itself

	type sample struct {
		name   string
		labels []string
		want   float64
	}
	check := func(admin string, samples []sample) {
		t.Helper()
		fams := edgetest.Scrape(t, admin)
		for _, s := range samples {
			if got := edgetest.Sum(fams, s.name, s.labels...); got != s.want {
				t.Errorf("%s%v = %v, want %v", s.name, s.labels, got, s.want)
			}
		}
	}
	check(env.Admin, []sample{
		{"anqi_edge_requests_total", []string{"code=200", "route=passthrough"}, 2},
		{"anqi_edge_requests_total", []string{"code=503", "route=passthrough"}, 1},
		{"anqi_edge_requests_total", []string{"code=200", "route=detail"}, 1},
		{"anqi_edge_upstream_duration_seconds", []string{"route=passthrough"}, 3}, // observations
		{"anqi_edge_upstream_requests_total", []string{"outcome=ok", "route=passthrough"}, 3},
	})

	down := startEdge(t, func(c *config.Config) { c.Upstream.URL = "http://" + closedAddr(t) })
	edgetest.Get(t, down.URL+"/x")
	check(down.Admin, []sample{
		{"anqi_edge_requests_total", []string{"code=502", "route=passthrough"}, 1},
		{"anqi_edge_upstream_requests_total", []string{"outcome=error", "route=passthrough"}, 1},
	})
}

func TestServer_IdleConnectionPastReadTimeoutGets408NotA400(t *testing.T) {
	env := startEdge(t, func(c *config.Config) { c.Server.ReadTimeout = config.Duration{Duration: 300 * time.Millisecond} })
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(env.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Nothing is sent: a browser's spare connection.
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading what the idle connection got: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Fatalf("idle connection past server.read_timeout: HTTP %d close=%v, want 408 and close", resp.StatusCode, resp.Close)
	}
}
