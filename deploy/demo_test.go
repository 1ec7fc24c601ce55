package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/procattr"
)

// demoRun is deploy/demo.sh running in its own process group.
type demoRun struct {
	cmd    *exec.Cmd
	stdout chan string // lines, closed at EOF
	stderr *edgetest.SyncBuffer
	done   chan struct{} // closed when the script has exited
	err    error         // its exit status, once done is closed
}

// startDemo runs deploy/demo.sh with the binaries built from this tree and
// the given addresses. Whatever happens, the demo's process group is killed
// at the end of the test.
func startDemo(t *testing.T, listen, admin, upstream string) *demoRun {
	t.Helper()
	edge, fake := edgeBinary(t), buildBinary(t, "./cmd/fake-anqicms", "fake-anqicms")
	cmd := exec.Command("bash", "demo.sh")
	cmd.Env = append(os.Environ(), "DEMO_LISTEN="+listen, "DEMO_ADMIN="+admin, "DEMO_UPSTREAM="+upstream,
		"DEMO_EDGE_BIN="+edge, "DEMO_FAKE_BIN="+fake, "DEMO_READY_TIMEOUT=30")
	cmd.SysProcAttr = procattr.DieWithParent(syscall.SIGKILL)
	cmd.SysProcAttr.Setpgid = true
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &demoRun{cmd: cmd, stdout: make(chan string, 1024), stderr: &edgetest.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(d.stdout)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case d.stdout <- sc.Text():
			default: // nobody reads any more (anqi-edge's log lines): drop
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		<-readDone
		d.err = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group: the script and what it started
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			t.Error("demo.sh's output did not close 20s after its group was killed")
		}
	})
	return d
}

// until reads stdout lines until one contains marker, and returns them all.
func (d *demoRun) until(t *testing.T, marker string, timeout time.Duration) string {
	t.Helper()
	var got strings.Builder
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-d.stdout:
			if !ok {
				t.Fatalf("demo.sh ended before printing %q; stdout:\n%s\nstderr:\n%s", marker, got.String(), d.stderr)
			}
			got.WriteString(l + "\n")
			if strings.Contains(l, marker) {
				return got.String()
			}
		case <-deadline:
			t.Fatalf("demo.sh did not print %q within %v; stdout:\n%s\nstderr:\n%s", marker, timeout, got.String(), d.stderr)
		}
	}
}

