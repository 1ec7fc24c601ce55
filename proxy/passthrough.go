package proxy

import (
	"errors"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/internal/bodyio"
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
	var upload *bodyio.Upload
	// Only requests that carry a body stream it: a bodiless GET forwarded as
	// a stream could not be retried on a keep-alive connection that
	// AnqiCMS closed a moment earlier.
	if cl := ctx.Request.Header.ContentLength(); cl == 0 || (cl < 0 && cl != -1) {
		req.SetBodyRaw(nil)
	} else if stream := ctx.RequestBodyStream(); stream != nil {
		// Uploads are streamed through, never held whole in memory.
		upload = bodyio.NewUpload(stream, p.maxBody)
		req.SetBodyStream(upload, ctx.Request.Header.ContentLength())
	} else {
		req.SetBodyRaw(ctx.Request.Body())
	}

	resp := fasthttp.AcquireResponse()
	start := time.Now()
	err := p.up.doStream(req, resp)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		if errors.Is(err, bodyio.ErrTooLarge) {
			// The client's fault, not AnqiCMS's.
			writeEnvelope(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
			return err
		}
		if upload != nil && upload.ClientErr() != nil {
			// The client's body broke off or was malformed (a bad chunk):
			// the client's error, answered and counted as such, not as
			// AnqiCMS being unavailable.
			writeEnvelope(ctx, fasthttp.StatusBadRequest, badRequest)
			return upload.ClientErr()
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
	if resp.BodyStream() != nil {
		ctx.SetBodyStream(bodyio.NewAnswer(resp), resp.Header.ContentLength())
		return nil
	}
	ctx.Response.SetBody(resp.Body())
	fasthttp.ReleaseResponse(resp)
	return nil
}
