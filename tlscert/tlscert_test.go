package tlscert_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
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
	"anqi-edge/internal/testcert"
	"anqi-edge/tlscert"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, edgetest.LibraryGoroutines...)
}

// tlsEdge is a fasthttp server on a TLS listener fed by a Source, the way
// the public listener is wired: it answers "tls=<ctx.IsTLS()>".
type tlsEdge struct {
	src  *tlscert.Source
	addr string
	log  *edgetest.SyncBuffer
	ca   *testcert.CA
	cert string
	key  string
}

func startTLSEdge(t *testing.T) *tlsEdge {
	t.Helper()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.Issue(t, "127.0.0.1", "shop.example.com").Write(t, dir, "server")
	logBuf := &edgetest.SyncBuffer{}
	src, err := tlscert.New(tlscert.Options{
		CertFile: certFile, KeyFile: keyFile, Poll: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(logBuf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); src.Run(ctx) }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "tls=%v", ctx.IsTLS())
	}, CloseOnShutdown: true}
	go func() { defer wg.Done(); srv.Serve(tls.NewListener(ln, src.Config())) }()
	t.Cleanup(func() {
		srv.Shutdown()
		cancel()
		wg.Wait()
	})
	return &tlsEdge{src: src, addr: ln.Addr().String(), log: logBuf, ca: ca, cert: certFile, key: keyFile}
}

// conn is one client connection that stays open across requests.
type conn struct {
	c *tls.Conn
	r *bufio.Reader
}

func (e *tlsEdge) dial(t *testing.T, cfg *tls.Config) *conn {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{RootCAs: e.ca.Pool(), ServerName: "shop.example.com"}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{c: c, r: bufio.NewReader(c)}
}

