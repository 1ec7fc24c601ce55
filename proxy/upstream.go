package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/config"
)

// hopHeaders are meaningful only for one connection and never forwarded in
// either direction (RFC 9110 §7.6.1), plus the legacy Proxy-Connection.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// Upstream is the connection pool to AnqiCMS. It has two clients over the
// same address: one that buffers whole answers (the cached detail path must
// see the body before deciding to store it; write hooks must see the code
// before answering) and one that streams (everything else, so large
// downloads do not sit in memory).
type Upstream struct {
	buffered *fasthttp.HostClient
	// detail buffers too, but reads at most upstream.max_body: a bigger
	// answer is never stored, so it is streamed through instead of held.
	detail    *fasthttp.HostClient
	streaming *fasthttp.HostClient
	https     bool
	timeout   time.Duration
}

// NewUpstream builds the pools for cfg.URL.
func NewUpstream(cfg config.Upstream) (*Upstream, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream.url %q: %w", cfg.URL, err)
	}
	addr := u.Host
	https := u.Scheme == "https"
	if u.Port() == "" {
		if https {
			addr = net.JoinHostPort(u.Hostname(), "443")
		} else {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	mk := func(stream bool) *fasthttp.HostClient {
		return &fasthttp.HostClient{
			Addr:                          addr,
			IsTLS:                         https,
			MaxConns:                      cfg.MaxConns,
			MaxIdleConnDuration:           cfg.MaxIdle.Duration,
			ReadTimeout:                   cfg.Timeout.Duration,
			WriteTimeout:                  cfg.Timeout.Duration,
			MaxConnWaitTimeout:            cfg.Timeout.Duration,
			StreamResponseBody:            stream,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: false,
			DisablePathNormalizing:        true,
			RetryIfErr:                    retryIdempotentOnly,
		}
	}
	up := &Upstream{buffered: mk(false), streaming: mk(true), detail: mk(false), https: https, timeout: cfg.Timeout.Duration}
	up.detail.MaxResponseBodySize = int(cfg.MaxBody)
	dialTimeout := cfg.DialTimeout.Duration
	dial := func(a string) (net.Conn, error) { return fasthttp.DialTimeout(a, dialTimeout) }
	up.buffered.Dial, up.streaming.Dial, up.detail.Dial = dial, dial, dial
	return up, nil
}

// retryIdempotentOnly lets fasthttp retry a request on a pooled connection
// that the upstream had already closed, but only when resending cannot
// repeat a side effect (and never with a streamed body, which is consumed).
func retryIdempotentOnly(req *fasthttp.Request, attempts int, err error) (bool, bool) {
	if attempts > 1 || req.IsBodyStream() {
		return false, false
	}
	return req.Header.IsGet() || req.Header.IsHead() || req.Header.IsOptions(), false
}

// prepare turns the client's request into the upstream request: same
// method, URI, headers and Host, minus hop-by-hop headers, plus the
// forwarding headers. The body is set by the caller.
func (u *Upstream) prepare(ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	ctx.Request.Header.CopyTo(&req.Header)
	stripHop(&req.Header)
	req.UseHostHeader = true
	if u.https {
		req.URI().SetScheme("https")
	}
	var ipBuf [64]byte
	ip := appendRemoteIP(ipBuf[:0], ctx)
	if prior := req.Header.Peek("X-Forwarded-For"); len(prior) > 0 {
		var xff [256]byte
		v := append(append(append(xff[:0], prior...), ", "...), ip...)
		req.Header.SetBytesV("X-Forwarded-For", v)
	} else {
		req.Header.SetBytesV("X-Forwarded-For", ip)
	}
	// X-Real-IP is overwritten, not trusted: a client could otherwise
	// choose the address AnqiCMS logs and rate-limits by.
	req.Header.SetBytesV("X-Real-IP", ip)
	if ctx.IsTLS() {
		req.Header.Set("X-Forwarded-Proto", "https")
	} else {
		req.Header.Set("X-Forwarded-Proto", "http")
	}
}

func appendRemoteIP(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		b, _ := a.IP.AppendText(dst)
		return b
	}
	s := ctx.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	return append(dst, s...)
}

// headers is what request and response headers share for stripHop.
type headers interface {
	Peek(key string) []byte
	Del(key string)
}

// stripHop removes hop-by-hop headers, including those the Connection
// header names, from a request or response header.
func stripHop(h headers) {
	if c := h.Peek("Connection"); len(c) > 0 {
		for _, name := range strings.Split(string(c), ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// doBuffered sends req and reads the whole answer into resp.
func (u *Upstream) doBuffered(req *fasthttp.Request, resp *fasthttp.Response) error {
	return u.buffered.DoDeadline(req, resp, time.Now().Add(u.timeout))
}

// doDetail is doBuffered for detail reads, failing with
// fasthttp.ErrBodyTooLarge past upstream.max_body.
func (u *Upstream) doDetail(req *fasthttp.Request, resp *fasthttp.Response) error {
	return u.detail.DoDeadline(req, resp, time.Now().Add(u.timeout))
}

// failure classifies an upstream error the way DESIGN §6 answers it.
func failure(err error) (status int, timeout bool) {
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		return fasthttp.StatusGatewayTimeout, true
	}
	return fasthttp.StatusBadGateway, false
}

var upstreamUnavailable = anqicms.ErrorBody("upstream unavailable")

// writeUpstreamFailure answers a failed upstream call.
func writeUpstreamFailure(ctx *fasthttp.RequestCtx, err error) {
	status, _ := failure(err)
	writeEnvelope(ctx, status, upstreamUnavailable)
}

func writeEnvelope(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json; charset=utf-8")
	ctx.SetBody(body)
}

// streamedBody hands an upstream body to the client as it arrives and
// returns the upstream response to its pool once fasthttp has written it.
type streamedBody struct {
	resp *fasthttp.Response
	r    io.Reader
}

func (s *streamedBody) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *streamedBody) Close() error {
	err := s.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(s.resp)
	return err
}

func deadline(d time.Duration) time.Time { return time.Now().Add(d) }
