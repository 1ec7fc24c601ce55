package main

// The purge subcommand: `anqi-edge purge -config FILE -id N` drops an order
// on every replica, through Redis when one is configured (the replicas hear
// it on pub/sub) and through this host's admin listener otherwise.

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/redistest"
)

// purgeConfig writes a config file for the CLI and returns its path.
func purgeConfig(t *testing.T, redisAddrs []string, cluster bool, prefix, channel, adminListen, token string) string {
	t.Helper()
	quoted := make([]string, len(redisAddrs))
	for i, a := range redisAddrs {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	toml := fmt.Sprintf(`[redis]
addrs = [%s]
cluster = %t
key_prefix = %q
channel = %q

[admin]
listen = %q
token = %q
`, strings.Join(quoted, ", "), cluster, prefix, channel, adminListen, token)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func purgeRun(args ...string) (int, string) {
	var stderr bytes.Buffer
	code := run(append([]string{"purge"}, args...), nil, &stderr)
	return code, stderr.String()
}

// purgeRead returns X-Cache and whether the body is a code 0 answer.
func purgeRead(t *testing.T, base string, id int64, token string) string {
	t.Helper()
	resp, body := edgetest.Get(t, edgetest.DetailURL(base, id), "token: "+token)
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte(`{"code":0`)) {
		t.Fatalf("detail %d: HTTP %d %s", id, resp.StatusCode, body)
	}
	return resp.Header.Get("X-Cache")
}

// purgeDetail returns X-Cache and whether order id shows the admin-panel
// change.
func purgeDetail(t *testing.T, base string, id int64, token string) (string, bool) {
	t.Helper()
	resp, body := edgetest.Get(t, edgetest.DetailURL(base, id), "token: "+token)
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte(`{"code":0`)) {
		t.Fatalf("detail %d: HTTP %d %s", id, resp.StatusCode, body)
	}
	return resp.Header.Get("X-Cache"), bytes.Contains(body, []byte("changed in the admin panel"))
}

func purgeWarm(t *testing.T, base string, id int64, token string) {
	t.Helper()
	for range 5 {
		if purgeRead(t, base, id, token) == "HIT" {
			return
		}
	}
	t.Fatalf("order %d never became a HIT on %s", id, base)
}

