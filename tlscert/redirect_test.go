package tlscert_test

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"anqi-edge/tlscert"
)

func startRedirect(t *testing.T, httpsPort int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := tlscert.RedirectServer(httpsPort)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Shutdown(); wg.Wait() })
	return ln.Addr().String()
}

func TestRedirect_PlainHTTPGets308ToTheSameURLOnHTTPS(t *testing.T) {
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	on8443 := startRedirect(t, 8443)
	on443 := startRedirect(t, 443)
	for _, tt := range []struct {
		name, addr, method, host, uri, want string
		status                              int
	}{
		{"other port is kept", on8443, "GET", "shop.example.com:8080", "/a/b.html?x=1&y=%2F", "https://shop.example.com:8443/a/b.html?x=1&y=%2F", 308},
		{"443 is left out", on443, "GET", "shop.example.com", "/", "https://shop.example.com/", 308},
		{"post keeps its method (308)", on443, "POST", "shop.example.com:80", "/api/login", "https://shop.example.com/api/login", 308},
		{"ipv6 host", on443, "GET", "[::1]:80", "/x", "https://[::1]/x", 308},
		{"bad host", on443, "GET", "bad host\"<", "/x", "", 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://"+tt.addr+tt.uri, nil)
			req.Host = tt.host
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status || resp.Header.Get("Location") != tt.want {
				t.Fatalf("%s %s Host %q: %d Location %q, want %d %q", tt.method, tt.uri, tt.host,
					resp.StatusCode, resp.Header.Get("Location"), tt.status, tt.want)
			}
		})
	}
}
