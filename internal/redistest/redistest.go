// Package redistest runs real redis-server processes for integration tests:
// single servers that a test can kill and restart on the same port, and a
// local three-master Redis Cluster.
//
// Every process is owned by the test that started it: it lives in its own
// temporary directory (log file included), is stopped by t.Cleanup, and on
// Linux is started with a parent-death signal so it cannot outlive the test
// binary even if that binary is killed.
//
// When redis-server is not installed the helpers skip the test, unless the
// CI environment variable is set, in which case they fail it: CI must
// install Redis (see .ci/run).
package redistest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"anqi-edge/internal/testproc"
)

// SharedEnv names the environment variable holding the address of a shared,
// long-lived redis-server (set by .ci/run). See Shared.
const SharedEnv = "ANQI_EDGE_TEST_REDIS"

const (
	startTimeout   = 10 * time.Second // until a started server answers PING
	restartBindFor = 5 * time.Second  // how long Restart retries a busy port
	maxPortTries   = 5                // fresh ports tried by Start on bind races
	pollInterval   = 20 * time.Millisecond
	logTailLines   = 30
)

// Available reports whether redis-server is on PATH. StartCluster also needs
// redis-cli; see ClusterAvailable.
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// ClusterAvailable reports whether both redis-server and redis-cli are on
// PATH, i.e. whether StartCluster can run.
func ClusterAvailable() bool {
	_, err := exec.LookPath("redis-cli")
	return err == nil && Available()
}

// requireBinary returns the path of name or ends the test: t.Fatal under CI
// (CI must install Redis), t.Skip elsewhere.
func requireBinary(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	return testproc.Require(t, "redistest", path, err, pkg)
}

func requireServer(t testing.TB) string {
	t.Helper()
	return requireBinary(t, "redis-server", "redis-server")
}

// Server is one redis-server process owned by a test.
type Server struct {
	bin     string
	dir     string
	logPath string
	extra   []string // extra arguments (cluster mode)

	mu   sync.Mutex
	port int
	proc *testproc.Proc // nil when not running
}

// Start starts a redis-server on a free port of 127.0.0.1 with persistence
// disabled, in its own temporary directory, and waits (up to 10s) until it
// answers PING. The server is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := newServer(t, requireServer(t), nil)
	if err := testproc.StartOnFreePort(maxPortTries, func() (int, error) { return freePort(false, nil) }, s.start); err != nil {
		t.Fatalf("redistest: starting redis-server: %v", err)
	}
	return s
}

// newServer prepares (but does not start) a server in a fresh temp dir and
// registers its cleanup. TempDir's own cleanup was registered first, so it
// runs after the process is dead.
func newServer(t testing.TB, bin string, extra []string) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		bin:     bin,
		dir:     dir,
		logPath: filepath.Join(dir, "redis.log"),
		extra:   extra,
	}
	t.Cleanup(s.Kill)
	return s
}

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrLocked()
}

func (s *Server) addrLocked() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Dir returns the server's temporary working directory (log file, cluster
// config file).
func (s *Server) Dir() string { return s.dir }

// LogTail returns the last lines of the server's captured stdout/stderr.
func (s *Server) LogTail() string { return testproc.LogTail(s.logPath, 0, logTailLines) }

// Kill sends SIGKILL and waits for the process to exit. It is a no-op when
// the server is not running, so it may be called any number of times.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	s.proc.Kill()
	s.proc = nil
}

// Restart starts the server again on the same port (killing it first if it
// is still running), retrying briefly while the port is not yet bindable, and
// waits until it answers PING. Data is not preserved (persistence is off),
// except that a cluster node keeps its identity and slots via its
// cluster-config-file.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	s.Kill()

	testproc.RestartOnPort(t, "redistest: redis-server", port, restartBindFor, 50*time.Millisecond, s.start)
}

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// FlushAll deletes every key on the server.
func (s *Server) FlushAll(t testing.TB) {
	t.Helper()
	if _, err := do(s.Addr(), 5*time.Second, "FLUSHALL"); err != nil {
		t.Fatalf("redistest: FLUSHALL on %s: %v", s.Addr(), err)
	}
}

