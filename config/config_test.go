package config

import (
	"encoding"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func dur(s string) Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return Duration{d}
}

// TestDefault_MatchesDesignTable pins the defaults of DESIGN.md §2.
func TestDefault_MatchesDesignTable(t *testing.T) {
	c := Default()
	tests := []struct {
		key  string
		got  any
		want any
	}{
		{"server.listen", c.Server.Listen, ":8080"},
		{"upstream.url", c.Upstream.URL, "http://127.0.0.1:8001"},
		{"upstream.timeout", c.Upstream.Timeout, dur("5s")},
		{"redis.addrs", c.Redis.Addrs, []string{"127.0.0.1:6379"}},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9090"},
		{"admin.token", c.Admin.Token, ""},
		{"auth.token_secret", c.Auth.TokenSecret, ""},
		{"cache.ttl", c.Cache.TTL, dur("30s")},
		{"cache.stale_while_revalidate", c.Cache.StaleWhileRevalidate, dur("30s")},
		{"cache.stale_if_error", c.Cache.StaleIfError, dur("10m")},
		{"cache.memory.max_bytes", c.Cache.Memory.MaxBytes, 256 * MiB},
		{"cache.memory.ttl", c.Cache.Memory.TTL, dur("5s")},
		{"cache.negative_ttl", c.Cache.NegativeTTL, dur("0s")},
		{"server.max_request_body", c.Server.MaxRequestBody, 32 * MiB},
		{"server.shutdown_grace", c.Server.ShutdownGrace, dur("15s")},
		{"upstream.max_body", c.Upstream.MaxBody, 8 * MiB},
		{"auth.renew_window", c.Auth.RenewWindow, dur("1h")},
		{"invalidate", c.Invalidate, BuiltinRules()},
		// Not in the table, but stated by the config brief.
		{"server.read_timeout", c.Server.ReadTimeout, dur("60s")},
		{"server.write_timeout", c.Server.WriteTimeout, dur("60s")},
		{"server.idle_timeout", c.Server.IdleTimeout, dur("90s")},
		{"server.concurrency", c.Server.Concurrency, 262144},
		{"upstream.dial_timeout", c.Upstream.DialTimeout, dur("1s")},
		{"upstream.max_conns", c.Upstream.MaxConns, 1024},
		{"upstream.max_idle", c.Upstream.MaxIdle, dur("30s")},
		{"redis.dial_timeout", c.Redis.DialTimeout, dur("250ms")},
		{"redis.timeout", c.Redis.Timeout, dur("100ms")},
		{"redis.key_prefix", c.Redis.KeyPrefix, "ae"},
		{"redis.channel", c.Redis.Channel, ""},
		{"redis.breaker_failures", c.Redis.BreakerFailures, 5},
		{"redis.breaker_cooldown", c.Redis.BreakerCooldown, dur("1s")},
		{"redis.invalidation_queue", c.Redis.InvalidationQueue, 10000},
		{"cache.jitter", c.Cache.Jitter, 0.1},
		{"cache.invalidate_confirm_timeout", c.Cache.InvalidateConfirmTimeout, dur("200ms")},
		{"watch.max_wait", c.Watch.MaxWait, dur("30s")},
		{"watch.heartbeat", c.Watch.Heartbeat, dur("15s")},
		{"watch.max_watchers", c.Watch.MaxWatchers, 10000},
		{"watch.max_per_identity", c.Watch.MaxPerIdentity, 16},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
		// DESIGN §4b.
		{"cdc.addr", c.CDC.Addr, ""},
		{"cdc.user", c.CDC.User, ""},
		{"cdc.password", c.CDC.Password, ""},
		{"cdc.server_id", c.CDC.ServerID, int64(0)},
		{"cdc.table", c.CDC.Tables, []CDCTable(nil)},
		{"cdc.settle", c.CDC.Settle, dur("500ms")},
		{"cdc.heartbeat", c.CDC.Heartbeat, dur("2s")},
		{"cdc.read_timeout", c.CDC.ReadTimeout, dur("6s")},
		{"cdc.lease_ttl", c.CDC.LeaseTTL, dur("3s")},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.key, tt.got, tt.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}

func TestBuiltinRules(t *testing.T) {
	want := map[string]string{
		"/api/communication/message/send": "comm_order_id",
		"/api/communication/order/update": "id",
		"/api/communication/order/accept": "id",
	}
	rules := BuiltinRules()
	if len(rules) != len(want) {
		t.Fatalf("BuiltinRules() has %d rules, want %d", len(rules), len(want))
	}
	for _, r := range rules {
		kind, field := r.Source()
		if r.Method != "POST" || kind != "json" || want[r.Path] != field {
			t.Errorf("unexpected built-in rule %+v (source %s:%s)", r, kind, field)
		}
	}
}

func TestInvalidateRule_Source(t *testing.T) {
	tests := []struct{ id, kind, field string }{
		{"json:comm_order_id", "json", "comm_order_id"},
		{"form:id", "form", "id"},
		{"query:order_id", "query", "order_id"},
		{"json:a:b", "json", "a:b"},
		{"id", "", ""},
	}
	for _, tt := range tests {
		kind, field := InvalidateRule{ID: tt.id}.Source()
		if kind != tt.kind || field != tt.field {
			t.Errorf("Source(%q) = %q, %q; want %q, %q", tt.id, kind, field, tt.kind, tt.field)
		}
	}
}

func TestLoad_ShippedConfigEqualsDefault(t *testing.T) {
	c, err := Load("../config.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("config.toml does not load into Default():\n got %+v\nwant %+v", c, want)
	}
}

// TestLoad_ShippedConfigListsEveryKey keeps config.toml complete as keys are
// added: every key an env var can set must be written out in the file.
func TestLoad_ShippedConfigListsEveryKey(t *testing.T) {
	var m map[string]any
	md, err := toml.DecodeFile("../config.toml", &m)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range envKeys(Default()) {
		if !md.IsDefined(strings.Split(k.key, ".")...) {
			t.Errorf("config.toml does not list %s", k.key)
		}
	}
	if !md.IsDefined("invalidate") {
		t.Error("config.toml does not write out the built-in [[invalidate]] rules")
	}
}

func TestLoad_MissingFileNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.toml")
	_, err := Load(path, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load(missing) = %v, want a not-exist error naming %s", err, path)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestLoad_FileErrorsStartWithFileName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.toml")
	if err := os.WriteFile(path, []byte("[cache]\n\ntll = \"5s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, nil)
	want := path + `: unknown key "cache.tll"`
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v, want %s", err, want)
	}

	if err := os.WriteFile(path, []byte("[cache]\n\nttl = \"5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path, nil)
	if err == nil || !strings.HasPrefix(err.Error(), path+": line 3: ") {
		t.Errorf("Load(syntax error) = %v, want it to start with %q", err, path+": line 3: ")
	}
}

// TestParse_Errors: every bad input is refused with one line that names
// the key (or env var) and the bad value.
func TestParse_Errors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		env  []string
		want []string // substrings of the error
	}{
		{"unknown key", "[cache]\ntll = \"5s\"", nil, []string{`config: unknown key "cache.tll"`}},
		{"unknown section", "[chache]\nttl = \"5s\"", nil, []string{`unknown key "chache"`}},
		{"unknown keys listed", "[server]\nlisen = \":1\"\n[cache]\ntll = \"1s\"", nil, []string{`"server.lisen"`, `"cache.tll"`}},
		{"unknown rule key", "[[invalidate]]\nmethod = \"POST\"\npath = \"/a\"\nid = \"json:id\"\nids = \"x\"", nil, []string{`"invalidate.ids"`}},
		{"syntax error with line", "[server]\nshutdown_grace = \"15s\"\n\nlisten = :8080\n", nil, []string{"config: line 4:"}},
		{"bad duration", "[upstream]\ntimeout = \"5 sec\"", nil, []string{"line 2", "upstream.timeout", `"5 sec"`}},
		{"duration without unit", "[cache]\nttl = 30", nil, []string{"cache.ttl", `"30"`}},
		{"negative duration", "[cache]\nstale_if_error = \"-1m\"", nil, []string{"cache.stale_if_error", `"-1m"`, "negative"}},
		{"bad size", "[cache.memory]\nmax_bytes = \"256MB!\"", nil, []string{"cache.memory.max_bytes", `"256MB!"`}},
		{"ambiguous size unit", "[upstream]\nmax_body = \"8M\"", nil, []string{"upstream.max_body", `"8M"`, "unit"}},
		{"negative size", "[server]\nmax_request_body = -5", nil, []string{"server.max_request_body", `"-5"`}},
		{"wrong type", "[server]\nlisten = 8080", nil, []string{"server.listen", "int64"}},
		{"zero timeout", "[upstream]\ntimeout = \"0s\"", nil, []string{`config: upstream.timeout: must be > 0, got "0s"`}},
		{"zero shutdown grace", "[server]\nshutdown_grace = \"0s\"", nil, []string{"server.shutdown_grace", `"0s"`}},
		{"zero redis timeout", "[redis]\ntimeout = \"0s\"", nil, []string{"redis.timeout", `"0s"`}},
		{"zero L1 ttl with L1 on", "[cache.memory]\nttl = \"0s\"", nil, []string{"cache.memory.ttl", `"0s"`}},
		{"zero watch heartbeat", "[watch]\nheartbeat = \"0s\"", nil, []string{"watch.heartbeat", `"0s"`}},
		{"zero size", "[upstream]\nmax_body = 0", nil, []string{"upstream.max_body", `"0B"`}},
		{"url scheme", "[upstream]\nurl = \"ftp://anqicms:8001\"", nil, []string{"upstream.url", `"ftp://anqicms:8001"`}},
		{"url without host", "[upstream]\nurl = \"http:///api\"", nil, []string{"upstream.url", `"http:///api"`}},
		{"url not absolute", "[upstream]\nurl = \"127.0.0.1:8001\"", nil, []string{"upstream.url", `"127.0.0.1:8001"`}},
		{"url with query", "[upstream]\nurl = \"http://anqicms:8001/?a=b\"", nil, []string{"upstream.url", `"http://anqicms:8001/?a=b"`, "query"}},
		{"url bad port", "[upstream]\nurl = \"http://anqicms:http\"", nil, []string{"upstream.url", `"http://anqicms:http"`}},
		{"listen without port", "[server]\nlisten = \"8080\"", nil, []string{"server.listen", `"8080"`}},
		{"listen named port", "[admin]\nlisten = \"127.0.0.1:http\"", nil, []string{"admin.listen", `"127.0.0.1:http"`}},
		{"listen port range", "[server]\nlisten = \":70000\"", nil, []string{"server.listen", `":70000"`}},
		{"listeners collide, wildcard", "[admin]\nlisten = \"127.0.0.1:8080\"", nil, []string{"admin.listen", `"127.0.0.1:8080"`, `":8080"`}},
		{"listeners collide, same host", "[server]\nlisten = \"10.0.0.1:9000\"\n[admin]\nlisten = \"10.0.0.1:9000\"", nil, []string{"admin.listen", `"10.0.0.1:9000"`}},
		{"listeners collide, admin wildcard", "[server]\nlisten = \"10.0.0.1:9000\"\n[admin]\nlisten = \"0.0.0.0:9000\"", nil, []string{"admin.listen", `"0.0.0.0:9000"`}},
		{"listeners collide, localhost", "[server]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"localhost:9000\"", nil, []string{"admin.listen", `"localhost:9000"`}},
		{"redis addr", "[redis]\naddrs = [\"127.0.0.1:6379\", \"redis\"]", nil, []string{"redis.addrs[1]", `"redis"`}},
		{"redis addr without host", "[redis]\naddrs = [\":6379\"]", nil, []string{"redis.addrs[0]", `":6379"`}},
		{"redis cluster with sentinel", "[redis]\ncluster = true\nmaster_name = \"mymaster\"", nil, []string{"redis.cluster", `"mymaster"`}},
		{"redis cluster with db", "[redis]\ncluster = true\ndb = 2", nil, []string{"redis.db", "2"}},
		{"jitter too big", "[cache]\njitter = 0.6", nil, []string{"cache.jitter", "0.6"}},
		{"jitter negative", "[cache]\njitter = -0.1", nil, []string{"cache.jitter", "-0.1"}},
		{"confirm timeout negative", "[cache]\ninvalidate_confirm_timeout = \"-1ms\"", nil, []string{"cache.invalidate_confirm_timeout", `"-1ms"`}},
		{"confirm timeout past the write's budget", "[cache]\ninvalidate_confirm_timeout = \"2s\"", nil, []string{"cache.invalidate_confirm_timeout", `"2s"`}},
		{"log level", "[log]\nlevel = \"verbose\"", nil, []string{"log.level", `"verbose"`}},
		{"log format", "[log]\nformat = \"xml\"", nil, []string{"log.format", `"xml"`}},
		{"max watchers", "[watch]\nmax_watchers = 0", nil, []string{"watch.max_watchers", "0"}},
		{"max per identity", "[watch]\nmax_per_identity = 0", nil, []string{"watch.max_per_identity", "0"}},
		{"rule method", "[[invalidate]]\nmethod = \"post\"\npath = \"/a\"\nid = \"json:id\"", nil, []string{"invalidate[0].method", `"post"`}},
		{"rule path", "[[invalidate]]\nmethod = \"POST\"\npath = \"api/a\"\nid = \"json:id\"", nil, []string{"invalidate[0].path", `"api/a"`}},
		{"rule id kind", "[[invalidate]]\nmethod = \"POST\"\npath = \"/a\"\nid = \"body:id\"", nil, []string{"invalidate[0].id", `"body:id"`}},
		{"rule id field", "[[invalidate]]\nmethod = \"POST\"\npath = \"/a\"\nid = \"json:\"", nil, []string{"invalidate[0].id", `"json:"`}},
		{"rule duplicate", "[[invalidate]]\nmethod = \"POST\"\npath = \"/a\"\nid = \"json:id\"\n[[invalidate]]\nmethod = \"POST\"\npath = \"/a\"\nid = \"form:id\"", nil, []string{"invalidate[1]", "POST /a"}},
		{"unknown env var", "", []string{"ANQI_EDGE_UPSTREAM_URI=http://x"}, []string{"ANQI_EDGE_UPSTREAM_URI"}},
		{"env for file-only rules", "", []string{"ANQI_EDGE_INVALIDATE=x"}, []string{"ANQI_EDGE_INVALIDATE"}},
		{"env bad duration", "", []string{"ANQI_EDGE_CACHE_TTL=30"}, []string{"ANQI_EDGE_CACHE_TTL", `"30"`, "cache.ttl"}},
		{"env bad size", "", []string{"ANQI_EDGE_CACHE_MEMORY_MAX_BYTES=lots"}, []string{"ANQI_EDGE_CACHE_MEMORY_MAX_BYTES", `"lots"`}},
		{"env bad int", "", []string{"ANQI_EDGE_REDIS_DB=one"}, []string{"ANQI_EDGE_REDIS_DB", `"one"`}},
		{"env bad bool", "", []string{"ANQI_EDGE_ADMIN_PPROF=yes"}, []string{"ANQI_EDGE_ADMIN_PPROF", `"yes"`}},
		{"env bad float", "", []string{"ANQI_EDGE_CACHE_JITTER=ten%"}, []string{"ANQI_EDGE_CACHE_JITTER", `"ten%"`}},
		{"env value validated", "", []string{"ANQI_EDGE_UPSTREAM_URL=anqicms:8001"}, []string{"upstream.url", `"anqicms:8001"`}},
		{"env bad map hides secrets", "", []string{"ANQI_EDGE_AUTH_SITE_SECRETS=a.com=s3cr3t,oops"}, []string{"ANQI_EDGE_AUTH_SITE_SECRETS", "entry 2"}},
		{"empty site secret", "[auth.site_secrets]\n\"a.com\" = \"\"", nil, []string{`auth.site_secrets["a.com"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.toml), tt.env)
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.want)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if !strings.HasPrefix(msg, "config: ") {
				t.Errorf("error %q does not start with \"config: \"", msg)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("error %q is not one line", msg)
			}
			if strings.Contains(msg, "s3cr3t") {
				t.Errorf("error %q leaks a secret", msg)
			}
		})
	}
}

func TestParse_Accepts(t *testing.T) {
	tests := []struct {
		name  string
		toml  string
		check func(*Config) bool
	}{
		{"empty file is Default", "", func(c *Config) bool { return reflect.DeepEqual(c, Default()) }},
		{"no redis", "[redis]\naddrs = []", func(c *Config) bool { return len(c.Redis.Addrs) == 0 }},
		{"L1 off allows zero L1 ttl", "[cache.memory]\nmax_bytes = 0\nttl = \"0s\"", func(c *Config) bool { return c.Cache.Memory.MaxBytes == 0 }},
		{"integer jitter", "[cache]\njitter = 0", func(c *Config) bool { return c.Cache.Jitter == 0 }},
		{"integer size", "[upstream]\nmax_body = 1048576", func(c *Config) bool { return c.Upstream.MaxBody == MiB }},
		{"https url with path", "[upstream]\nurl = \"https://cms.example.com/base\"", func(c *Config) bool { return c.Upstream.URL == "https://cms.example.com/base" }},
		{"same port, different hosts", "[server]\nlisten = \"10.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"", func(c *Config) bool { return true }},
		{"both random ports", "[server]\nlisten = \":0\"\n[admin]\nlisten = \":0\"", func(c *Config) bool { return true }},
		{"ipv6 listen", "[admin]\nlisten = \"[::1]:9090\"", func(c *Config) bool { return c.Admin.Listen == "[::1]:9090" }},
		{"site secrets", "[auth.site_secrets]\n\"a.example.com\" = \"s1\"", func(c *Config) bool {
			return reflect.DeepEqual(c.Auth.SiteSecrets, map[string]string{"a.example.com": "s1"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.toml), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestParse_FileRulesReplaceBuiltins(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []InvalidateRule
	}{
		{"absent keeps built-ins", "[cache]\nttl = \"10s\"", BuiltinRules()},
		{"one rule replaces all", "[[invalidate]]\nmethod = \"PUT\"\npath = \"/admin/order\"\nid = \"query:id\"",
			[]InvalidateRule{{Method: "PUT", Path: "/admin/order", ID: "query:id"}}},
		{"built-ins plus one", "" +
			"[[invalidate]]\nmethod = \"POST\"\npath = \"/api/communication/message/send\"\nid = \"json:comm_order_id\"\n" +
			"[[invalidate]]\nmethod = \"POST\"\npath = \"/admin/order/save\"\nid = \"form:order_id\"\n",
			[]InvalidateRule{
				{Method: "POST", Path: "/api/communication/message/send", ID: "json:comm_order_id"},
				{Method: "POST", Path: "/admin/order/save", ID: "form:order_id"},
			}},
		{"empty list disables write hooks", "invalidate = []", []InvalidateRule{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.toml), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Invalidate, tt.want) {
				t.Errorf("Invalidate = %+v, want %+v", c.Invalidate, tt.want)
			}
		})
	}
}

func TestParse_EnvOverrides(t *testing.T) {
	file := "[upstream]\nurl = \"http://file:8001\"\n[redis]\naddrs = [\"file:6379\"]\n"
	tests := []struct {
		name string
		env  string
		get  func(*Config) any
		want any
	}{
		{"string", "ANQI_EDGE_UPSTREAM_URL=http://anqicms:8001", func(c *Config) any { return c.Upstream.URL }, "http://anqicms:8001"},
		{"empty string", "ANQI_EDGE_REDIS_KEY_PREFIX=", func(c *Config) any { return c.Redis.KeyPrefix }, ""},
		{"duration", "ANQI_EDGE_UPSTREAM_TIMEOUT=1500ms", func(c *Config) any { return c.Upstream.Timeout }, dur("1.5s")},
		{"nested duration", "ANQI_EDGE_CACHE_MEMORY_TTL=2s", func(c *Config) any { return c.Cache.Memory.TTL }, dur("2s")},
		{"size", "ANQI_EDGE_CACHE_MEMORY_MAX_BYTES=512MiB", func(c *Config) any { return c.Cache.Memory.MaxBytes }, 512 * MiB},
		{"plain size", "ANQI_EDGE_UPSTREAM_MAX_BODY=1024", func(c *Config) any { return c.Upstream.MaxBody }, KiB},
		{"list", "ANQI_EDGE_REDIS_ADDRS=a:1, b:2", func(c *Config) any { return c.Redis.Addrs }, []string{"a:1", "b:2"}},
		{"empty list = no redis", "ANQI_EDGE_REDIS_ADDRS=", func(c *Config) any { return len(c.Redis.Addrs) }, 0},
		{"map", "ANQI_EDGE_AUTH_SITE_SECRETS=a.com=s1,b.com=s=2", func(c *Config) any { return c.Auth.SiteSecrets },
			map[string]string{"a.com": "s1", "b.com": "s=2"}},
		{"bool", "ANQI_EDGE_REDIS_CLUSTER=true", func(c *Config) any { return c.Redis.Cluster }, true},
		{"int", "ANQI_EDGE_WATCH_MAX_PER_IDENTITY=4", func(c *Config) any { return c.Watch.MaxPerIdentity }, 4},
		{"float", "ANQI_EDGE_CACHE_JITTER=0.25", func(c *Config) any { return c.Cache.Jitter }, 0.25},
		{"duration", "ANQI_EDGE_CACHE_INVALIDATE_CONFIRM_TIMEOUT=0s", func(c *Config) any { return c.Cache.InvalidateConfirmTimeout.Duration }, time.Duration(0)},
		{"other env ignored", "HOME=/root", func(c *Config) any { return c.Upstream.URL }, "http://file:8001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(file), []string{tt.env})
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s: got %#v, want %#v", tt.env, got, tt.want)
			}
		})
	}
}

func TestParse_EnvWinsOverFileAndLastWins(t *testing.T) {
	c, err := Parse([]byte("[cache]\nttl = \"10s\""), []string{"ANQI_EDGE_CACHE_TTL=20s", "ANQI_EDGE_CACHE_TTL=40s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Cache.TTL != dur("40s") {
		t.Errorf("cache.ttl = %v, want 40s", c.Cache.TTL)
	}
}

// TestEnv_EveryKeySettable writes every scalar key's default back through
// its env var: each key has a variable, and each type can be parsed.
func TestEnv_EveryKeySettable(t *testing.T) {
	keys := envKeys(Default())
	var environ []string
	for name, k := range keys {
		environ = append(environ, name+"="+formatEnv(t, k.value))
		if want := "ANQI_EDGE_" + strings.ToUpper(strings.ReplaceAll(k.key, ".", "_")); name != want {
			t.Errorf("key %s has env var %s, want %s", k.key, name, want)
		}
	}
	sort.Strings(environ)
	if len(keys) < 40 {
		t.Errorf("only %d env keys found; the reflection walk missed fields", len(keys))
	}
	c, err := Parse(nil, environ)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("defaults written through env do not round-trip:\n%s", strings.Join(environ, "\n"))
	}
}

func formatEnv(t *testing.T, v reflect.Value) string {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	switch v.Kind() {
	case reflect.Slice:
		var items []string
		for i := range v.Len() {
			items = append(items, v.Index(i).String())
		}
		return strings.Join(items, ",")
	case reflect.Map:
		var items []string
		for _, k := range v.MapKeys() {
			items = append(items, k.String()+"="+v.MapIndex(k).String())
		}
		return strings.Join(items, ",")
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	default:
		return fmt.Sprint(v.Interface())
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in    string
		want  Size
		print string
	}{
		{"256MiB", 256 << 20, "256MiB"},
		{"32MiB", 32 << 20, "32MiB"},
		{"8MB", 8_000_000, "8MB"},
		{"512KiB", 512 << 10, "512KiB"},
		{"1GiB", 1 << 30, "1GiB"},
		{"100B", 100, "100B"},
		{"1024", 1024, "1KiB"},
		{"1000", 1000, "1KB"},
		{"0", 0, "0B"},
		{"2GB", 2_000_000_000, "2GB"},
		{"1536MiB", 1536 << 20, "1536MiB"},
		{" 64 kib ", 64 << 10, "64KiB"},
		{"1025", 1025, "1025B"},
	}
	for _, tt := range tests {
		var s Size
		if err := s.UnmarshalText([]byte(tt.in)); err != nil {
			t.Errorf("UnmarshalText(%q) = %v", tt.in, err)
			continue
		}
		if s != tt.want {
			t.Errorf("UnmarshalText(%q) = %d, want %d", tt.in, s, tt.want)
		}
		if got := s.String(); got != tt.print {
			t.Errorf("Size(%d).String() = %q, want %q", s, got, tt.print)
		}
		if back, err := ParseSize(s.String()); err != nil || back != s {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s.String(), back, err, s)
		}
	}
	for _, bad := range []string{"", "-1", "-1MiB", "MiB", "1.5GiB", "8M", "12 bytes", "0x10", "9223372036854775807KiB", "99999999999999999999"} {
		var s Size
		err := s.UnmarshalText([]byte(bad))
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("UnmarshalText(%q) = %v, want an error quoting the value", bad, err)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"5s", 5 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"250ms", 250 * time.Millisecond},
		{"0s", 0},
		{"0", 0},
	}
	for _, tt := range tests {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.in)); err != nil || d.Duration != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tt.in, d, err, tt.want)
		}
	}
	for _, bad := range []string{"", "5", "-1s", "five seconds", "1d"} {
		var d Duration
		err := d.UnmarshalText([]byte(bad))
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("UnmarshalText(%q) = %v, want an error quoting the value", bad, err)
		}
	}
}

func TestValidate_JitterNaN(t *testing.T) {
	c := Default()
	c.Cache.Jitter = math.NaN()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "cache.jitter") {
		t.Errorf("Validate(NaN jitter) = %v", err)
	}
}

func TestEnv_KubernetesServiceLinksAreIgnored(t *testing.T) {
	env := []string{
		"ANQI_EDGE_PORT=tcp://10.0.0.1:80",
		"ANQI_EDGE_PORT_80_TCP_ADDR=10.0.0.1",
		"ANQI_EDGE_SERVICE_HOST=10.0.0.1",
		"ANQI_EDGE_SERVICE_PORT=80",
	}
	if _, err := Parse(nil, env); err != nil {
		t.Fatalf("service-link variables must not be config errors: %v", err)
	}
	if _, err := Parse(nil, []string{"ANQI_EDGE_PORTS=1"}); err == nil {
		t.Fatal("ANQI_EDGE_PORTS is no service link and names no key: want an error")
	}
}

const cdcTables = `
[[cdc.table]]
name = "communication_orders"
order_column = "id"

[[cdc.table]]
name = "anqicms.communication_messages"
order_column = "comm_order_id"
`

func TestParse_CDCTablesAndKeys(t *testing.T) {
	c, err := Parse([]byte("[cdc]\naddr = \"db:3306\"\nuser = \"cdc\"\nserver_id = 4242\nsettle = \"0s\"\n"+cdcTables), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []CDCTable{{"communication_orders", "id"}, {"anqicms.communication_messages", "comm_order_id"}}
	if !reflect.DeepEqual(c.CDC.Tables, want) || c.CDC.Addr != "db:3306" || c.CDC.ServerID != 4242 || c.CDC.Settle != dur("0s") {
		t.Errorf("cdc = %+v", c.CDC)
	}
	// A unix socket path is an address too.
	if _, err := Parse([]byte("[cdc]\naddr = \"/run/mysqld/mysqld.sock\"\n"+cdcTables), nil); err != nil {
		t.Errorf("socket path: %v", err)
	}
}

func TestParse_CDCEnvOverrides(t *testing.T) {
	env := []string{"ANQI_EDGE_CDC_ADDR=10.0.0.5:3306", "ANQI_EDGE_CDC_PASSWORD=s3cret", "ANQI_EDGE_CDC_SERVER_ID=77", "ANQI_EDGE_CDC_SETTLE=1s"}
	c, err := Parse([]byte(cdcTables), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.CDC.Addr != "10.0.0.5:3306" || c.CDC.Password != "s3cret" || c.CDC.ServerID != 77 || c.CDC.Settle != dur("1s") {
		t.Errorf("cdc = %+v", c.CDC)
	}
	_, err = Parse([]byte(cdcTables), []string{"ANQI_EDGE_CDC_ADDR=db:3306", "ANQI_EDGE_CDC_PASSWORD=s3cret", "ANQI_EDGE_CDC_HEARTBEAT=soon"})
	if err == nil || !strings.Contains(err.Error(), "cdc.heartbeat") {
		t.Errorf("bad env duration: %v", err)
	}
}

func TestParse_CDCErrorsNameTheKey(t *testing.T) {
	on := "[cdc]\naddr = \"db:3306\"\n"
	tests := []struct{ name, toml, want string }{
		{"tables without addr", cdcTables, "config: cdc.addr: must be set"},
		{"addr without tables", on, "config: cdc.table: at least one [[cdc.table]]"},
		{"bad addr", "[cdc]\naddr = \"db\"\n" + cdcTables, `cdc.addr: must be host:port`},
		{"rule without name", on + "[[cdc.table]]\norder_column = \"id\"\n", `config: cdc.table[0].name: must be "table" or "database.table", got ""`},
		{"rule without column", on + "[[cdc.table]]\nname = \"communication_orders\"\n", `config: cdc.table[0].order_column: must name the column`},
		{"bad name", on + "[[cdc.table]]\nname = \"a.b.c\"\norder_column = \"id\"\n", `cdc.table[0].name`},
		{"duplicate table", on + cdcTables + "[[cdc.table]]\nname = \"Communication_Orders\"\norder_column = \"id\"\n", `cdc.table[2].name: duplicates cdc.table[0]`},
		{"unknown rule key", on + "[[cdc.table]]\nname = \"x\"\ncolumn = \"id\"\n", `unknown key "cdc.table.column"`},
		{"server id too large", on + "server_id = 4294967296\n" + cdcTables, "cdc.server_id"},
		{"negative settle", on + "settle = \"-1s\"\n" + cdcTables, "cdc.settle"},
		{"read timeout not above heartbeat", on + "heartbeat = \"5s\"\nread_timeout = \"5s\"\n" + cdcTables, "cdc.read_timeout: must be longer than cdc.heartbeat"},
		{"zero lease", on + "lease_ttl = \"0s\"\n" + cdcTables, "cdc.lease_ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.toml), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
