package static_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/goleak"

	"anqi-edge/internal/edgetest"
	"anqi-edge/static"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, edgetest.LibraryGoroutines...)
}

const (
	css       = "body { color: #333; } /* the original, uncompressed */\n"
	cssGzMark = "pre-compressed by the build"
	secret    = "outside-root-secret"
)

var big = bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KiB

// publicDir lays out a small AnqiCMS public/ directory beside a directory
// that must never be served.
func publicDir(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "public")
	write := func(rel string, data []byte) {
		p := filepath.Join(base, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("public/static/app.css", []byte(css))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(cssGzMark))
	zw.Close()
	write("public/static/app.css.gz", gz.Bytes())
	write("public/static/app.css.br", []byte("brotli bytes (not decoded by the test)"))
	write("public/robots.txt", []byte("User-agent: *\n"))
	write("public/big.bin", big)
	write("public/uploads/202612/a.jpg", []byte("jpeg"))
	write("public/.env", []byte(secret))
	write("public/static/.hidden", []byte(secret))
	write("public/.well-known/acme-challenge/tok123", []byte("tok123.thumbprint"))
	write("outside/secret.txt", []byte(secret))
	if err := os.Symlink("../outside/secret.txt", filepath.Join(root, "leak.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "leakdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("robots.txt", filepath.Join(root, "alias.txt")); err != nil {
		t.Fatal(err)
	}
	// A fixed, old modification time so If-Modified-Since is meaningful.
	old := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(root, "static/app.css"), old, old)
	os.Chtimes(filepath.Join(root, "static/app.css.gz"), old, old)
	os.Chtimes(filepath.Join(root, "static/app.css.br"), old, old)
	return root
}

// startStatic serves root the way the proxy will: static first, and what
// it declines goes on (here: a 299 "forwarded" marker instead of AnqiCMS).
func startStatic(t *testing.T) (addr string) {
	t.Helper()
	h, err := static.New(static.Options{Root: publicDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if h.Serve(ctx) {
			return
		}
		ctx.SetStatusCode(299)
		ctx.SetBodyString("forwarded")
	}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Shutdown(); wg.Wait(); h.Close() })
	return ln.Addr().String()
}

// raw sends one request exactly as written (no client-side path cleaning)
// and returns the response with its body read.
func raw(t *testing.T, addr, method, target string, headers ...string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n", method, target)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func TestStatic_FileIsServedFromDiskAndRevalidatesWith304(t *testing.T) {
	addr := startStatic(t)
	resp, body := raw(t, addr, "GET", "/static/app.css?v=20261202")
	if resp.StatusCode != 200 || body != css {
		t.Fatalf("GET /static/app.css: %d %q", resp.StatusCode, body)
	}
	lm := resp.Header.Get("Last-Modified")
	if lm != "Fri, 02 Jan 2026 03:04:05 GMT" {
		t.Fatalf("Last-Modified %q", lm)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
		t.Errorf("Content-Type %q", ct)
	}
	resp, body = raw(t, addr, "GET", "/static/app.css", "If-Modified-Since", lm)
	if resp.StatusCode != 304 || body != "" {
		t.Fatalf("revalidation with If-Modified-Since: %d %q, want 304", resp.StatusCode, body)
	}
	if etag := resp.Header.Get("ETag"); etag != "" {
		resp, _ = raw(t, addr, "GET", "/static/app.css", "If-None-Match", etag)
		if resp.StatusCode != 304 {
			t.Fatalf("revalidation with If-None-Match: %d, want 304", resp.StatusCode)
		}
	}
	resp, body = raw(t, addr, "HEAD", "/robots.txt")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len("User-agent: *\n")) {
		t.Fatalf("HEAD /robots.txt: %d len %d %q", resp.StatusCode, resp.ContentLength, body)
	}
	if _, body = raw(t, addr, "GET", "/alias.txt"); body != "User-agent: *\n" {
		t.Fatalf("a symbolic link inside root: %q", body)
	}
	if _, body = raw(t, addr, "GET", "/.well-known/acme-challenge/tok123"); body != "tok123.thumbprint" {
		t.Fatalf("/.well-known/ file: %q", body)
	}
}