// start launches redis-server on port and waits until it answers PING. On
// failure the process is gone and the error carries the log tail.
func (s *Server) start(port int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
	s.port = port

	logf, logStart, err := testproc.OpenLog(s.logPath, "redistest", "redis-server", port)
	if err != nil {
		return err
	}

	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", s.dir,
	}
	args = append(args, s.extra...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	// An *os.File as Stdout/Stderr is handed to the child directly, so no
	// copying goroutines exist.
	cmd.Stdout = logf
	cmd.Stderr = logf
	proc, err := testproc.Start(cmd)
	logf.Close() // the child holds its own descriptor
	if err != nil {
		return fmt.Errorf("exec %s: %w", s.bin, err)
	}
	s.proc = proc

	addr := s.addrLocked()
	err = proc.WaitReady(func() error { return ping(addr, 250*time.Millisecond) }, startTimeout, pollInterval)
	if err == nil {
		return nil
	}
	s.killLocked()
	// Only this attempt's output decides whether to retry.
	tail := testproc.LogTail(s.logPath, logStart, logTailLines)
	err = fmt.Errorf("redis-server on %s: %w; log %s:\n%s", addr, err, s.logPath, tail)
	if errors.Is(err, testproc.ErrExited) && strings.Contains(tail, "Address already in use") {
		err = fmt.Errorf("%w: %w", testproc.ErrPortBusy, err)
	}
	return err
}

// Shared returns the address of the shared test server named by
// $ANQI_EDGE_TEST_REDIS when it is set and answers PING. That server is
// long-lived and shared by all packages: tests must use their own key prefix
// (see Prefix) and must not FLUSHALL it. Otherwise Shared starts one
// private server for this test binary, on first use, and every later call
// returns the same one, so that a test (or two tiers of one test) that asks
// twice gets one server, as it does under CI. It lives as long as the test
// binary (the kernel kills it when the binary exits).
func Shared(t testing.TB) string {
	t.Helper()
	if addr := os.Getenv(SharedEnv); addr != "" {
		err := ping(addr, 2*time.Second)
		if err == nil {
			return addr
		}
		t.Logf("redistest: %s=%s does not answer PING (%v); starting a private redis-server", SharedEnv, addr, err)
	}
	return processServer(t)
}

// ProcessServerGoroutine is the goroutine that reaps the test binary's
// private shared server (see Shared), which outlives every test on
// purpose: goleak must not count it.
var ProcessServerGoroutine = goleak.IgnoreAnyFunction("anqi-edge/internal/testproc.Start.func1")

// process is the test binary's own stand-in for the shared server.
var process struct {
	mu   sync.Mutex
	addr string
}

func processServer(t testing.TB) string {
	t.Helper()
	process.mu.Lock()
	defer process.mu.Unlock()
	if process.addr != "" && ping(process.addr, 2*time.Second) == nil {
		return process.addr
	}
	dir, err := os.MkdirTemp("", "redistest-shared-")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	// Persistence is off and nothing is read from the directory once the
	// server runs (its log stays open), so it goes as soon as the server is
	// up: nothing is left behind when the binary exits.
	defer os.RemoveAll(dir)
	s := &Server{bin: requireServer(t), dir: dir, logPath: filepath.Join(dir, "redis.log")}
	if err := testproc.StartOnFreePort(maxPortTries, func() (int, error) { return freePort(false, nil) }, s.start); err != nil {
		t.Fatalf("redistest: starting the private shared redis-server: %v", err)
	}
	process.addr = s.Addr()
	return process.addr
}

// Prefix returns a key prefix unique to this test run, e.g.
// "test:TestFoo/sub:1a2b3c4d:", for use on a Shared server.
func Prefix(t testing.TB) string {
	return fmt.Sprintf("test:%s:%08x:", t.Name(), rand.Uint32())
}

// freePort returns a port on 127.0.0.1 that was free a moment ago. With bus
// set (cluster mode) the port is below 55000 and port+10000 is free as well.
// Ports in avoid (and their bus ports) are never returned.
func freePort(bus bool, avoid map[int]bool) (int, error) {
	for i := 0; i < 200; i++ {
		var ln net.Listener
		var err error
		if i < 100 {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
		} else {
			// The kernel's ephemeral range may lie entirely above 55000;
			// fall back to random ports below it.
			ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(35000))))
		}
		if err != nil {
			continue
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if avoid[port] || (bus && (port >= 55000 || avoid[port+10000])) {
			ln.Close()
			continue
		}
		if !bus {
			ln.Close()
			return port, nil
		}
		bln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		ln.Close()
		if err != nil {
			continue
		}
		bln.Close()
		return port, nil
	}
	return 0, errors.New("no free port found on 127.0.0.1")
}

// logTail returns the last n lines of the file at path, ignoring its first
// from bytes.
// waitFor polls cond until it returns nil or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
