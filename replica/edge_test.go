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
	"strings"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/testcert"
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
		Timeout: 10 * time.Second,
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
