package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/cache"
	"anqi-edge/internal/negotiate"
	"anqi-edge/metrics"
	"anqi-edge/watch"
)

// DetailPath is the one read anqi-edge caches.
const DetailPath = "/api/communication/order/detail"

// X-Cache values (contract).
var (
	xHit    = []byte("HIT")
	xMiss   = []byte("MISS")
	xStale  = []byte("STALE")
	xBypass = []byte("BYPASS")
)

var (
	hXCache          = []byte("X-Cache")
	hAge             = []byte("Age")
	hETag            = []byte("ETag")
	hVary            = []byte("Vary")
	hCacheControl    = []byte("Cache-Control")
	vPrivate         = []byte("private")
	hContentEncoding = []byte("Content-Encoding")
	vAcceptEncoding  = []byte("Accept-Encoding")
	vGzip            = []byte("gzip")
	zeroAge          = []byte("0")
)

// DetailOptions are the settings the detail path needs besides the cache.
type DetailOptions struct {
	RenewWindow time.Duration // auth.renew_window
	MaxBody     int           // upstream.max_body
	// StoreNegative keeps code != 0 answers (cache.negative_ttl > 0).
	StoreNegative bool
}

// Detail answers GET/HEAD /api/communication/order/detail: parse the id,
// identify the caller, derive the key, ask the cache tiers, answer.
type Detail struct {
	// o is swapped whole by a reload.
	o     atomic.Pointer[DetailOptions]
	tiers *cache.Tiers
	up    *Upstream
	pass  *PassThrough
	ids   *anqicms.Identifier
	m     *metrics.Metrics
	log   *slog.Logger
	// calls pools the per-request cache.Caller, so a hit hands Tiers.Get
	// a pointer that is already on the heap and allocates nothing.
	calls  sync.Pool
	logged logLimiter
}

// NewDetail wires the detail path.
func NewDetail(o DetailOptions, tiers *cache.Tiers, up *Upstream, pass *PassThrough, ids *anqicms.Identifier,
	m *metrics.Metrics, log *slog.Logger) *Detail {
	d := &Detail{tiers: tiers, up: up, pass: pass, ids: ids, m: m, log: log}
	d.SetOptions(o)
	d.calls.New = func() any { return &originCall{d: d} }
	return d
}

// SetOptions replaces the detail settings (a reload).
func (d *Detail) SetOptions(o DetailOptions) { d.o.Store(&o) }

// Serve is the fasthttp handler. A fresh L1 hit allocates nothing:
// everything up to respond works on stack buffers and on slices fasthttp
// owns.
//
// The clock is read once, here: the identity's expiry, L1's freshness and
// a hit's Age are all judged at the request's arrival.
func (d *Detail) Serve(ctx *fasthttp.RequestCtx) {
	now := time.Now()
	key, _, ok := d.admit(ctx, now)
	if !ok {
		return
	}
	if ctx.IsHead() {
		// AnqiCMS does not route HEAD: answer it from what is cached, and
		// otherwise let AnqiCMS give its own answer.
		if e, st := d.tiers.Peek(key); e != nil {
			d.respond(ctx, e, st, time.Now().UnixNano())
		} else {
			d.bypass(ctx)
		}
		return
	}
	c := d.calls.Get().(*originCall)
	c.ctx = ctx
	res, err := d.tiers.GetAt(context.Background(), key, c, now.UnixNano())
	fg := c.fg
	c.ctx, c.fg = nil, nil
	d.calls.Put(c)
	if err != nil {
		d.fail(ctx, err)
		return
	}
	d.write(ctx, res, fg)
}

