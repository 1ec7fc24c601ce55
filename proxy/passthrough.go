package proxy

import (
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/metrics"
)

// PassThrough forwards a request to AnqiCMS unchanged and streams the
// answer back unchanged (Set-Cookie and Update-Token included). It knows
// nothing about caching; the detail handler uses it for requests it must
// not cache.
type PassThrough struct {
	up *Upstream
	m  *metrics.Metrics // nil: no upstream metrics
	// maxBody is server.max_request_body. Bodies with a declared length are
	// refused before routing (Server.handle); chunked ones are cut off here
	// as they stream.
	maxBody int64
}

// Serve forwards ctx's request.
func (p *PassThrough) Serve(ctx *fasthttp.RequestCtx) error {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	p.up.prepare(ctx, req)
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
		req.SetBodyStream(stream, ctx.Request.Header.ContentLength())
	} else {
		req.SetBodyRaw(ctx.Request.Body())
	}

	resp := fasthttp.AcquireResponse()
	start := time.Now()
	err := p.up.streaming.DoDeadline(req, resp, deadline(p.up.timeout))
	if p.m != nil {
		observe(p.m, metrics.RoutePassThrough, start, err)
	}
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		if errors.Is(err, errBodyTooLarge) {
			writeEnvelope(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
			return err
		}
		writeUpstreamFailure(ctx, err)
		return err
	}
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
