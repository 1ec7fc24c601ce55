// Command ceiling is the limit an anqi-edge L1 hit is measured against: a
// bare fasthttp server that answers the same bytes and headers as an
// anqi-edge L1 hit after one map lookup, and does nothing else (no token
// check, no key derivation, no freshness, no metrics).
//
//	ceiling -listen 127.0.0.1:PORT -origin 'http://EDGE/api/communication/order/detail?id=N' -token T \
//		[-read-timeout 60s -write-timeout 60s -idle-timeout 90s]
//
// The timeouts are anqi-edge's server.read_timeout, write_timeout and
// idle_timeout. fasthttp arms a connection deadline per request for each
// one that is set (three per keep-alive request), work that belongs to the
// listener a production server needs, not to the handler an L1 hit runs;
// edgebench gives the ceiling anqi-edge's defaults so that the ratio
// measures anqi-edge's own work, and also runs one without any, for
// reference.
//
// At start it reads the answer from -origin (a warm anqi-edge; the answer
// must be an X-Cache: HIT) and then serves it, for that request URI only,
// until SIGINT or SIGTERM. edgebench runs it beside the systems it measures
// and prints anqi-edge L1 / ceiling in the hot-key table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("ceiling: ")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	origin := flag.String("origin", "", "URL of a warm anqi-edge detail answer to replay (required)")
	token := flag.String("token", "", "value of the token header sent to -origin")
	var t timeouts
	flag.DurationVar(&t.read, "read-timeout", 0, "fasthttp ReadTimeout (anqi-edge: server.read_timeout); 0 = none")
	flag.DurationVar(&t.write, "write-timeout", 0, "fasthttp WriteTimeout (anqi-edge: server.write_timeout); 0 = none")
	flag.DurationVar(&t.idle, "idle-timeout", 0, "fasthttp IdleTimeout (anqi-edge: server.idle_timeout); 0 = none")
	flag.Parse()
	if *origin == "" {
		log.Fatal("-origin is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	a, uri, err := capture(*origin, *token)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := newServer(map[string]*answer{uri: a}, t)
	go func() {
		<-ctx.Done()
		srv.Shutdown()
	}()
	log.Printf("serving %s on http://%s (%d-byte body, %d headers from %s; timeouts read %s, write %s, idle %s)",
		uri, ln.Addr(), len(a.body), len(a.headers), *origin, t.read, t.write, t.idle)
	if err := srv.Serve(ln); err != nil {
		log.Fatal(err)
	}
}

// answer is one recorded response: status, headers in the order received,
// body.
type answer struct {
	status  int
	headers [][2][]byte
	body    []byte
}

// perRequest are the headers fasthttp writes itself for each response; the
// recorded values are not replayed.
var perRequest = map[string]bool{"date": true, "content-length": true, "connection": true, "keep-alive": true, "transfer-encoding": true}

// capture reads u twice (the first read may be the miss that fills the
// cache) and keeps the second answer, which must be a cache hit.
func capture(u, token string) (*answer, string, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return nil, "", fmt.Errorf("-origin %q: %w", u, err)
	}
	var a *answer
	for range 2 {
		if a, err = fetch(u, token); err != nil {
			return nil, "", err
		}
	}
	if a.status != fasthttp.StatusOK {
		return nil, "", fmt.Errorf("%s answered %d, want 200", u, a.status)
	}
	hit := false
	for _, h := range a.headers {
		hit = hit || (strings.EqualFold(string(h[0]), "X-Cache") && string(h[1]) == "HIT")
	}
	if !hit {
		return nil, "", errors.New(u + " did not answer X-Cache: HIT on the second read; the ceiling replays a cache hit")
	}
	return a, parsed.RequestURI(), nil
}

func fetch(u, token string) (*answer, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(u)
	if token != "" {
		req.Header.Set("token", token)
	}
	// Header names exactly as anqi-edge wrote them; no Accept-Encoding,
	// like wrk's requests.
	c := &fasthttp.Client{DisableHeaderNamesNormalizing: true}
	defer c.CloseIdleConnections()
	if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	a := &answer{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...)}
	for k, v := range resp.Header.All() {
		if perRequest[strings.ToLower(string(k))] {
			continue
		}
		a.headers = append(a.headers, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
	}
	return a, nil
}

// timeouts are the listener's deadlines (0 = none, fasthttp's default).
type timeouts struct{ read, write, idle time.Duration }

// newServer answers the recorded answers by request URI, with fasthttp's
// defaults except where anqi-edge's public listener changes the bytes on
// the wire (no default Server or Content-Type header) and the timeouts
// given. Request header names are normalized, as anqi-edge has them.
func newServer(answers map[string]*answer, t timeouts) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               handler(answers),
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		ReadTimeout:           t.read,
		WriteTimeout:          t.write,
		IdleTimeout:           t.idle,
	}
}

func handler(answers map[string]*answer) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		a, ok := answers[string(ctx.RequestURI())] // no allocation: map index by converted bytes
		if !ok {
			ctx.SetStatusCode(fasthttp.StatusNotFound)
			return
		}
		ctx.SetStatusCode(a.status)
		h := &ctx.Response.Header
		for _, kv := range a.headers {
			h.SetCanonical(kv[0], kv[1]) // the recorded spelling (ETag, not Etag), as anqi-edge sets them
		}
		ctx.Response.SetBodyRaw(a.body)
	}
}
