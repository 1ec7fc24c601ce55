package proxy

import (
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/metrics"
)

// PassThrough forwards a request to AnqiCMS and streams the answer back:
// method, path, query, body and headers as they came, minus hop-by-hop
// headers, plus X-Forwarded-For, X-Forwarded-Proto and X-Real-IP; the answer
// comes back with its own headers (Set-Cookie and Update-Token included)
// minus hop-by-hop ones. It knows
// nothing about caching; the detail handler uses it for requests it must
// not cache.
type PassThrough struct {
	up  *Upstream
	m   *metrics.Metrics
	log *slog.Logger
	// logged rate-limits the warning for failed calls.
	logged logLimiter
	// maxBody is server.max_request_body. Bodies with a declared length are
	// refused before routing (Server.handle); chunked ones are cut off here
	// as they stream.
	maxBody int64
}

// NewPassThrough forwards to up; maxBody is server.max_request_body.
func NewPassThrough(up *Upstream, maxBody int64, m *metrics.Metrics, log *slog.Logger) *PassThrough {
	return &PassThrough{up: up, maxBody: maxBody, m: m, log: log}
}

// Serve forwards ctx's request.
func (p *PassThrough) Serve(ctx *fasthttp.RequestCtx) error {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	p.up.prepare(ctx, req)
	var client *clientBody
	// Only requests that carry a body stream it: a bodiless GET forwarded as
	// a stream could not be retried on a keep-alive connection that
	// AnqiCMS closed a moment earlier.
	if cl := ctx.Request.Header.ContentLength(); cl == 0 || (cl < 0 && cl != -1) {
		req.SetBodyRaw(nil)
	} else if stream := ctx.RequestBodyStream(); stream != nil {
		// Uploads are streamed through, never held whole in memory.
		if p.maxBody > 0 {
			stream = &limitedBody{r: stream, left: p.maxBody}
		}
		client = &clientBody{r: stream}
		req.SetBodyStream(client, ctx.Request.Header.ContentLength())
	} else {
		req.SetBodyRaw(ctx.Request.Body())
	}

	resp := fasthttp.AcquireResponse()
	start := time.Now()
	err := p.up.doStream(req, resp)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		if errors.Is(err, errBodyTooLarge) {
			// The client's fault, not AnqiCMS's.
			writeEnvelope(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
			return err
		}
		if client != nil && client.err != nil {
			// The client's body broke off or was malformed (a bad chunk):
			// the client's error, answered and counted as such, not as
			// AnqiCMS being unavailable.
			writeEnvelope(ctx, fasthttp.StatusBadRequest, badRequest)
			return client.err
		}
		observe(p.m, metrics.RoutePassThrough, start, err)
		if p.logged.allow(time.Second) {
			p.log.Warn("upstream call failed", "method", string(ctx.Method()), "path", string(ctx.Path()), "err", err)
		}
		writeUpstreamFailure(ctx, err)
		return err
	}
	observe(p.m, metrics.RoutePassThrough, start, nil)
	resp.Header.CopyTo(&ctx.Response.Header)
	stripHop(&ctx.Response.Header)
	if ctx.IsHead() {
		ctx.Response.SkipBody = true
		resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		return nil
	}
	if stream := resp.BodyStream(); stream != nil {
		ctx.SetBodyStream(&streamedBody{resp: resp, r: stream}, resp.Header.ContentLength())
		return nil
	}
	ctx.Response.SetBody(resp.Body())
	fasthttp.ReleaseResponse(resp)
	return nil
}

var errBodyTooLarge = errors.New("request body exceeds server.max_request_body")

// limitedBody fails a streamed request body once it passes the limit, so a
// chunked upload (no declared length) cannot push more than
// server.max_request_body to AnqiCMS: the upstream request breaks off
// unfinished and the client gets 413.
type limitedBody struct {
	r    io.Reader
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, errBodyTooLarge
	}
	// Read one byte past the limit to tell "exactly the limit" from "over".
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, errBodyTooLarge
	}
	return n, err
}

// clientBody remembers why reading the client's streamed body failed, so
// that a failed upstream call can be told apart from a bad request body.
type clientBody struct {
	r   io.Reader
	err error // the first read error other than io.EOF
}

func (c *clientBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
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
