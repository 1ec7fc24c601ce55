package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"anqi-edge/internal/procattr"
)

// proc is one child process (anqi-edge, nginx, redis-server) with its
// output in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error
}

// startProc starts bin with args; stdout and stderr go to dir/name.log.
// The kernel sends SIGTERM to the child if edgebench dies (Linux).
func startProc(name, dir, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv()
	// SIGTERM if edgebench dies, rather than SIGKILL, so the nginx master
	// takes its workers down with it.
	cmd.SysProcAttr = procattr.DieWithParent(syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// childEnv is this process's environment without ANQI_EDGE_* overrides, so
// a stray variable in the caller's shell cannot change a benchmarked config.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ANQI_EDGE_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// waitReady polls ready until it succeeds, the process exits, or 20 s pass.
func (p *proc) waitReady(ctx context.Context, ready func(context.Context) error) error {
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited during startup (%v); log %s:\n%s", p.name, p.waitErr, p.logPath, p.tail())
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		last = ready(c)
		cancel()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within 20s (last error: %v); log %s:\n%s", p.name, last, p.logPath, p.tail())
}

// freePort asks the kernel for a free port on 127.0.0.1. Another process can
// take it before the child binds it; the child then fails to start and the
// error says so.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	// Hold them all open first so the kernel does not hand out one twice.
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// httpOK checks that GET url answers 200.
func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// redisPing checks that a Redis server answers PING.
func redisPing(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			c.SetDeadline(dl)
		}
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "+PONG") {
			return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
		}
		return nil
	}
}

// startRedis runs a private, non-persistent redis-server.
func startRedis(ctx context.Context, dir string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, "", err
	}
	p, err := startProc("redis", dir, tools["redis-server"],
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", rdir, "--protected-mode", "yes")
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := p.waitReady(ctx, redisPing(addr)); err != nil {
		p.stop(2 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// edgeSpec is one anqi-edge set-up.
type edgeSpec struct {
	name     string // short id: l1, l1redis, redis
	label    string // table label
	redis    bool   // use the private Redis
	l1       bool   // cache.memory.max_bytes > 0
	ttl      time.Duration
	pprof    bool
	keyspace string // Redis key prefix, so set-ups never share entries
}

// edge is a running anqi-edge.
type edge struct {
	spec  edgeSpec
	proc  *proc
	base  string // http://127.0.0.1:PORT
	admin string // http://127.0.0.1:PORT
}

func edgeConfig(s edgeSpec, port, adminPort int, upstream, secret, redisAddr string) string {
	addrs := "[]"
	if s.redis {
		addrs = fmt.Sprintf("[%q]", redisAddr)
	}
	maxBytes := `"256MiB"`
	if !s.l1 {
		maxBytes = "0"
	}
	return fmt.Sprintf(`# written by edgebench
[server]
listen = "127.0.0.1:%d"
shutdown_grace = "2s"

[upstream]
url = %q

[redis]
addrs = %s
key_prefix = %q
channel = %q

[admin]
listen = "127.0.0.1:%d"
pprof = %t

[auth]
token_secret = %q

[cache]
ttl = %q

[cache.memory]
max_bytes = %s

[log]
level = "warn"
`, port, upstream, addrs, s.keyspace, s.keyspace+":invalidate", adminPort, s.pprof, secret, s.ttl.String(), maxBytes)
}

// startEdge writes the config of s and starts anqi-edge with it.
func startEdge(ctx context.Context, dir, bin string, s edgeSpec, upstream, secret, redisAddr string) (*edge, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "edge-"+s.name+".toml")
	if err := os.WriteFile(cfgPath, []byte(edgeConfig(s, ports[0], ports[1], upstream, secret, redisAddr)), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc("edge-"+s.name, dir, bin, "-config", cfgPath)
	if err != nil {
		return nil, err
	}
	e := &edge{spec: s, proc: p,
		base:  fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		admin: fmt.Sprintf("http://127.0.0.1:%d", ports[1])}
	if err := p.waitReady(ctx, httpOK(e.admin+"/readyz")); err != nil {
		p.stop(2 * time.Second)
		return nil, err
	}
	return e, nil
}

// buildEdge compiles anqi-edge from the module root into dir.
func buildEdge(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "anqi-edge")
	cmd := exec.CommandContext(ctx, tools["go"], "build", "-o", bin, ".")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build anqi-edge: %v\n%s", err, out)
	}
	return bin, nil
}

// procGroup stops every process it holds, last started first.
type procGroup struct{ procs []*proc }

func (g *procGroup) add(p *proc) { g.procs = append(g.procs, p) }

func (g *procGroup) stopAll() {
	for i := len(g.procs) - 1; i >= 0; i-- {
		g.procs[i].stop(5 * time.Second)
	}
	g.procs = nil
}

var errInterrupted = errors.New("interrupted")

// buildCeiling compiles bench/cmd/ceiling (the bare fasthttp limit) into dir.
func buildCeiling(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "ceiling")
	cmd := exec.CommandContext(ctx, tools["go"], "build", "-o", bin, "./cmd/ceiling")
	cmd.Dir = filepath.Join(root, "bench")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build bench/cmd/ceiling: %v\n%s", err, out)
	}
	return bin, nil
}

// startCeiling starts the ceiling server replaying the answer origin gives
// for token (a warm anqi-edge L1 hit) and returns it with its base URL.
func startCeiling(ctx context.Context, dir, bin, origin, token string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc("ceiling", dir, bin, "-listen", listen, "-origin", origin, "-token", token)
	if err != nil {
		return nil, "", err
	}
	u, _ := url.Parse(origin)
	base := "http://" + listen
	if err := p.waitReady(ctx, httpOK(base+u.RequestURI())); err != nil {
		p.stop(2 * time.Second)
		return nil, "", err
	}
	return p, base, nil
}