func TestDemo_PrintsCurlLinesOnlyOnceAnqiEdgeIsReadyAndUsesItsOwnRedis(t *testing.T) {
	listen, admin, upstream := closedAddr(t), closedAddr(t), closedAddr(t)
	d := startDemo(t, listen, admin, upstream)
	text := d.until(t, "Ctrl-C stops everything", 90*time.Second)

	// The printed lines use the demo's addresses and a real token.
	tok := regexp.MustCompile(`-H 'token: ([^']+)'`).FindStringSubmatch(text)
	if tok == nil || !strings.Contains(text, "curl -si 'http://"+listen+"/api/communication/order/detail?id=1'") ||
		!strings.Contains(text, "http://"+admin+"/admin/purge?id=1") {
		t.Fatalf("demo.sh printed no usable curl lines for %s / %s:\n%s", listen, admin, text)
	}
	// Printed after readiness: anqi-edge answers at once, MISS then HIT.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, want := range []string{"MISS", "HIT"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+listen+"/api/communication/order/detail?id=1", nil)
		req.Header.Set("token", tok[1])
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("the demo's first curl line, right after it was printed: %v", err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Cache"); resp.StatusCode != 200 || got != want {
			t.Errorf("detail read: %d X-Cache %q, want 200 %s", resp.StatusCode, got, want)
		}
	}

	// Redis: a private redis-server it started, holding only its own prefix;
	// or, without redis-server, none at all.
	m := regexp.MustCompile(`a private redis-server on (127\.0\.0\.1:\d+)`).FindStringSubmatch(text)
	if _, err := exec.LookPath("redis-server"); err != nil {
		if m != nil || !strings.Contains(text, "memory cache only") {
			t.Errorf("no redis-server here, but the demo says otherwise:\n%s", text)
		}
	} else {
		if m == nil {
			t.Fatalf("redis-server is installed, but the demo did not start its own:\n%s", text)
		}
		if shared := os.Getenv("ANQI_EDGE_TEST_REDIS"); m[1] == shared {
			t.Fatalf("the demo used the shared test Redis %s", shared)
		}
		rdb := redis.NewClient(&redis.Options{Addr: m[1]})
		keys, err := rdb.Keys(context.Background(), "*").Result()
		rdb.Close()
		if err != nil || len(keys) == 0 {
			t.Errorf("the demo's Redis %s: keys %v, %v; want the cached order", m[1], keys, err)
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, "anqi-edge-demo:") {
				t.Errorf("the demo wrote %q, outside its key prefix anqi-edge-demo:", k)
			}
		}
		defer func() {
			if c, err := net.DialTimeout("tcp", m[1], time.Second); err == nil {
				c.Close()
				t.Errorf("the demo's redis-server %s still runs after the demo stopped", m[1])
			}
		}()
	}

	// MariaDB: with mariadbd installed, the demo's admin line (a write to
	// the database only) reaches a customer's event stream through the
	// binlog.
	if _, err := exec.LookPath("mariadbd"); err == nil || fileExists("/usr/sbin/mariadbd") {
		admLine := regexp.MustCompile(`curl -s -X POST (http://\S+/system/api/communication/message/send) .* -d '([^']+)'`).FindStringSubmatch(text)
		if admLine == nil {
			t.Fatalf("mariadbd is installed, but the demo printed no admin line:\n%s", text)
		}
		sseReq, _ := http.NewRequest(http.MethodGet, "http://"+listen+"/api/communication/order/events?id=1", nil)
		sseReq.Header.Set("token", tok[1])
		sse, err := (&http.Client{Timeout: 20 * time.Second}).Do(sseReq)
		if err != nil {
			t.Fatal(err)
		}
		events := make(chan string, 16)
		go func() {
			defer close(events)
			sc := bufio.NewScanner(sse.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				events <- sc.Text()
			}
		}()
		// The stream's first event is the current detail.
		for l := range events {
			if strings.HasPrefix(l, "data: ") {
				break
			}
		}
		resp, err := client.Post(admLine[1], "application/json", strings.NewReader(admLine[2]))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var reply struct {
			Content string `json:"content"`
		}
		json.Unmarshal([]byte(admLine[2]), &reply)
		seen := false
		for l := range events {
			if strings.HasPrefix(l, "data: ") && strings.Contains(l, reply.Content) {
				seen = true
				break
			}
		}
		sse.Body.Close()
		if !seen {
			t.Fatalf("the admin reply %q never reached the event stream", reply.Content)
		}
	}

	// Ctrl-C (SIGINT to the script alone) stops everything it started.
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("demo.sh did not stop within 30s of SIGINT")
	}
	for _, addr := range []string{listen, admin, upstream} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still answers after the demo stopped", addr)
		}
	}
}

func TestDemo_FailsWithAnqiEdgesLogWhenItDoesNotStart(t *testing.T) {
	// The admin port is taken: anqi-edge cannot start.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := startDemo(t, closedAddr(t), ln.Addr().String(), closedAddr(t))
	var out strings.Builder
	for l := range d.stdout {
		out.WriteString(l + "\n")
	}
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatal("demo.sh still runs 60s after its output closed")
	}
	if d.err == nil {
		t.Error("demo.sh exited 0 although anqi-edge did not start")
	}
	if strings.Contains(out.String(), "curl") {
		t.Errorf("demo.sh printed curl lines for an anqi-edge that is not running:\n%s", out.String())
	}
	stderr := d.stderr.String()
	if !strings.Contains(stderr, "demo: anqi-edge on") || !strings.Contains(stderr, ln.Addr().String()) ||
		!strings.Contains(stderr, "--- last lines of") {
		t.Errorf("stderr does not say anqi-edge failed, with its log:\n%s", stderr)
	}
}
