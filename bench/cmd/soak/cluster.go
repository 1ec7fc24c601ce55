package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"anqi-edge/anqicms/fake"
	"anqi-edge/bench/internal/harness"
)

// cms serves the in-process fake AnqiCMS on a fixed address. fake.Server's
// own Close is final (it cannot Start again), so a restart here closes
// and reopens only the listener and its http.Server: the store (users,
// orders, messages) lives on, as AnqiCMS's database does across a restart.
type cms struct {
	fk   *fake.Server
	addr string // 127.0.0.1:PORT, the same after every restart

	mu  sync.Mutex
	srv *http.Server
}

func startCMS(fk *fake.Server) (*cms, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &cms{fk: fk, addr: ln.Addr().String()}
	c.serve(ln)
	return c, nil
}

func (c *cms) serve(ln net.Listener) {
	srv := &http.Server{Handler: c.fk, ReadHeaderTimeout: 10 * time.Second}
	c.mu.Lock()
	c.srv = srv
	c.mu.Unlock()
	go srv.Serve(ln)
}

// stop closes the listener and every connection at once, in-flight ones
// included, as a killed AnqiCMS process would.
func (c *cms) stop() {
	c.mu.Lock()
	srv := c.srv
	c.srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// start listens on the same address again; a bind can fail for a moment
// while the old socket is torn down, so it retries for up to 5 s.
func (c *cms) start() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", c.addr)
		if err == nil {
			c.serve(ln)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fake AnqiCMS: listening on %s again: %w", c.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// redisServer is the soak's own redis-server, always on one port, so that
// a restart is the same Redis coming back empty (--save "" --appendonly no).
type redisServer struct {
	dir, bin string
	port     int
	addr     string

	mu   sync.Mutex
	proc *harness.Proc
}

func startRedisServer(ctx context.Context, dir, bin string) (*redisServer, error) {
	p, addr, err := harness.StartRedis(ctx, dir, bin, 0)
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return &redisServer{dir: dir, bin: bin, port: n, addr: addr, proc: p}, nil
}

func (r *redisServer) kill() {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	p.Kill()
}

func (r *redisServer) restart(ctx context.Context) error {
	p, _, err := harness.StartRedis(ctx, r.dir, r.bin, r.port)
	if err != nil {
		return fmt.Errorf("restarting redis-server on port %d: %w", r.port, err)
	}
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	return nil
}

func (r *redisServer) stop() {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	p.Stop(5 * time.Second)
}

// edgeConfig is what the soak sets in each replica's config.toml; the rest
// is config.toml's defaults.
type edgeConfig struct {
	TTL, MemTTL, SWR, StaleIfError time.Duration
	UpstreamTimeout                time.Duration
	MaxWait, Heartbeat             time.Duration
}

const adminToken = "soak-admin-token"

func (c edgeConfig) render(listen, admin, upstream, redisAddr, secret string) string {
	return fmt.Sprintf(`# written by bench/cmd/soak
[server]
listen = %q
shutdown_grace = "5s"

[upstream]
url = %q
timeout = %q

[redis]
addrs = [%q]
key_prefix = "soak"
channel = "soak:invalidate"

[admin]
listen = %q
token = %q

[auth]
token_secret = %q

[cache]
ttl = %q
stale_while_revalidate = %q
stale_if_error = %q

[cache.memory]
ttl = %q

[watch]
max_wait = %q
heartbeat = %q

[log]
level = "warn"
`, listen, upstream, c.UpstreamTimeout.String(), redisAddr, admin, adminToken, secret,
		c.TTL.String(), c.SWR.String(), c.StaleIfError.String(), c.MemTTL.String(),
		c.MaxWait.String(), c.Heartbeat.String())
}

// replica is one running anqi-edge.
type replica struct {
	name  string
	proc  *harness.Proc
	base  string // http://127.0.0.1:PORT
	admin string
}

func startReplica(ctx context.Context, dir, bin, name string, cfg edgeConfig, upstream, redisAddr, secret string) (*replica, error) {
	ports, err := harness.FreePorts(2)
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	admin := fmt.Sprintf("127.0.0.1:%d", ports[1])
	path := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(path, []byte(cfg.render(listen, admin, upstream, redisAddr, secret)), 0o644); err != nil {
		return nil, err
	}
	p, err := harness.Start(name, dir, bin, "-config", path)
	if err != nil {
		return nil, err
	}
	r := &replica{name: name, proc: p, base: "http://" + listen, admin: "http://" + admin}
	if err := p.WaitReady(ctx, harness.HTTPOK(r.admin+"/readyz")); err != nil {
		p.Stop(2 * time.Second)
		return nil, err
	}
	return r, nil
}

// rss reads VmRSS of the replica's process in bytes.
func (r *replica) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.proc.PID()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, errors.New("no VmRSS line in /proc/PID/status")
}

// goroutines scrapes go_goroutines from the replica's admin /metrics.
func (r *replica) goroutines(ctx context.Context, c *http.Client) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return 0, fmt.Errorf("GET %s/metrics: %s", r.admin, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("parsing %s/metrics: %w", r.admin, err)
	}
	mf := mfs["go_goroutines"]
	if mf == nil || len(mf.GetMetric()) == 0 {
		return 0, fmt.Errorf("%s/metrics has no go_goroutines", r.admin)
	}
	return mf.GetMetric()[0].GetGauge().GetValue(), nil
}