// admit parses and identifies a detail request and derives its key. When
// the request must not use the cache it answers it itself (bad id: a local
// error; anything else: forwarded as is) and reports false.
func (d *Detail) admit(ctx *fasthttp.RequestCtx, now time.Time) (cache.Key, anqicms.Identity, bool) {
	if !ctx.IsGet() && !ctx.IsHead() {
		d.bypass(ctx)
		return cache.Key{}, anqicms.Identity{}, false
	}
	args := ctx.QueryArgs()
	order, bad := anqicms.ParseOrderID(args)
	if bad != nil {
		writeEnvelope(ctx, fasthttp.StatusOK, bad)
		noCache(ctx)
		return cache.Key{}, anqicms.Identity{}, false
	}
	// ?lang= makes AnqiCMS answer 307 with a lang cookie, and a client's
	// Connection header can remove headers the key is made of before
	// AnqiCMS sees them: neither is a plain detail read.
	if args.Has("lang") || namesOtherHeaders(ctx.Request.Header.Peek("Connection")) {
		d.bypass(ctx)
		return cache.Key{}, anqicms.Identity{}, false
	}
	var siteBuf [128]byte
	site := anqicms.SiteHost(siteBuf[:0], ctx.Request.Header.Peek("X-Host"), ctx.Request.Header.Host())
	// Read as AnqiCMS (net/http) reads what is forwarded, not as
	// fasthttp's cookie parser would: the two disagree on malformed
	// Cookie headers.
	token := anqicms.RequestToken(&ctx.Request.Header)
	o := d.o.Load()
	id := d.ids.Identify(site, token, now)
	// Anonymous requests are never cached: AnqiCMS, not anqi-edge, decides
	// who is logged in. Tokens about to expire go through so AnqiCMS can
	// send Update-Token.
	if id.Kind == anqicms.Anonymous || (id.Expiry != 0 && time.Unix(id.Expiry, 0).Sub(now) < o.RenewWindow) {
		d.bypass(ctx)
		return cache.Key{}, anqicms.Identity{}, false
	}
	lang := anqicms.RequestCookie(&ctx.Request.Header, "lang")
	var langBuf [96]byte
	if o.StoreNegative {
		// A stored negative answer's msg is in the language AnqiCMS picked
		// (the lang cookie, then Accept-Language): the key holds what that
		// pick depends on, so one language's error is never served to
		// another. Only then: positive answers do not vary by it, and
		// splitting them would cost hits for nothing.
		lang = anqicms.AppendMsgLanguage(langBuf[:0], lang, ctx.Request.Header.Peek("Accept-Language"))
	}
	return cache.MakeKey(order, cache.KeyParts{
		Site:     site,
		SiteID:   args.Peek("site_id"),
		Lang:     lang,
		Identity: byte(id.Kind),
		ID:       id.ID,
	}), id, true
}

// bypass forwards without touching the cache.
func (d *Detail) bypass(ctx *fasthttp.RequestCtx) {
	d.pass.Serve(ctx)
	d.m.DetailBypass.Inc()
	noCache(ctx)
}

// noCache labels an answer that did not come from the cache (X-Cache is on
// every detail answer, errors included).
func noCache(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetCanonical(hXCache, xBypass)
	ctx.Response.Header.SetCanonical(hAge, zeroAge)
}

// respond writes a stored entry. Entries are immutable, so their slices go
// to fasthttp without a copy.
func (d *Detail) respond(ctx *fasthttp.RequestCtx, e *cache.Entry, st cache.Outcome, at int64) {
	label := xMiss
	switch st {
	case cache.Hit:
		label = xHit
		d.m.DetailHit.Inc()
	case cache.Stale:
		label = xStale
		d.m.DetailStale.Inc()
	default:
		d.m.DetailMiss.Inc()
	}
	h := &ctx.Response.Header
	ctx.SetStatusCode(fasthttp.StatusOK)
	h.SetContentTypeBytes(e.ContentType)
	h.SetCanonical(hETag, e.ETag)
	h.SetCanonical(hXCache, label)
	if at == 0 { // a Result from anywhere but Tiers.GetAt
		at = time.Now().UnixNano()
	}
	age := max(e.Age(at)/time.Second, 0)
	var ageBuf [20]byte
	h.SetCanonical(hAge, strconv.AppendInt(ageBuf[:0], int64(age), 10))
	h.SetCanonical(hVary, vAcceptEncoding)
	// The answer is one user's order: shared caches in front of anqi-edge
	// must not keep it.
	h.SetCanonical(hCacheControl, vPrivate)
	if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && negotiate.ETagMatches(inm, e.ETag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		ctx.Response.SkipBody = true
		return
	}
	if e.Gzip != nil && negotiate.AcceptsGzip(ctx.Request.Header.Peek("Accept-Encoding")) {
		h.SetCanonical(hContentEncoding, vGzip)
		ctx.Response.SetBodyRaw(e.Gzip)
		return
	}
	ctx.Response.SetBodyRaw(e.Body)
}