func TestStatic_RangeRequestGets206(t *testing.T) {
	addr := startStatic(t)
	resp, body := raw(t, addr, "GET", "/big.bin", "Range", "bytes=16-47")
	if resp.StatusCode != 206 || body != string(big[16:48]) {
		t.Fatalf("range: %d %q", resp.StatusCode, body)
	}
	if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes 16-47/%d", len(big)) {
		t.Fatalf("Content-Range %q", cr)
	}
	if resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("Accept-Ranges %q", resp.Header.Get("Accept-Ranges"))
	}
}

func TestStatic_PrecompressedFilesGoToClientsThatAcceptThem(t *testing.T) {
	addr := startStatic(t)
	resp, body := raw(t, addr, "GET", "/static/app.css", "Accept-Encoding", "gzip")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip client: %d Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if string(plain) != cssGzMark {
		t.Fatalf("gzip client got %q, want the app.css.gz beside the file", plain)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
		t.Errorf("Content-Type of the .gz variant %q", ct)
	}
	if !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("Vary %q", resp.Header.Get("Vary"))
	}

	resp, body = raw(t, addr, "GET", "/static/app.css", "Accept-Encoding", "gzip, br")
	if resp.Header.Get("Content-Encoding") != "br" || body != "brotli bytes (not decoded by the test)" {
		t.Fatalf("br client: %q %q", resp.Header.Get("Content-Encoding"), body)
	}
	resp, body = raw(t, addr, "GET", "/static/app.css")
	if resp.Header.Get("Content-Encoding") != "" || body != css {
		t.Fatalf("identity client: %q %q", resp.Header.Get("Content-Encoding"), body)
	}
}

func TestStatic_TraversalDotfilesAndEscapingLinksAreNeverServed(t *testing.T) {
	addr := startStatic(t)
	for _, target := range []string{
		"/../outside/secret.txt",
		"/static/../../outside/secret.txt",
		"/static/../robots.txt", // harmless once resolved, still not ours to resolve
		"/./robots.txt",
		"/%2e%2e/outside/secret.txt",
		"/%2E%2E/%2E%2E/outside/secret.txt",
		"/static/%2e%2e/robots.txt",
		"/..%2foutside%2fsecret.txt",
		"/static%2frobots.txt",
		"/..%5coutside%5csecret.txt",
		"/..\\outside\\secret.txt",
		"/robots.txt%00.css",
		"/leak.txt",           // symbolic link to a file outside root
		"/leakdir/secret.txt", // through a symbolic link to a directory outside root
		"/.env",               // dotfiles
		"/static/.hidden",
		"/.well-known/../.env",
	} {
		resp, body := raw(t, addr, "GET", target)
		if strings.Contains(body, secret) {
			t.Fatalf("GET %s leaked a file: %d %q", target, resp.StatusCode, body)
		}
		if resp.StatusCode != 299 {
			t.Errorf("GET %s: %d %q, want it left to AnqiCMS (forwarded)", target, resp.StatusCode, body)
		}
	}
}

func TestStatic_MissingFilesDirectoriesAndWritesAreForwarded(t *testing.T) {
	addr := startStatic(t)
	for _, tt := range []struct{ method, target string }{
		{"GET", "/"},
		{"GET", "/index.html"},
		{"GET", "/api/communication/orders"},
		{"GET", "/static/missing.css"},
		{"GET", "/static"},
		{"GET", "/static/"},
		{"GET", "/uploads/202612"},
		{"GET", "/robots.txt/"},
		{"POST", "/robots.txt"},
		{"PUT", "/static/app.css"},
	} {
		resp, body := raw(t, addr, tt.method, tt.target)
		if resp.StatusCode != 299 || body != "forwarded" {
			t.Errorf("%s %s: %d %q, want forwarded", tt.method, tt.target, resp.StatusCode, body)
		}
	}
}

func TestNew_RootErrorsNameTheKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	for _, root := range []string{"", filepath.Join(t.TempDir(), "none"), file} {
		if _, err := static.New(static.Options{Root: root}); err == nil || !strings.Contains(err.Error(), "static.root") {
			t.Errorf("New(%q): %v, want an error naming static.root", root, err)
		}
	}
}
