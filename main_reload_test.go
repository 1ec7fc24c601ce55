package main

// Reload without a restart (SIGHUP, POST /admin/reload), on the real
// binary: live keys take effect for new requests, keys that need a restart
// are named in one warning and keep their value, a bad file is refused with
// the start-up message, and L1 and in-flight requests survive.

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"anqi-edge/proxy"
)

func reloadConf(upstream, token, ttl, listen string) string {
	return fmt.Sprintf(`
[server]
listen = %q

[upstream]
url = %q

[redis]
addrs = []

[admin]
listen = "127.0.0.1:0"
token = %q

[cache]
ttl = %q

[log]
level = "info"
`, listen, upstream, token, ttl)
}

// purgeStatus calls POST /admin/purge?id=1 with token.
func purgeStatus(t *testing.T, e *edge, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.admin+"/admin/purge?id=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func detail(t *testing.T, e *edge, id int64, token string) (xcache string, status int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s%s?id=%d", e.public, proxy.DetailPath, id), nil)
	req.Header.Set("token", token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("X-Cache"), resp.StatusCode
}

func eventuallyLog(t *testing.T, e *edge, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.logs(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", want, e.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBinary_SIGHUPAppliesLiveKeysAndNamesTheOnesThatNeedARestart(t *testing.T) {
	f, upstream := startFake(t)
	users, orders := f.Seed(1, 1)
	tok := f.Token(users[0].ID, 48*time.Hour)
	e, path := startBinaryConfig(t, reloadConf(upstream, "old-token", "1h", "127.0.0.1:0"))

	detail(t, e, orders[0].ID, tok)
	if x, _ := detail(t, e, orders[0].ID, tok); x != "HIT" {
		t.Fatalf("warm read: X-Cache %s, want HIT", x)
	}
	// A request in flight across the reload finishes normally.
	hold := f.Hold("/__echo/slow")
	inflight := make(chan int, 1)
	go func() {
		resp, err := client.Get("http://" + e.public + "/__echo/slow")
		if err != nil {
			inflight <- 0
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	<-hold.Started

	// New token, and a listen address that cannot change live.
	if err := os.WriteFile(path, []byte(reloadConf(upstream, "new-token", "1h", "127.0.0.1:1")), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cmd.Process.Signal(syscall.SIGHUP)
	eventuallyLog(t, e, "server.listen")
	if !strings.Contains(e.logs(), "need a restart") {
		t.Fatalf("the warning does not say the key needs a restart:\n%s", e.logs())
	}
	if got := purgeStatus(t, e, "old-token"); got != http.StatusUnauthorized {
		t.Fatalf("purge with the old token after reload: HTTP %d, want 401", got)
	}
	// The old listener still serves (listen kept its value), and L1
	// survived the reload.
	if x, st := detail(t, e, orders[0].ID, tok); st != http.StatusOK || x != "HIT" {
		t.Fatalf("read after reload: HTTP %d X-Cache %s, want 200 HIT from the same L1", st, x)
	}
	hold.Release()
	if code := <-inflight; code != http.StatusOK {
		t.Fatalf("request in flight across the reload: HTTP %d", code)
	}
	if got := purgeStatus(t, e, "new-token"); got != http.StatusNoContent {
		t.Fatalf("purge with the new token: HTTP %d, want 204", got)
	}

	// A live cache key: a 1ms ttl makes the next two reads MISS then STALE.
	if err := os.WriteFile(path, []byte(reloadConf(upstream, "new-token", "1ms", "127.0.0.1:1")), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		detail(t, e, orders[0].ID, tok)
		time.Sleep(5 * time.Millisecond)
		if x, _ := detail(t, e, orders[0].ID, tok); x == "STALE" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache.ttl = 1ms never took effect:\n%s", e.logs())
		}
	}
}

func TestBinary_ReloadRefusesABadFileAndKeepsTheRunningConfig(t *testing.T) {
	_, upstream := startFake(t)
	e, path := startBinaryConfig(t, reloadConf(upstream, "tok", "30s", "127.0.0.1:0"))
	bad := strings.Replace(reloadConf(upstream, "other", "30s", "127.0.0.1:0"), `ttl = "30s"`, `ttl = "thirty seconds"`, 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	// Through the admin API this time: same as SIGHUP, answered in-line.
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.admin+"/admin/reload", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("POST /admin/reload of a bad file: HTTP %d, want 400", resp.StatusCode)
	}
	eventuallyLog(t, e, "config reload refused")
	if !strings.Contains(e.logs(), "cache.ttl") {
		t.Fatalf("the refusal does not name the key, as start-up would:\n%s", e.logs())
	}
	if got := purgeStatus(t, e, "tok"); got != http.StatusNoContent {
		t.Fatalf("purge with the running token after a refused reload: HTTP %d, want 204", got)
	}
	// A good file through the API takes effect at once.
	if err := os.WriteFile(path, []byte(reloadConf(upstream, "other", "30s", "127.0.0.1:0")), 0o600); err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest(http.MethodPost, "http://"+e.admin+"/admin/reload", nil)
	req.Header.Set("Authorization", "Bearer tok")
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /admin/reload of a good file: HTTP %d, want 204", resp.StatusCode)
	}
	if got := purgeStatus(t, e, "other"); got != http.StatusNoContent {
		t.Fatalf("purge with the reloaded token: HTTP %d, want 204", got)
	}
	// Without the bearer token, no reload.
	req, _ = http.NewRequest(http.MethodPost, "http://"+e.admin+"/admin/reload", nil)
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /admin/reload without the token: HTTP %d, want 401", resp.StatusCode)
	}
}