// write answers with what the tiers returned. fg is the loader this
// request handed out for its own answer, if any: when it ran, AnqiCMS's
// per-request headers (a renewed token, cookies) are this request's.
func (d *Detail) write(ctx *fasthttp.RequestCtx, res cache.Result, fg *originLoad) {
	switch a := res.Other.(type) {
	case nil:
		d.respond(ctx, res.Entry, res.Outcome, res.At)
	case *answer:
		d.m.DetailMiss.Inc()
		ctx.SetStatusCode(a.status)
		ctx.Response.Header.SetContentTypeBytes(a.ctype)
		ctx.Response.Header.SetCanonical(hXCache, xMiss)
		ctx.Response.Header.SetCanonical(hAge, zeroAge)
		for _, h := range a.header {
			ctx.Response.Header.AddBytesKV(h[0], h[1])
		}
		ctx.Response.SetBodyRaw(a.body)
	case tooLarge:
		// Over upstream.max_body: not storable, so each waiter streams its
		// own copy through instead of one being held in memory.
		d.bypass(ctx)
		return
	}
	if fg != nil && fg.answered {
		for _, c := range fg.cookies {
			ctx.Response.Header.AddBytesV("Set-Cookie", c)
		}
		if fg.updateToken != nil {
			ctx.Response.Header.SetBytesV("Update-Token", fg.updateToken)
		}
	}
}

// fail answers a request whose answer could not be had.
func (d *Detail) fail(ctx *fasthttp.RequestCtx, err error) {
	d.m.DetailResults.WithLabelValues("ERROR").Inc()
	switch {
	case errors.Is(err, cache.ErrLoaderPanic):
		writeEnvelope(ctx, fasthttp.StatusInternalServerError, internalError)
	case errors.Is(err, cache.ErrFlightTimeout):
		writeEnvelope(ctx, fasthttp.StatusGatewayTimeout, upstreamUnavailable)
	default:
		writeUpstreamFailure(ctx, err)
	}
	noCache(ctx)
}

var internalError = anqicms.ErrorBody("internal error")

// Watching: the view of the detail path that package watch depends on.

// Admit reads a watch request as the detail read it stands for. When that
// read may not use the cache (bad id, anonymous, renewing token) it answers
// ctx as the detail endpoint would and reports false.
func (d *Detail) Admit(ctx *fasthttp.RequestCtx) (watch.Subject, bool) {
	// Whatever is forwarded must be the detail read, not the watch path,
	// which AnqiCMS does not have.
	uri := ctx.Request.URI()
	uri.SetPath(DetailPath)
	uri.QueryArgs().Del("etag")
	ctx.Request.Header.SetRequestURIBytes(uri.RequestURI())
	if !ctx.IsHead() {
		// HEAD stays HEAD: fasthttp decides from the request's method,
		// after the handler, whether to send the answer's body, and a
		// HEAD forwarded to AnqiCMS must get AnqiCMS's answer to HEAD.
		ctx.Request.Header.SetMethod(fasthttp.MethodGet)
	}
	key, id, ok := d.admit(ctx, time.Now())
	if !ok {
		return watch.Subject{}, false
	}
	s := watch.Subject{Key: key, Caller: templateCaller{d: d, tmpl: d.upstreamRequest(ctx)}}
	// The per-identity watcher cap counts users, not tokens: one user
	// with many valid tokens is still one user. The userId claim is read
	// (unverified in fingerprint mode, as t is) for that alone; without
	// one, the token itself is the owner.
	var site [128]byte
	owner := anqicms.SiteHost(site[:0], ctx.Request.Header.Peek("X-Host"), ctx.Request.Header.Host())
	if len(id.User) > 0 {
		owner = append(append(owner, 0, 'u'), id.User...)
	} else {
		owner = append(append(owner, 0, byte(id.Kind)), id.ID...)
	}
	s.Owner = sha256.Sum256(owner)
	if id.Expiry != 0 {
		s.Renew = time.Unix(id.Expiry, 0).Add(-d.o.Load().RenewWindow)
	}
	return s, true
}

// Current is the order's answer for s as the detail endpoint would give it
// now, without writing anything.
func (d *Detail) Current(s watch.Subject) (cache.Result, error) {
	return d.tiers.Get(context.Background(), s.Key, s.Caller)
}

// Write answers ctx with r as the detail endpoint would.
func (d *Detail) Write(ctx *fasthttp.RequestCtx, r cache.Result) { d.write(ctx, r, nil) }

// Fail answers ctx as the detail endpoint answers a failed read.
func (d *Detail) Fail(ctx *fasthttp.RequestCtx, err error) { d.fail(ctx, err) }

// Body is the body r is answered with (an SSE error event carries it).
func (d *Detail) Body(r cache.Result) []byte {
	switch a := r.Other.(type) {
	case nil:
		return r.Entry.Body
	case *answer:
		return a.body
	}
	return upstreamUnavailable
}
