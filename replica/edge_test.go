package replica_test

// anqi-edge as the only server in front of AnqiCMS (issue 12): the public
// listener speaks TLS, plain HTTP is redirected to it, AnqiCMS's public/
// directory is served from disk, and everything else still reaches
// AnqiCMS, told the client came over https.

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/testcert"
	"anqi-edge/proxy"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestEdge_TLSStaticFilesAndRedirectReplaceNginx(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.Issue(t, "shop.example.test", "127.0.0.1").Write(t, dir, "shop")
	public := filepath.Join(dir, "public")
	if err := os.MkdirAll(filepath.Join(public, "static"), 0o755); err != nil {
		t.Fatal(err)
	}
	testcert.WriteFile(t, filepath.Join(public, "static", "app.css"), []byte("body{color:#333}"))
	redirect := freeAddr(t)

	env := edgetest.Start(t, edgetest.Options{Config: func(c *config.Config) {
		c.Server.TLSCert, c.Server.TLSKey = certFile, keyFile
		c.Server.RedirectHTTP = redirect
		c.Static.Root = public
	}})
	base := strings.Replace(env.URL, "http://", "https://", 1)
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "shop.example.test"}},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	get := func(url string) (*http.Response, []byte) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	// A file under public/ is served from disk over TLS.
	resp, body := get(base + "/static/app.css")
	if resp.StatusCode != http.StatusOK || string(body) != "body{color:#333}" || resp.TLS == nil {
		t.Fatalf("static file over TLS: HTTP %d %q", resp.StatusCode, body)
	}
	if resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("TLS version %x, want 1.2 or later", resp.TLS.Version)
	}
	if n := env.Fake.Calls("/static/app.css"); n != 0 {
		t.Fatalf("the static file reached AnqiCMS %d times", n)
	}
	// Anything else goes to AnqiCMS, which is told the client used https.
	resp, body = get(base + "/__echo/page")
	var echo fake.Echo
	if err := json.Unmarshal(body, &echo); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("pass-through over TLS: HTTP %d %v %q", resp.StatusCode, err, body)
	}
	if got := echo.Headers.Get("X-Forwarded-Proto"); got != "https" {
		t.Fatalf("AnqiCMS was told X-Forwarded-Proto %q, want https", got)
	}
	// A missing file is AnqiCMS's to answer.
	if resp, _ := get(base + "/static/missing.css"); resp.StatusCode != http.StatusNotFound || env.Fake.Calls("/static/missing.css") != 1 {
		t.Fatalf("missing static file: HTTP %d, %d calls to AnqiCMS; want AnqiCMS's 404", resp.StatusCode, env.Fake.Calls("/static/missing.css"))
	}
	// Plain HTTP on server.redirect_http is sent to the same URL on https.
	req, _ := http.NewRequest(http.MethodGet, "http://"+redirect+"/static/app.css?v=2", nil)
	req.Host = "shop.example.test"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(env.URL, "http://"))
	if want := "https://shop.example.test:" + port + "/static/app.css?v=2"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("plain HTTP: HTTP %d Location %q, want 308 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}

// Reload in-process: each live key takes effect for the next request, and
// the replica keeps serving.
func TestReload_LiveKeysTakeEffectForTheNextRequest(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	cert1, key1 := ca.Issue(t, "shop.example.test").Write(t, dir, "one")
	cert2, key2 := ca.Issue(t, "shop.example.test").Write(t, dir, "two")
	public := filepath.Join(dir, "public")
	os.MkdirAll(public, 0o755)
	testcert.WriteFile(t, filepath.Join(public, "robots.txt"), []byte("User-agent: *"))

	env := edgetest.Start(t, edgetest.Options{Verify: true, Config: func(c *config.Config) {
		c.Server.TLSCert, c.Server.TLSKey = cert1, key1
		c.Upstream.Timeout = config.Duration{Duration: 200 * time.Millisecond}
	}})
	_, order, tok := edgetest.SeedOne(env)
	base := strings.Replace(env.URL, "http://", "https://", 1)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "shop.example.test"}, DisableKeepAlives: true}
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	do := func(method, path, body string, headers ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for _, h := range headers {
			k, v, _ := strings.Cut(h, ": ")
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	id := strconv.FormatInt(order.ID, 10)
	detail := proxy.DetailPath + "?id=" + id

	// Before: no static root, a 200ms upstream timeout, the built-in hooks.
	if resp, _ := do(http.MethodGet, "/robots.txt", ""); env.Fake.Calls("/robots.txt") != 1 {
		t.Fatalf("before reload, /robots.txt was not forwarded (HTTP %d)", resp.StatusCode)
	}
	env.Fake.SetLatency("/api/communication/order/detail", 500*time.Millisecond)
	if resp, _ := do(http.MethodGet, detail, "", "token: "+tok); resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("a 500ms answer with upstream.timeout 200ms: HTTP %d, want 504", resp.StatusCode)
	}
	serial1, _ := do(http.MethodGet, "/robots.txt", "")

	forwarded := env.Fake.Calls("/robots.txt")
	next := *env.Config
	next.Static.Root = public
	next.Upstream.Timeout = config.Duration{Duration: 5 * time.Second}
	next.Server.TLSCert, next.Server.TLSKey = cert2, key2
	next.Invalidate = []config.InvalidateRule{{Method: "POST", Path: "/api/communication/message/send", ID: "json:comm_order_id"}}
	next.Server.Listen = "127.0.0.1:1" // needs a restart: named, kept
	restart, err := env.Edge.Reload(&next)
	if err != nil {
		t.Fatal(err)
	}
	if len(restart) != 1 || restart[0] != "server.listen" {
		t.Fatalf("keys needing a restart: %v, want [server.listen]", restart)
	}

	// After: the file is served from disk, the slow answer arrives, and new
	// connections get the new certificate.
	if resp, body := do(http.MethodGet, "/robots.txt", ""); resp.StatusCode != http.StatusOK || body != "User-agent: *" || env.Fake.Calls("/robots.txt") != forwarded {
		t.Fatalf("after reload, /robots.txt: HTTP %d %q, %d calls to AnqiCMS; want it from disk", resp.StatusCode, body, env.Fake.Calls("/robots.txt"))
	}
	if resp, _ := do(http.MethodGet, detail, "", "token: "+tok); resp.StatusCode != http.StatusOK {
		t.Fatalf("after raising upstream.timeout: HTTP %d, want 200", resp.StatusCode)
	}
	serial2, _ := do(http.MethodGet, "/robots.txt", "")
	if serial1.TLS.PeerCertificates[0].SerialNumber.Cmp(serial2.TLS.PeerCertificates[0].SerialNumber) == 0 {
		t.Fatal("a new connection after reload still got the old certificate")
	}
	// The reloaded rules still invalidate on a write.
	env.Fake.SetLatency("/api/communication/order/detail", 0)
	do(http.MethodGet, detail, "", "token: "+tok)
	do(http.MethodPost, "/api/communication/message/send", `{"comm_order_id":`+id+`,"content":"after reload"}`,
		"token: "+tok, "Content-Type: application/json")
	if _, body := do(http.MethodGet, detail, "", "token: "+tok); !strings.Contains(body, "after reload") {
		t.Fatal("a write under the reloaded [[invalidate]] rules was not invalidated")
	}
}
