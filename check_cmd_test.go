package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anqi-edge/internal/redistest"
	"anqi-edge/internal/testcert"
)

// checkRun runs "anqi-edge check -config FILE" in-process on toml.
func checkRun(t *testing.T, toml string) (int, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"check", "-config", path}, cleanEnv(), &out) }()
	select {
	case code := <-done:
		return code, out.String()
	case <-time.After(90 * time.Second):
		t.Fatal("anqi-edge check did not return")
		return 0, ""
	}
}

func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestCheck_EverythingReachableExitsZeroWithOneOkLineEach(t *testing.T) {
	_, anqi := startFake(t)
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.Issue(t, "shop.example.com").Write(t, dir, "site")
	public := filepath.Join(dir, "public")
	os.MkdirAll(filepath.Join(public, "static"), 0o755)
	prefix := strings.TrimSuffix(strings.NewReplacer("/", "_").Replace(redistest.Prefix(t)), ":")

	code, out := checkRun(t, fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
tls_cert = %q
tls_key = %q
[upstream]
url = %q
[redis]
addrs = [%q]
key_prefix = %q
timeout = "2s"
dial_timeout = "2s"
[admin]
listen = "127.0.0.1:0"
[static]
root = %q
`, certFile, keyFile, anqi, redistest.Shared(t), prefix, public))
	if code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, want := range []string{"ok   config ", "ok   upstream ", "ok   redis ", "ok   redis permissions", "ok   tls certificate ", "ok   static root "} {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, want)
		}
		if !found {
			t.Errorf("no line starting %q in:\n%s", want, out)
		}
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "ok   ") {
			t.Errorf("line %q is not an ok line", l)
		}
	}
}

func TestCheck_EachFailureIsOneLineNamingTheKeyAndExitIsNonZero(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, _ := ca.Issue(t, "a.example").Write(t, dir, "a")
	_, otherKey := ca.Issue(t, "b.example").Write(t, dir, "b")
	code, out := checkRun(t, fmt.Sprintf(`
[server]
tls_cert = %q
tls_key = %q
[upstream]
url = "http://%s"
timeout = "2s"
[redis]
addrs = [%q]
[static]
root = %q
`, certFile, otherKey, closedAddr(t), closedAddr(t), filepath.Join(dir, "no-public")))
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"FAIL upstream http://127.0.0.1:", "upstream.url",
		"FAIL redis 127.0.0.1:", "redis.addrs",
		"FAIL tls certificate", "server.tls_key",
		"FAIL static root", "static.root",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report does not contain %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 5 {
		t.Errorf("%d lines, want 5 (config ok + 4 failures):\n%s", n, out)
	}
}

func TestCheck_InvalidOrMissingFileFailsWithoutTryingAnything(t *testing.T) {
	code, out := checkRun(t, "[server]\ntls_cert = \"/etc/ssl/site.pem\"\n")
	if code != 1 || !strings.HasPrefix(out, "FAIL config ") || !strings.Contains(out, "server.tls_key") || strings.Count(out, "\n") != 1 {
		t.Fatalf("invalid file: exit %d:\n%s", code, out)
	}
	var buf bytes.Buffer
	missing := filepath.Join(t.TempDir(), "none.toml")
	if code := run([]string{"check", "-config", missing}, cleanEnv(), &buf); code != 1 || !strings.Contains(buf.String(), "FAIL config "+missing) {
		t.Fatalf("missing file: exit %d:\n%s", code, buf.String())
	}
	buf.Reset()
	if code := run([]string{"check", "-nope"}, cleanEnv(), &buf); code != 2 || strings.Count(buf.String(), "\n") != 1 {
		t.Fatalf("bad flag: exit %d:\n%s", code, buf.String())
	}
}