func (c *conn) get(t *testing.T) string {
	t.Helper()
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"); err != nil {
		t.Fatalf("write on an open connection: %v", err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("read on an open connection: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (c *conn) serial() string {
	return c.c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTLS_FasthttpSeesIsTLSThroughTheListener(t *testing.T) {
	e := startTLSEdge(t)
	if got := e.dial(t, nil).get(t); got != "tls=true" {
		t.Fatalf("handler saw %q, want tls=true (X-Forwarded-Proto is derived from ctx.IsTLS)", got)
	}
}

func TestTLS_RenewedFilesServeTheNewCertificateAndOpenConnectionsKeepWorking(t *testing.T) {
	e := startTLSEdge(t)
	old := e.dial(t, nil)
	if got := old.get(t); got != "tls=true" {
		t.Fatalf("got %q", got)
	}
	oldSerial := old.serial()

	// Renewal: a certificate from the same CA, written the way certbot and
	// Kubernetes do (new files, renamed into place).
	renewed := e.ca.Issue(t, "127.0.0.1", "shop.example.com")
	testcert.WriteFile(t, e.key, renewed.KeyPEM)
	testcert.WriteFile(t, e.cert, renewed.CertPEM)
	want := renewed.Cert.SerialNumber.String()

	eventually(t, "a new connection is served the renewed certificate", func() bool {
		c := e.dial(t, nil)
		defer c.c.Close()
		return c.serial() == want
	})
	if got := old.get(t); got != "tls=true" {
		t.Fatalf("connection opened before the renewal answered %q", got)
	}
	if old.serial() != oldSerial {
		t.Fatal("the open connection's certificate changed under it")
	}
	if !strings.Contains(e.log.String(), "tls certificate reloaded") {
		t.Errorf("no reload logged: %s", e.log)
	}
}

func TestTLS_BadNewPairKeepsServingTheOldOneAndNamesTheKey(t *testing.T) {
	e := startTLSEdge(t)
	before := e.src.Leaf().SerialNumber.String()

	// A key that belongs to another certificate: the pair does not match.
	other := e.ca.Issue(t, "127.0.0.1")
	testcert.WriteFile(t, e.key, other.KeyPEM)
	err := e.src.Reload()
	if err == nil || !strings.Contains(err.Error(), "server.tls_key") || !strings.Contains(err.Error(), e.key) {
		t.Fatalf("Reload with a mismatched key: %v, want an error naming server.tls_key and the file", err)
	}
	eventually(t, "the poller logs the refusal", func() bool {
		return strings.Contains(e.log.String(), "tls certificate not reloaded")
	})
	c := e.dial(t, nil)
	if c.serial() != before || c.get(t) != "tls=true" {
		t.Fatalf("after a refused reload the listener serves %s, want the old certificate %s", c.serial(), before)
	}

	// Garbage in the key file, then a missing certificate file.
	testcert.WriteFile(t, e.key, []byte("not a key"))
	if err := e.src.Reload(); err == nil || !strings.Contains(err.Error(), "server.tls_key") {
		t.Fatalf("Reload with a garbage key: %v", err)
	}
	os.Remove(e.cert)
	if err := e.src.Reload(); err == nil || !strings.Contains(err.Error(), "server.tls_cert") {
		t.Fatalf("Reload with the certificate gone: %v", err)
	}
	if e.src.Leaf().SerialNumber.String() != before {
		t.Fatal("a refused reload replaced the certificate")
	}

	// The operator fixes both files: the poller picks the pair up.
	fixed := e.ca.Issue(t, "127.0.0.1", "shop.example.com")
	testcert.WriteFile(t, e.key, fixed.KeyPEM)
	testcert.WriteFile(t, e.cert, fixed.CertPEM)
	eventually(t, "the fixed pair is served", func() bool {
		return e.src.Leaf().SerialNumber.Cmp(fixed.Cert.SerialNumber) == 0
	})
}

func TestNew_ErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.Issue(t, "localhost").Write(t, dir, "a")
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("hello"), 0o600)
	for _, tt := range []struct {
		name, cert, key, want string
	}{
		{"missing cert", filepath.Join(dir, "none.pem"), keyFile, "server.tls_cert"},
		{"missing key", certFile, filepath.Join(dir, "none.key"), "server.tls_key"},
		{"cert not PEM", garbage, keyFile, "server.tls_cert"},
		{"key not PEM", certFile, garbage, "server.tls_key"},
		{"key swapped for cert", keyFile, certFile, "server.tls_cert"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tlscert.New(tlscert.Options{CertFile: tt.cert, KeyFile: tt.key})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestTLS_OldProtocolsAndWeakCiphersAreRefused(t *testing.T) {
	e := startTLSEdge(t)
	for _, cfg := range []*tls.Config{
		{MaxVersion: tls.VersionTLS11},
		{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
	} {
		cfg.RootCAs, cfg.ServerName = e.ca.Pool(), "shop.example.com"
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, cfg)
		if err == nil {
			c.Close()
			t.Fatalf("handshake with %x max version %x succeeded", cfg.CipherSuites, cfg.MaxVersion)
		}
	}
	c := e.dial(t, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "shop.example.com", MaxVersion: tls.VersionTLS12})
	if s := c.c.ConnectionState(); s.Version != tls.VersionTLS12 || tls.CipherSuiteName(s.CipherSuite) == "" {
		t.Fatalf("TLS 1.2 client: %+v", s)
	}
	if got := c.get(t); got != "tls=true" {
		t.Fatalf("got %q", got)
	}
}

func TestLoadPair_ExpiredCertificateIsReported(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.IssueValid(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), "localhost").Write(t, dir, "old")
	_, err := tlscert.LoadPair(certFile, keyFile, time.Now())
	if err == nil || !strings.Contains(err.Error(), "server.tls_cert") || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("LoadPair of an expired certificate: %v", err)
	}
	certFile, keyFile = ca.Issue(t, "localhost").Write(t, dir, "ok")
	leaf, err := tlscert.LoadPair(certFile, keyFile, time.Now())
	if err != nil || leaf.Subject.CommonName != "localhost" {
		t.Fatalf("LoadPair: %v %v", leaf, err)
	}
}