func purgeSubscribed(t *testing.T, admin string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, b := edgetest.Get(t, admin+"/readyz")
		if bytes.Contains(b, []byte(`"subscribed":true`)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never subscribed: %s", admin, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPurgeCLI_ThroughRedisReachesEveryReplica(t *testing.T) {
	for _, mode := range []string{"redis", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			var addrs []string
			var edit func(*config.Config)
			if mode == "cluster" {
				addrs = redistest.StartCluster(t).Addrs()
				edit = func(c *config.Config) { c.Redis.Cluster = true }
			} else {
				addrs = []string{redistest.Shared(t)}
			}
			env := edgetest.Start(t, edgetest.Options{Redis: addrs, Verify: true, Config: edit})
			_, bURL, bAdmin := env.Replica(t, edit)
			purgeSubscribed(t, env.Admin)
			purgeSubscribed(t, bAdmin)
			env.Fake.Seed(1, 1)
			tok := env.Fake.Token(1, 24*time.Hour)
			purgeWarm(t, env.URL, 1, tok)
			purgeWarm(t, bURL, 1, tok)

			// A change anqi-edge cannot see (the admin panel), then the purge.
			env.Fake.AppendMessage(1, fake.Message{Content: "changed in the admin panel"})
			// The admin listener is not involved: point it nowhere useful.
			cfg := purgeConfig(t, addrs, mode == "cluster", env.Config.Redis.KeyPrefix, env.Config.Redis.Channel,
				"127.0.0.1:1", "")
			code, out := purgeRun("-config", cfg, "-id", "1", "-host", "example.com")
			if code != 0 {
				t.Fatalf("purge exited %d: %s", code, out)
			}
			if !strings.Contains(out, "via redis") {
				t.Errorf("purge output does not say how it purged: %q", out)
			}
			// Pub/sub is asynchronous: each replica drops its L1 copy within
			// moments (10s is a bound for a loaded machine). The first read
			// after that is a MISS that fetches the change made behind
			// anqi-edge's back; B may then get A's refill from Redis.
			deadline := time.Now().Add(10 * time.Second)
			for {
				x, fresh := purgeDetail(t, env.URL, 1, tok)
				if x != "HIT" || fresh {
					if x != "MISS" || !fresh {
						t.Fatalf("A's first read after the purge: X-Cache %s, has the change %v; want a MISS with it", x, fresh)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("A still serves its old L1 copy 10s after the CLI purge")
				}
				time.Sleep(20 * time.Millisecond)
			}
			deadline = time.Now().Add(10 * time.Second)
			for {
				if _, fresh := purgeDetail(t, bURL, 1, tok); fresh {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("B still serves the pre-purge body 10s after the CLI purge")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestPurgeCLI_WithoutRedisUsesTheAdminListener(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true})
	env.Fake.Seed(1, 1)
	tok := env.Fake.Token(1, 24*time.Hour)
	purgeWarm(t, env.URL, 1, tok)

	cfg := purgeConfig(t, nil, false, "ae", "anqi-edge:invalidate", env.Edge.AdminAddr(), env.Config.Admin.Token)
	code, out := purgeRun("-config", cfg, "-id", "1")
	if code != 0 {
		t.Fatalf("purge exited %d: %s", code, out)
	}
	if x := purgeRead(t, env.URL, 1, tok); x != "MISS" {
		t.Fatalf("read after the CLI purge: X-Cache %s, want MISS", x)
	}
	// 0.0.0.0 in admin.listen means "this host": the CLI dials 127.0.0.1.
	purgeWarm(t, env.URL, 1, tok)
	port := env.Edge.AdminAddr()[strings.LastIndex(env.Edge.AdminAddr(), ":"):]
	cfg = purgeConfig(t, nil, false, "ae", "anqi-edge:invalidate", "0.0.0.0"+port, env.Config.Admin.Token)
	if code, out := purgeRun("-config", cfg, "-id", "1"); code != 0 {
		t.Fatalf("purge via 0.0.0.0 exited %d: %s", code, out)
	}
	if x := purgeRead(t, env.URL, 1, tok); x != "MISS" {
		t.Fatalf("read after the second CLI purge: X-Cache %s, want MISS", x)
	}
}

func TestPurgeCLI_FailuresExitNonZero(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true})
	admin := env.Edge.AdminAddr()
	dead := redistest.Start(t)
	deadAddr := dead.Addr()
	dead.Kill()
	cases := []struct {
		name string
		args func(t *testing.T) []string
		code int
		msg  string
	}{
		{"id missing", func(t *testing.T) []string {
			return []string{"-config", purgeConfig(t, nil, false, "ae", "c", admin, "admin-secret")}
		}, 2, "-id"},
		{"id zero", func(t *testing.T) []string {
			return []string{"-config", purgeConfig(t, nil, false, "ae", "c", admin, "admin-secret"), "-id", "0"}
		}, 2, "-id"},
		{"id not a number", func(t *testing.T) []string {
			return []string{"-config", purgeConfig(t, nil, false, "ae", "c", admin, "admin-secret"), "-id", "abc"}
		}, 2, "-id"},
		{"config missing", func(t *testing.T) []string {
			return []string{"-config", filepath.Join(t.TempDir(), "nope.toml"), "-id", "1"}
		}, 2, "nope.toml"},
		{"redis unreachable", func(t *testing.T) []string {
			return []string{"-config", purgeConfig(t, []string{deadAddr}, false, "ae", "c", admin, "admin-secret"), "-id", "1"}
		}, 1, deadAddr},
		{"no redis and no admin token", func(t *testing.T) []string {
			return []string{"-config", purgeConfig(t, nil, false, "ae", "c", admin, ""), "-id", "1"}
		}, 1, "admin.token"},
		{"wrong admin token", func(t *testing.T) []string {
			return []string{"-config", purgeConfig(t, nil, false, "ae", "c", admin, "not-the-token"), "-id", "1"}
		}, 1, "401"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := purgeRun(c.args(t)...)
			if code != c.code || !strings.Contains(out, c.msg) {
				t.Fatalf("exit %d, output %q; want exit %d mentioning %q", code, out, c.code, c.msg)
			}
		})
	}
}
