package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/config"
	"anqi-edge/internal/upconn"
)

// Upstream is the connection pool to AnqiCMS. It has three clients over the
// same address: one that buffers whole answers (write hooks must see the
// code before answering), one that buffers at most upstream.max_body (the
// detail read: a bigger answer is never stored, so it is streamed instead
// of held), and one that streams (everything else, so large downloads do not
// sit in memory).
type Upstream struct {
	buffered  *fasthttp.HostClient
	detail    *fasthttp.HostClient
	streaming *fasthttp.HostClient
	addr      string
	https     bool
	replica   string // the replica id, for the X-Request-Id of requests that came without one
	// timeout bounds a whole call and dial one connection (nanoseconds);
	// a reload may change both.
	timeout atomic.Int64
	dial    atomic.Int64
}

// NewUpstream builds the pools for cfg.URL. replica is the replica's id,
// the prefix of the X-Request-Id anqi-edge gives a request that came
// without one.
func NewUpstream(cfg config.Upstream, replica string) (*Upstream, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream.url %q: %w", cfg.URL, err)
	}
	if u.Path != "" && u.Path != "/" {
		// AnqiCMS routes from the root of its host; a prefix would have to
		// be added to every forwarded path and stripped from every
		// redirect, and would still break its absolute links.
		return nil, fmt.Errorf("upstream.url %q: a path (%q) is not supported: AnqiCMS serves from the root of its host; set upstream.url to %s://%s",
			cfg.URL, u.Path, u.Scheme, u.Host)
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
	up := &Upstream{addr: addr, https: https, replica: replica}
	up.SetTimeouts(cfg.Timeout.Duration, cfg.DialTimeout.Duration)
	mk := func(stream bool) *fasthttp.HostClient {
		hc := &fasthttp.HostClient{
			Addr:                addr,
			IsTLS:               https,
			MaxConns:            cfg.MaxConns,
			MaxIdleConnDuration: cfg.MaxIdle.Duration,
			// Every call carries its own deadline (upstream.timeout, which a
			// reload may change); the clients add no bound of their own.
			MaxConnWaitTimeout:       cfg.Timeout.Duration,
			StreamResponseBody:       stream,
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true,
			Dial: func(a string) (net.Conn, error) {
				c, err := fasthttp.DialTimeout(a, time.Duration(up.dial.Load()))
				if err != nil {
					return nil, err
				}
				return upconn.Checked(c), nil
			},
		}
		hc.RetryIfErr = upconn.RetryOnDeadConn(hc)
		return hc
	}
	up.buffered, up.detail, up.streaming = mk(false), mk(false), mk(true)
	up.detail.MaxResponseBodySize = int(cfg.MaxBody)
	return up, nil
}

// SetTimeouts sets upstream.timeout and upstream.dial_timeout for the
// calls that start from now on.
func (u *Upstream) SetTimeouts(timeout, dial time.Duration) {
	u.timeout.Store(int64(timeout))
	u.dial.Store(int64(dial))
}

func (u *Upstream) deadline() time.Time { return time.Now().Add(time.Duration(u.timeout.Load())) }

// Addr is AnqiCMS's host:port.
func (u *Upstream) Addr() string { return u.addr }

// prepare turns the client's request into the upstream request: same
// method, URI, headers and Host, minus hop-by-hop headers, plus the
// forwarding headers. The body is set by the caller.
func (u *Upstream) prepare(ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	ctx.Request.Header.CopyTo(&req.Header)
	stripHop(&req.Header)
	if len(req.Header.PeekBytes(hRequestID)) == 0 {
		var buf [64]byte
		req.Header.SetCanonical(hRequestID, appendGeneratedID(buf[:0], u.replica, ctx))
	}
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

// doBuffered sends req and reads the whole answer into resp.
func (u *Upstream) doBuffered(req *fasthttp.Request, resp *fasthttp.Response) error {
	return upconn.Explain(u.buffered.DoDeadline(req, resp, u.deadline()))
}

// doDetail is doBuffered for detail reads, failing with
// fasthttp.ErrBodyTooLarge past upstream.max_body.
func (u *Upstream) doDetail(req *fasthttp.Request, resp *fasthttp.Response) error {
	return upconn.Explain(u.detail.DoDeadline(req, resp, u.deadline()))
}

// doStream sends req and leaves the answer's body to be streamed.
func (u *Upstream) doStream(req *fasthttp.Request, resp *fasthttp.Response) error {
	return upconn.Explain(u.streaming.DoDeadline(req, resp, u.deadline()))
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

// logLimiter lets one log line through per interval, so an AnqiCMS outage
// under load logs its failures, not one line per request.
type logLimiter struct{ next atomic.Int64 }

func (l *logLimiter) allow(every time.Duration) bool {
	now := time.Now().UnixNano()
	n := l.next.Load()
	return now >= n && l.next.CompareAndSwap(n, now+int64(every))
}
