package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"anqi-edge/anqicms/fake"
	"anqi-edge/internal/edgetest"
)

var binDir string // holds the anqi-edge binary built by binary()

func TestMain(m *testing.M) {
	code := func() int {
		defer func() {
			if binDir != "" {
				os.RemoveAll(binDir)
			}
		}()
		return m.Run()
	}()
	if code == 0 {
		// In-process replicas (edgetest, main_purge_test.go).
		if err := goleak.Find(edgetest.LibraryGoroutines...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// cleanEnv is os.Environ without ANQI_EDGE_ variables (CI sets some for the
// tests; the binary would reject them as unknown keys).
func cleanEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ANQI_EDGE_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// runConfig calls run with -config pointing at a file holding toml.
func runConfig(t *testing.T, toml string, environ ...string) (int, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return runArgs(t, []string{"-config", path}, environ...)
}

// runArgs calls run in-process. Every case here must fail validation: a
// valid config would start serving and wait for a signal.
func runArgs(t *testing.T, args []string, environ ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(args, environ, &stderr) }()
	select {
	case code := <-done:
		return code, stderr.String()
	case <-time.After(10 * time.Second):
		t.Fatalf("run(%q) did not return: the config was accepted", args)
		return 0, ""
	}
}

// oneLine checks that msg is exactly one line that mentions every want.
func oneLine(t *testing.T, msg string, want ...string) {
	t.Helper()
	if !strings.HasSuffix(msg, "\n") || strings.Count(msg, "\n") != 1 {
		t.Errorf("message is not exactly one line: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q does not name %q", msg, w)
		}
	}
}

func TestRun_ConfigErrorsExitNonZeroWithOneLineNamingKeyAndValue(t *testing.T) {
	cases := []struct {
		name    string
		toml    string
		environ []string
		want    []string
	}{
		{"unknown key", "[server]\nlisten_addr = \":1\"\n", nil, []string{"server.listen_addr"}},
		{"unknown key in a sub-table", "[cache.memory]\nmax_entries = 5\n", nil, []string{"cache.memory.max_entries"}},
		{"unknown table", "[sever]\nlisten = \":1\"\n", nil, []string{"sever"}},
		{"bad duration", "[upstream]\ntimeout = \"5 parsecs\"\n", nil, []string{"upstream.timeout", "5 parsecs"}},
		{"zero duration", "[upstream]\ntimeout = \"0s\"\n", nil, []string{"upstream.timeout", "0s"}},
		{"duration of the wrong type", "[cache]\nttl = 30\n", nil, []string{"cache.ttl"}},
		{"bad size", "[server]\nmax_request_body = \"32 potatoes\"\n", nil, []string{"server.max_request_body", "32 potatoes"}},
		{"negative size", "[upstream]\nmax_body = -1\n", nil, []string{"upstream.max_body", "-1"}},
		{"URL with a bad scheme", "[upstream]\nurl = \"ftp://example.com\"\n", nil, []string{"upstream.url", "ftp://example.com"}},
		{"URL without a scheme", "[upstream]\nurl = \"anqicms:8001\"\n", nil, []string{"upstream.url", "anqicms:8001"}},
		{"URL without a host", "[upstream]\nurl = \"http://\"\n", nil, []string{"upstream.url", "http://"}},
		{"public listener equal to admin listener", "[server]\nlisten = \":9999\"\n[admin]\nlisten = \"127.0.0.1:9999\"\n", nil,
			[]string{"admin.listen", ":9999", "127.0.0.1:9999"}},
		{"same listener spelled the same", "[server]\nlisten = \"127.0.0.1:9090\"\n", nil, []string{"admin.listen", "127.0.0.1:9090"}},
		{"bad listener", "[server]\nlisten = \"8080\"\n", nil, []string{"server.listen", "8080"}},
		{"TOML syntax", "[server\nlisten = 1\n", nil, []string{"config.toml: line "}},
		{"unknown env var", "", []string{"ANQI_EDGE_UPSTREAM_URLL=http://x"}, []string{"ANQI_EDGE_UPSTREAM_URLL"}},
		{"bad duration in env", "", []string{"ANQI_EDGE_CACHE_TTL=forever"}, []string{"ANQI_EDGE_CACHE_TTL", "cache.ttl", "forever"}},
		{"bad size in env", "", []string{"ANQI_EDGE_CACHE_MEMORY_MAX_BYTES=lots"}, []string{"ANQI_EDGE_CACHE_MEMORY_MAX_BYTES", "cache.memory.max_bytes", "lots"}},
		{"bad URL in env", "", []string{"ANQI_EDGE_UPSTREAM_URL=gopher://x"}, []string{"upstream.url", "gopher://x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, msg := runConfig(t, c.toml, c.environ...)
			if code == 0 {
				t.Fatalf("exit code 0 for %s", c.name)
			}
			oneLine(t, msg, c.want...)
		})
	}
}

func TestRun_CommandLineErrorsExitNonZeroWithOneLine(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(good, []byte("[upstream]\ntimeout = \"nope\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.toml")
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown flag", []string{"-bogus"}, []string{"-bogus"}},
		{"unknown flag after -config", []string{"-config", good, "--listen=:1"}, []string{"-listen"}},
		{"flag without its value", []string{"-config"}, []string{"-config"}},
		{"unexpected argument", []string{"-config", good, "serve"}, []string{"serve"}},
		{"missing config file", []string{"-config", missing}, []string{missing}},
		{"config is a directory", []string{"-config", dir}, []string{dir}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, msg := runArgs(t, c.args)
			if code == 0 {
				t.Fatalf("exit code 0 for %q", c.args)
			}
			oneLine(t, msg, c.want...)
		})
	}
}

