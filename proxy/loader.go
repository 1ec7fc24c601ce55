package proxy

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/cache"
	"anqi-edge/metrics"
)

// The loader: how the cache tiers reach AnqiCMS for a detail read, and how
// its answer is classified.

// originCall is one detail request as a cache.Caller. It borrows the
// client's request: Tiers asks it for a Loader only when it must reach
// AnqiCMS, on this request's goroutine while the request is still valid,
// and only then is the request copied. A hit copies nothing.
type originCall struct {
	d   *Detail
	ctx *fasthttp.RequestCtx
	// fg is the loader handed out for this request's own answer.
	fg *originLoad
}

func (c *originCall) Loader(background bool) cache.Loader {
	l := &originLoad{d: c.d, req: c.d.upstreamRequest(c.ctx)}
	if !background {
		c.fg = l
	}
	return l
}

// templateCaller is a watcher's cache.Caller: a change wakes it long after
// its request was answered, so it keeps its own copy to copy again.
type templateCaller struct {
	d    *Detail
	tmpl *fasthttp.Request
}

func (c templateCaller) Loader(bool) cache.Loader {
	req := fasthttp.AcquireRequest()
	c.tmpl.CopyTo(req)
	return &originLoad{d: c.d, req: req}
}

// notForwardedOnDetail are request headers a detail read does not pass to
// AnqiCMS: anqi-edge needs the whole, identity-encoded body to store, and
// answers conditional and range requests itself (a flight's answer is
// shared by every waiter, so one client's Range must not shape it).
var notForwardedOnDetail = []string{
	"Accept-Encoding", "If-None-Match", "If-Modified-Since", "If-Match",
	"If-Unmodified-Since", "If-Range", "Range",
}

// upstreamRequest copies the client's request for AnqiCMS into a pooled
// request, which the loader releases. HEAD becomes GET: the body is what
// gets stored.
func (d *Detail) upstreamRequest(ctx *fasthttp.RequestCtx) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	d.up.prepare(ctx, req)
	req.Header.SetMethod(fasthttp.MethodGet)
	for _, h := range notForwardedOnDetail {
		req.Header.Del(h)
	}
	return req
}

// originLoad asks AnqiCMS once. What it learns for the one request that
// caused it (cookies, a renewed token) stays here for that request; the
// flight's other waiters never see it.
type originLoad struct {
	d   *Detail
	req *fasthttp.Request

	// Written by Load on the flight's goroutine; read by the leader only
	// after the flight's result reached it.
	answered    bool
	cookies     [][]byte
	updateToken []byte
}

// answer is a detail answer that must not be stored: it goes to the
// flight's waiters as is, minus per-request and connection headers.
type answer struct {
	status int
	ctype  []byte
	body   []byte
	header [][2][]byte
}

// tooLarge marks an answer over upstream.max_body: each waiter streams its
// own copy instead.
type tooLarge struct{}

// Load implements cache.Loader.
func (l *originLoad) Load(_ context.Context, key cache.Key) (cache.Loaded, error) {
	d := l.d
	req := l.req
	l.req = nil
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	start := time.Now()
	err := d.up.doDetail(req, resp)
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		observe(d.m, metrics.RouteDetail, start, nil)
		return cache.Loaded{Other: tooLarge{}}, nil
	}
	observe(d.m, metrics.RouteDetail, start, err)
	if err != nil {
		if d.logged.allow(time.Second) {
			d.log.Warn("upstream detail call failed", "order", key.Order,
				"site", string(anqicms.SiteHost(nil, req.Header.Peek("X-Host"), req.Header.Host())), "err", err)
		}
		return cache.Loaded{}, err
	}
	for _, v := range resp.Header.Cookies() {
		l.cookies = append(l.cookies, bytes.Clone(v))
	}
	if t := resp.Header.Peek("Update-Token"); len(t) > 0 {
		l.updateToken = bytes.Clone(t)
	}
	l.answered = true

	status, body := resp.StatusCode(), resp.Body()
	code, isEnvelope := anqicms.EnvelopeCode(body)
	o := d.o.Load()
	storable := status == fasthttp.StatusOK && isEnvelope && len(body) <= o.MaxBody &&
		len(resp.Header.ContentEncoding()) == 0 && (code == anqicms.CodeOK || o.StoreNegative)
	if !storable {
		a := &answer{status: status, ctype: bytes.Clone(resp.Header.ContentType()), body: bytes.Clone(body)}
		for k, v := range resp.Header.All() {
			if !notShared[string(k)] {
				a.header = append(a.header, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
			}
		}
		return cache.Loaded{Other: a}, nil
	}
	return cache.Loaded{Entry: cache.NewEntry(body, resp.Header.ContentType(), code != anqicms.CodeOK, time.Now())}, nil
}
