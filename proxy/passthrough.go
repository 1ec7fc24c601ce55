package proxy

import (
	"github.com/valyala/fasthttp"
)

// PassThrough forwards a request to AnqiCMS unchanged and streams the
// answer back unchanged (Set-Cookie and Update-Token included). It knows
// nothing about caching; the detail handler uses it for requests it must
// not cache.
type PassThrough struct {
	up *Upstream
	// onResult, when set, is told the outcome (for metrics and logs).
	onResult func(route string, start int64, err error)
}

// Serve forwards ctx's request.
func (p *PassThrough) Serve(ctx *fasthttp.RequestCtx) error {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	p.up.prepare(ctx, req)
	if ctx.Request.IsBodyStream() {
		// Uploads are streamed through, never held whole in memory; the
		// server already refused bodies over server.max_request_body.
		req.SetBodyStream(ctx.RequestBodyStream(), ctx.Request.Header.ContentLength())
	} else {
		req.SetBodyRaw(ctx.Request.Body())
	}

	resp := fasthttp.AcquireResponse()
	if err := p.up.streaming.DoDeadline(req, resp, deadline(p.up.timeout)); err != nil {
		fasthttp.ReleaseResponse(resp)
		writeUpstreamFailure(ctx, err)
		return err
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	stripHopResponse(&ctx.Response.Header)
	if ctx.IsHead() {
		ctx.Response.SkipBody = true
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