// binary builds anqi-edge once per test run, with the real go tool.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "anqi-edge-test-")
		if buildErr != nil {
			return
		}
		gotool, err := exec.LookPath("go")
		if err != nil {
			gotool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		bin := filepath.Join(binDir, "anqi-edge")
		args := []string{"build", "-o", bin}
		// Build as this test binary was built, so the dependencies come
		// from the build cache instead of being compiled a second time.
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "-race" && s.Value == "true" {
					args = append(args, "-race")
				}
			}
		}
		out, err := exec.Command(gotool, append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binPath = bin
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestBinary_ConfigErrorExitsNonZero(t *testing.T) {
	bin := binary(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("[cache]\nttl = \"thirty seconds\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-config", path}, {"-no-such-flag"}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = cleanEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("%q: %v, want a non-zero exit", args, err)
		}
		want := "cache.ttl"
		if args[0] != "-config" {
			want = "-no-such-flag"
		}
		oneLine(t, stderr.String(), want)
	}
}

// edge is a running anqi-edge process.
type edge struct {
	cmd           *exec.Cmd
	public, admin string
	exited        chan struct{} // closed once the process has exited
	waitErr       error         // cmd.Wait's result, set before exited closes
	mu            sync.Mutex
	log           bytes.Buffer
}

func (e *edge) logs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.log.String()
}

