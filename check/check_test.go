package check_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/check"
	"anqi-edge/config"
	"anqi-edge/internal/redistest"
	"anqi-edge/internal/testcert"
)

func upstream(url string) config.Upstream {
	u := config.Default().Upstream
	u.URL = url
	return u
}

func mustFail(t *testing.T, r check.Result, key string) {
	t.Helper()
	if r.Err == nil || !strings.Contains(r.Err.Error(), key) {
		t.Fatalf("%s: err %v, want a failure naming %s", r.Name, r.Err, key)
	}
}

func mustPass(t *testing.T, rs ...check.Result) {
	t.Helper()
	for _, r := range rs {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Name, r.Err)
		}
	}
}

func TestUpstream_AnqiCMSAnswersWithItsEnvelope(t *testing.T) {
	anqi := httptest.NewServer(fake.New(fake.Options{}))
	defer anqi.Close()
	r := check.Upstream(context.Background(), upstream(anqi.URL))
	mustPass(t, r)
	if !strings.Contains(r.Name, "code 1001") {
		t.Errorf("name %q does not say what AnqiCMS answered", r.Name)
	}
}

func TestUpstream_NotAnqiCMSFailsNamingUpstreamURL(t *testing.T) {
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html>hi</html>")) }))
	defer html.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String()
	ln.Close()
	for _, url := range []string{notFound.URL, html.URL, closed} {
		mustFail(t, check.Upstream(context.Background(), upstream(url)), "upstream.url")
	}
}

func redisConfig(addrs ...string) config.Redis {
	c := config.Default().Redis
	c.Addrs = addrs
	c.Timeout = config.Duration{Duration: 2 * time.Second}
	c.DialTimeout = config.Duration{Duration: 2 * time.Second}
	return c
}

func TestRedis_ReachableServerPassesPingAndPermissions(t *testing.T) {
	c := redisConfig(redistest.Shared(t))
	c.KeyPrefix = strings.TrimSuffix(redistest.Prefix(t), ":")
	rs := check.Redis(context.Background(), c)
	if len(rs) != 2 {
		t.Fatalf("results %+v, want ping and permissions", rs)
	}
	mustPass(t, rs...)
}

func TestRedis_FailuresNameTheKey(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	mustFail(t, check.Redis(context.Background(), redisConfig(closed))[0], "redis.addrs")

	s := redistest.Start(t)
	admin := s.Client(t)
	ctx := context.Background()
	// A user that may not publish on the channel.
	if err := admin.Do(ctx, "ACL", "SETUSER", "narrow", "on", ">pw", "~ae:*", "-@all", "+ping", "+get", "+set", "+del").Err(); err != nil {
		t.Fatal(err)
	}
	c := redisConfig(s.Addr())
	c.Username, c.Password = "narrow", "pw"
	rs := check.Redis(ctx, c)
	mustPass(t, rs[0])
	mustFail(t, rs[len(rs)-1], "redis.username")
	if !strings.Contains(rs[len(rs)-1].Err.Error(), "PUBLISH") {
		t.Errorf("the failure does not say which command: %v", rs[len(rs)-1].Err)
	}
	c.Password = "wrong"
	mustFail(t, check.Redis(ctx, c)[0], "redis.username/redis.password")
	if check.Redis(ctx, config.Redis{}) != nil {
		t.Error("Redis off still checked")
	}
}

func TestRedis_TLSServerWithAnUnknownCAFailsNamingTLSCA(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	caFile := ca.WriteCA(t, dir)
	certFile, keyFile := ca.Issue(t, "127.0.0.1").Write(t, dir, "redis")
	s := redistest.StartTLS(t, redistest.TLSFiles{Cert: certFile, Key: keyFile, CA: caFile}, &tls.Config{RootCAs: ca.Pool()})
	c := redisConfig(s.Addr())
	c.TLS = true
	mustFail(t, check.Redis(context.Background(), c)[0], "redis.tls")
	c.TLSCA = caFile
	mustPass(t, check.Redis(context.Background(), c)...)
}

func TestRedis_ClusterStateIsChecked(t *testing.T) {
	if !redistest.ClusterAvailable() {
		t.Skip("redis-cli not installed")
	}
	cl := redistest.StartCluster(t)
	c := redisConfig(cl.Addrs()...)
	c.Cluster = true
	rs := check.Redis(context.Background(), c)
	mustPass(t, rs...)
	if len(rs) != 3 || !strings.Contains(rs[1].Name, "cluster state") {
		t.Fatalf("results %+v", rs)
	}
}

func TestTLS_PairIsLoadedAndChecked(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.Issue(t, "shop.example.com").Write(t, dir, "good")
	_, otherKey := ca.Issue(t, "x").Write(t, dir, "other")
	oldCert, oldKey := ca.IssueValid(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), "shop.example.com").Write(t, dir, "old")
	now := time.Now()
	ok := check.TLS(config.Server{TLSCert: certFile, TLSKey: keyFile}, now)
	mustPass(t, ok...)
	if !strings.Contains(ok[0].Name, "shop.example.com") {
		t.Errorf("name %q", ok[0].Name)
	}
	mustFail(t, check.TLS(config.Server{TLSCert: certFile, TLSKey: otherKey}, now)[0], "server.tls_key")
	mustFail(t, check.TLS(config.Server{TLSCert: oldCert, TLSKey: oldKey}, now)[0], "expired")
	mustFail(t, check.TLS(config.Server{TLSCert: filepath.Join(dir, "none"), TLSKey: keyFile}, now)[0], "server.tls_cert")
	if check.TLS(config.Server{}, now) != nil {
		t.Error("TLS off still checked")
	}
}

func TestStatic_RootMustBeAReadableDirectory(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "robots.txt"), []byte("x"), 0o644)
	mustPass(t, check.Static(config.Static{Root: dir})...)
	mustFail(t, check.Static(config.Static{Root: filepath.Join(dir, "none")})[0], "static.root")
	mustFail(t, check.Static(config.Static{Root: filepath.Join(dir, "robots.txt")})[0], "static.root")
	if check.Static(config.Static{}) != nil {
		t.Error("static off still checked")
	}
}

func TestRun_ExtraChecksAreReportedAndAnyFailureFailsTheReport(t *testing.T) {
	anqi := httptest.NewServer(fake.New(fake.Options{}))
	defer anqi.Close()
	cfg := config.Default()
	cfg.Upstream.URL = anqi.URL
	cfg.Redis.Addrs = nil
	extra := func(ctx context.Context, _ *config.Config) []check.Result {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("extra check without a deadline")
		}
		return []check.Result{{Name: "cdc binlog_format is ROW"}, {Name: "cdc grants", Err: errors.New("cdc.user \"anqi\": missing REPLICATION SLAVE")}}
	}
	rs := check.Run(context.Background(), cfg, check.Options{Extra: []check.Func{extra}})
	var out bytes.Buffer
	if check.Write(&out, rs) {
		t.Fatal("a failed check reported all ok")
	}
	want := "ok   upstream " + anqi.URL + " answers like AnqiCMS (GET /api/communication/orders: code 1001)\n" +
		"ok   cdc binlog_format is ROW\n" +
		"FAIL cdc grants: cdc.user \"anqi\": missing REPLICATION SLAVE\n"
	if out.String() != want {
		t.Fatalf("report:\n%s\nwant:\n%s", out.String(), want)
	}
}