// startBinary runs anqi-edge in front of upstream with grace as
// server.shutdown_grace, and waits until it listens.
func startBinary(t *testing.T, upstream string, grace time.Duration) *edge {
	t.Helper()
	conf := fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
shutdown_grace = %q

[upstream]
url = %q

[redis]
addrs = []

[admin]
listen = "127.0.0.1:0"

[log]
level = "info"
`, grace.String(), upstream)
	e, _ := startBinaryConfig(t, conf)
	return e
}

// startBinaryConfig runs anqi-edge with conf as its config file (which it
// returns the path of) and waits until it listens.
func startBinaryConfig(t *testing.T, conf string) (*edge, string) {
	t.Helper()
	bin := binary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", path)
	cmd.Env = cleanEnv()
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &edge{cmd: cmd, exited: make(chan struct{})}
	listening := make(chan [2]string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Bytes()
			e.mu.Lock()
			e.log.Write(line)
			e.log.WriteByte('\n')
			e.mu.Unlock()
			var rec struct{ Msg, Public, Admin string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "anqi-edge listening" {
				listening <- [2]string{rec.Public, rec.Admin}
			}
		}
	}()
	go func() {
		<-copied // Wait closes the pipe: read it all first
		e.waitErr = cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-e.exited:
			return
		default:
		}
		cmd.Process.Kill()
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
		}
	})
	select {
	case addrs := <-listening:
		e.public, e.admin = addrs[0], addrs[1]
	case <-e.exited:
		t.Fatalf("anqi-edge exited before listening (%v):\n%s", e.waitErr, e.logs())
	case <-time.After(15 * time.Second):
		t.Fatalf("anqi-edge did not listen within 15s:\n%s", e.logs())
	}
	return e, path
}

func startFake(t *testing.T) (*fake.Server, string) {
	t.Helper()
	f := fake.New(fake.Options{})
	u, err := f.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, u
}

var client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}

func TestBinary_SIGTERMFinishesInFlightRequestsThenExitsZero(t *testing.T) {
	f, upstream := startFake(t)
	const grace = 10 * time.Second
	e := startBinary(t, upstream, grace)

	// A normal request first: the process serves.
	resp, err := client.Get("http://" + e.public + "/__echo/warm")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up request: %s", resp.Status)
	}

	const n = 4
	holds := make([]*fake.Hold, n)
	for i := range holds {
		holds[i] = f.Hold("/__echo/slow")
	}
	results := edgetest.InFlight(client, "http://"+e.public+"/__echo/slow", n)
	edgetest.WaitStarted(t, holds)

	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	if !edgetest.Refused(e.public) {
		t.Fatalf("public listener still accepts connections 5s after SIGTERM:\n%s", e.logs())
	}
	select {
	case <-e.exited:
		t.Fatalf("exited (%v) with %d requests in flight:\n%s", e.waitErr, n, e.logs())
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
		case <-time.After(grace):
			t.Fatalf("in-flight request %d did not finish", i)
		}
	}
	select {
	case <-e.exited:
		if e.waitErr != nil {
			t.Fatalf("exit: %v, want 0:\n%s", e.waitErr, e.logs())
		}
		if took := time.Since(signalled); took > grace {
			t.Fatalf("exit took %v after SIGTERM, over server.shutdown_grace %v", took, grace)
		}
	case <-time.After(grace):
		t.Fatalf("still running %v after SIGTERM:\n%s", grace, e.logs())
	}
}

func TestBinary_SIGTERMExitsZeroOnceTheGraceRunsOut(t *testing.T) {
	f, upstream := startFake(t)
	const grace = time.Second
	e := startBinary(t, upstream, grace)
	hold := f.Hold("/__echo/stuck")
	defer hold.Release()
	results := edgetest.InFlight(client, "http://"+e.public+"/__echo/stuck", 1)
	edgetest.WaitStarted(t, []*fake.Hold{hold})

	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	select {
	case <-e.exited:
		if e.waitErr != nil {
			t.Fatalf("exit: %v, want 0:\n%s", e.waitErr, e.logs())
		}
		// Lower bound only: timers never fire early, so this cannot flake.
		if took := time.Since(signalled); took < grace {
			t.Fatalf("exited %v after SIGTERM, before server.shutdown_grace %v with a request in flight", took, grace)
		}
	case <-time.After(grace + 10*time.Second):
		t.Fatalf("still running long after server.shutdown_grace %v:\n%s", grace, e.logs())
	}
	// The stuck request ends (cut off) rather than hanging the client.
	select {
	case err := <-results:
		if err == nil {
			t.Fatal("the stuck request got a 200 although its upstream never answered")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck request hangs after the process exited")
	}
}
