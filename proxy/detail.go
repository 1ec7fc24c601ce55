package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"

	"anqi-edge/anqicms"
	"anqi-edge/cache"
	"anqi-edge/metrics"
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
)

// DetailOptions are the cache settings the detail path needs.
type DetailOptions struct {
	TTL, StaleWhileRevalidate, StaleIfError, NegativeTTL time.Duration
	Jitter                                               float64
	RenewWindow                                          time.Duration
	MaxBody                                              int
	// RedisBudget bounds one Redis round trip on the miss path.
	RedisBudget time.Duration
}

// Detail answers GET/HEAD /api/communication/order/detail: parse, identity,
// key, L1, then (inside one flight per key) Redis, AnqiCMS, store, answer.
type Detail struct {
	o       DetailOptions
	up      *Upstream
	pass    *PassThrough
	ids     *anqicms.Identifier
	l1      *cache.L1
	redis   *cache.Redis // nil: L1 only
	m       *metrics.Metrics
	log     *slog.Logger
	flights singleflight.Group
	// refreshing holds keys with a background refresh in flight, so a burst
	// of STALE hits copies the request once, not once per hit.
	// (A map under a mutex rather than a sync.Map: boxing the key into an
	// interface would allocate on every STALE hit.)
	refreshMu  sync.Mutex
	refreshing map[cache.Key]struct{}
	// wait is how long a request waits for a flight before giving up on it.
	wait time.Duration
	// fillHook, when set, runs at the start of every fill. Tests only: it
	// lets them stall or panic a fill at a chosen moment.
	fillHook atomic.Pointer[func(order int64)]
}

// NewDetail wires the detail path; redis may be nil.
func NewDetail(o DetailOptions, up *Upstream, pass *PassThrough, ids *anqicms.Identifier,
	l1 *cache.L1, redis *cache.Redis, m *metrics.Metrics, log *slog.Logger) *Detail {
	if o.RedisBudget <= 0 {
		o.RedisBudget = 250 * time.Millisecond
	}
	return &Detail{o: o, up: up, pass: pass, ids: ids, l1: l1, redis: redis, m: m, log: log,
		refreshing: map[cache.Key]struct{}{},
		wait:       up.timeout + 2*o.RedisBudget + time.Second}
}

// Serve is the fasthttp handler. A fresh L1 hit returns before the first
// allocation: everything up to respond works on stack buffers and on
// slices fasthttp owns.
func (d *Detail) Serve(ctx *fasthttp.RequestCtx) {
	key, _, ok := d.admit(ctx)
	if !ok {
		return
	}
	now := time.Now()
	nowN := now.UnixNano()
	if e, fresh := d.l1.Get(key, nowN); e != nil && fresh {
		switch d.state(e, nowN) {
		case stateFresh:
			d.m.L1Hit.Inc()
			d.respond(ctx, e, xHit, nowN)
			return
		case stateRevalidate:
			d.m.L1Stale.Inc()
			d.respond(ctx, e, xStale, nowN)
			d.refresh(ctx, key)
			return
		}
	}
	d.m.L1Miss.Inc()
	d.miss(ctx, key, now)
}

// admit parses and identifies a detail request and derives its key. When
// the request must not use the cache it answers it itself (bad id: a local
// error; anonymous or about-to-renew token: forwarded) and reports false.
func (d *Detail) admit(ctx *fasthttp.RequestCtx) (cache.Key, anqicms.Identity, bool) {
	if !ctx.IsGet() && !ctx.IsHead() {
		d.bypass(ctx)
		return cache.Key{}, anqicms.Identity{}, false
	}
	order, bad := parseOrderID(ctx.QueryArgs())
	if bad != nil {
		writeEnvelope(ctx, fasthttp.StatusOK, bad)
		return cache.Key{}, anqicms.Identity{}, false
	}
	var siteBuf [128]byte
	site := anqicms.SiteHost(siteBuf[:0], ctx.Request.Header.Peek("X-Host"), ctx.Request.Header.Host())
	token := ctx.Request.Header.Peek("token")
	if len(token) == 0 {
		token = ctx.Request.Header.Cookie("token")
	}
	now := time.Now()
	id := d.ids.Identify(site, token, now)
	// Anonymous requests are never cached: AnqiCMS, not anqi-edge, decides
	// who is logged in. Tokens about to expire go through so AnqiCMS can
	// send Update-Token.
	if id.Kind == anqicms.Anonymous || (id.Expiry != 0 && time.Unix(id.Expiry, 0).Sub(now) < d.o.RenewWindow) {
		d.bypass(ctx)
		return cache.Key{}, anqicms.Identity{}, false
	}
	return cache.MakeKey(order, cache.KeyParts{
		Site:     site,
		SiteID:   ctx.QueryArgs().Peek("site_id"),
		Lang:     ctx.Request.Header.Cookie("lang"),
		Identity: byte(id.Kind),
		ID:       id.ID,
	}), id, true
}

// bypass forwards without touching the cache.
func (d *Detail) bypass(ctx *fasthttp.RequestCtx) {
	err := d.pass.Serve(ctx)
	d.m.DetailBypass.Inc()
	if err == nil {
		ctx.Response.Header.SetCanonical(hXCache, xBypass)
		ctx.Response.Header.SetCanonical(hAge, zeroAge)
	}
}

var zeroAge = []byte("0")

type freshness int

const (
	stateFresh      freshness = iota // serve, HIT
	stateRevalidate                  // serve STALE, refresh in the background
	stateIfError                     // serve STALE only if AnqiCMS fails
	stateExpired                     // unusable
)

// ttl is e's freshness lifetime. Jitter is derived from the entry's
// stored-at time so it is the same on every replica and every read, and
// orders filled together do not all expire together.
func (d *Detail) ttl(e *cache.Entry) time.Duration {
	if e.Negative {
		return d.o.NegativeTTL
	}
	if d.o.Jitter == 0 {
		return d.o.TTL
	}
	u := float64((uint64(e.StoredAt)*0x9E3779B97F4A7C15)>>11) / (1 << 53) // [0,1)
	return time.Duration(float64(d.o.TTL) * (1 + d.o.Jitter*(2*u-1)))
}

func (d *Detail) state(e *cache.Entry, now int64) freshness {
	age := e.Age(now)
	ttl := d.ttl(e)
	switch {
	case age < ttl:
		return stateFresh
	case e.Negative:
		return stateExpired
	case age < ttl+d.o.StaleWhileRevalidate:
		return stateRevalidate
	case age < ttl+d.o.StaleIfError:
		return stateIfError
	}
	return stateExpired
}

// keep is how long a tier holds e: past its ttl for as long as it may still
// be served stale.
func (d *Detail) keep(e *cache.Entry) time.Duration {
	if e.Negative {
		return d.o.NegativeTTL
	}
	return d.ttl(e) + max(d.o.StaleWhileRevalidate, d.o.StaleIfError)
}

// respond writes a stored entry. Entries are immutable, so their slices go
// to fasthttp without a copy.
func (d *Detail) respond(ctx *fasthttp.RequestCtx, e *cache.Entry, label []byte, now int64) {
	switch &label[0] {
	case &xHit[0]:
		d.m.DetailHit.Inc()
	case &xStale[0]:
		d.m.DetailStale.Inc()
	default:
		d.m.DetailMiss.Inc()
	}
	h := &ctx.Response.Header
	ctx.SetStatusCode(fasthttp.StatusOK)
	h.SetContentTypeBytes(e.ContentType)
	h.SetCanonical(hETag, e.ETag)
	h.SetCanonical(hXCache, label)
	age := max(e.Age(now)/time.Second, 0)
	var ageBuf [20]byte
	h.SetCanonical(hAge, strconv.AppendInt(ageBuf[:0], int64(age), 10))
	h.SetCanonical(hVary, vAcceptEncoding)
	// The answer is one user's order: shared caches in front of anqi-edge
	// must not keep it.
	h.SetCanonical(hCacheControl, vPrivate)
	if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && etagMatches(inm, e.ETag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		ctx.Response.SkipBody = true
		return
	}
	if e.Gzip != nil && acceptsGzip(ctx.Request.Header.Peek("Accept-Encoding")) {
		h.SetCanonical(hContentEncoding, vGzip)
		ctx.Response.SetBodyRaw(e.Gzip)
		return
	}
	ctx.Response.SetBodyRaw(e.Body)
}

// flightResult is what one flight hands every waiter: a stored entry, or
// an answer that was not stored. It never holds the leader's per-request
// headers; those travel in the leader's own leaderHeaders.
type flightResult struct {
	entry  *cache.Entry
	label  []byte
	status int
	ctype  []byte
	body   []byte
	// header holds the upstream's headers of an answer that was not
	// stored (a redirect's Location, say), minus per-request and
	// connection headers; it is passed on as is.
	header [][2][]byte
}

// notShared are upstream headers a flight never hands to its waiters:
// per-request ones (they go to the leader only), and those fasthttp writes
// itself.
var notShared = map[string]bool{
	"Set-Cookie": true, "Update-Token": true, "Content-Length": true, "Content-Type": true,
	"Date": true, "Server": true, "Connection": true, "Keep-Alive": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Proxy-Connection": true,
}

// leaderHeaders carries Set-Cookie and Update-Token from AnqiCMS to the one
// request whose upstream call produced them. Each waiter passes its own; only
// the leader's fill function ever runs, so only the leader's is filled in.
type leaderHeaders struct {
	ran         bool
	cookies     [][]byte
	updateToken []byte
}

var errFillPanic = errors.New("detail fill panicked")

// miss resolves key through one flight. The flight key carries the order's
// L1 generation at arrival: a request that arrives after an invalidation
// has a new generation, so it starts a new flight instead of joining one
// that may be carrying data from before the change.
func (d *Detail) miss(ctx *fasthttp.RequestCtx, key cache.Key, now time.Time) {
	// The flight outlives nothing it borrows: fasthttp reuses ctx after we
	// return, so the upstream request is a copy.
	me := &leaderHeaders{}
	res, err := d.flight(key, d.upstreamRequest(ctx), me)
	if err != nil {
		d.fail(ctx, err)
		return
	}
	d.write(ctx, res, me, time.Now().UnixNano())
}

var errFlightTimeout = errors.New("detail flight did not finish in time")

// flight resolves key through one flight per (key, L1 generation) and waits
// for it, at most d.wait. me receives AnqiCMS's per-request headers if this
// caller's request is the one that went upstream.
func (d *Detail) flight(key cache.Key, req *fasthttp.Request, me *leaderHeaders) (*flightResult, error) {
	g := d.l1.Gen(key.Order)
	fk := flightKey('m', key, g)
	timer := time.NewTimer(d.wait)
	defer timer.Stop()
	// A follower whose leader panicked tries once more in a flight of its
	// own (shared with the other followers that retry): the panic is the
	// leader's request's failure, not theirs. The retry is bounded by the
	// same deadline.
	for attempt := 0; ; attempt++ {
		ch := d.flights.DoChan(fk, func() (any, error) {
			me.ran = true
			return d.fill(req, key, g, me, false)
		})
		select {
		case r := <-ch:
			if !me.ran {
				d.m.Collapsed.Inc()
			}
			if r.Err != nil {
				if errors.Is(r.Err, errFillPanic) && !me.ran && attempt == 0 {
					continue
				}
				return nil, r.Err
			}
			return r.Val.(*flightResult), nil
		case <-timer.C:
			// The flight is stuck past every timeout it has: let later requests
			// start a new one instead of queueing behind it.
			d.flights.Forget(fk)
			d.log.Warn("detail flight did not finish in time", "order", key.Order, "waited", d.wait)
			return nil, errFlightTimeout
		}
	}
}

// fail answers a request whose flight failed.
func (d *Detail) fail(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		// Over upstream.max_body: not cacheable, so each waiter streams
		// its own copy through instead of one being held in memory.
		d.bypass(ctx)
		return
	}
	d.m.DetailResults.WithLabelValues("ERROR").Inc()
	switch {
	case errors.Is(err, errFillPanic):
		writeEnvelope(ctx, fasthttp.StatusInternalServerError, internalError)
	case errors.Is(err, errFlightTimeout):
		writeEnvelope(ctx, fasthttp.StatusGatewayTimeout, upstreamUnavailable)
	default:
		writeUpstreamFailure(ctx, err)
	}
}

// current is the order's answer for key as the detail path would give it
// (fresh L1 entry, else a flight), without writing anything. Watchers use
// it; tmpl is their upstream request, copied for each flight.
func (d *Detail) current(key cache.Key, tmpl *fasthttp.Request) (*flightResult, error) {
	now := time.Now().UnixNano()
	if e, fresh := d.l1.Get(key, now); e != nil && fresh && d.state(e, now) == stateFresh {
		return &flightResult{entry: e, label: xHit}, nil
	}
	req := new(fasthttp.Request)
	tmpl.CopyTo(req)
	return d.flight(key, req, &leaderHeaders{})
}

func (d *Detail) write(ctx *fasthttp.RequestCtx, res *flightResult, me *leaderHeaders, now int64) {
	if res.entry != nil {
		d.respond(ctx, res.entry, res.label, now)
	} else {
		d.m.DetailMiss.Inc()
		ctx.SetStatusCode(res.status)
		ctx.Response.Header.SetContentTypeBytes(res.ctype)
		ctx.Response.Header.SetCanonical(hXCache, xMiss)
		ctx.Response.Header.SetCanonical(hAge, zeroAge)
		for _, h := range res.header {
			ctx.Response.Header.AddBytesKV(h[0], h[1])
		}
		ctx.Response.SetBodyRaw(res.body)
	}
	if me.ran {
		for _, c := range me.cookies {
			ctx.Response.Header.Add("Set-Cookie", string(c))
		}
		if me.updateToken != nil {
			ctx.Response.Header.SetBytesV("Update-Token", me.updateToken)
		}
	}
}

// refresh starts one background revalidation of key (stale-while-revalidate).
func (d *Detail) refresh(ctx *fasthttp.RequestCtx, key cache.Key) {
	if !d.startRefresh(key) {
		return
	}
	g := d.l1.Gen(key.Order)
	req := d.upstreamRequest(ctx)
	go func() {
		defer d.endRefresh(key)
		<-d.flights.DoChan(flightKey('r', key, g), func() (any, error) {
			return d.fill(req, key, g, &leaderHeaders{}, true)
		})
	}()
}

// startRefresh claims key's background refresh; false if one is running.
func (d *Detail) startRefresh(key cache.Key) bool {
	d.refreshMu.Lock()
	defer d.refreshMu.Unlock()
	if _, busy := d.refreshing[key]; busy {
		return false
	}
	d.refreshing[key] = struct{}{}
	return true
}

func (d *Detail) endRefresh(key cache.Key) {
	d.refreshMu.Lock()
	delete(d.refreshing, key)
	d.refreshMu.Unlock()
}

func flightKey(kind byte, key cache.Key, g cache.Gen) string {
	// Fixed-width fields: no two (kind, key, generation) tuples share a
	// flight key.
	b := make([]byte, 0, 1+8+32+16)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, uint64(key.Order))
	b = append(b, key.Sum[:]...)
	b = binary.BigEndian.AppendUint64(b, g.Slot)
	b = binary.BigEndian.AppendUint64(b, g.Epoch)
	return string(b)
}

// upstreamRequest copies the client's request for AnqiCMS. HEAD becomes GET
// (the body is what gets stored), and conditional and encoding headers are
// dropped: anqi-edge needs the full identity-encoded body to store, and
// answers those headers itself.
func (d *Detail) upstreamRequest(ctx *fasthttp.RequestCtx) *fasthttp.Request {
	req := new(fasthttp.Request)
	d.up.prepare(ctx, req)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.Header.Del("Accept-Encoding")
	req.Header.Del("If-None-Match")
	req.Header.Del("If-Modified-Since")
	return req
}

// fill runs once per flight, on its own goroutine, bounded by its own
// timeouts (Redis budget, upstream.timeout) and never by a client's.
//
// The order of the steps matters. The L1 generation g was read before the
// flight started and the Redis generation is read before AnqiCMS is asked;
// both stores only accept the entry if those generations are still current.
// An invalidation that lands while AnqiCMS is answering therefore makes this
// fill's stores no-ops: the answer still goes to the requests already
// waiting (they asked before the change), but it is never kept.
func (d *Detail) fill(req *fasthttp.Request, key cache.Key, g cache.Gen, me *leaderHeaders, refreshing bool) (res *flightResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			d.m.Panics.Inc()
			d.log.Error("panic in detail fill", "order", key.Order, "panic", p, "stack", string(debug.Stack()))
			res, err = nil, errFillPanic
		}
	}()

	if h := d.fillHook.Load(); h != nil {
		(*h)(key.Order)
	}

	// Look again: between this request's L1 miss and its flight starting,
	// an earlier flight for the same key may have finished and filled L1
	// (singleflight only joins flights still running). Without this check
	// that request would call AnqiCMS a second time, and a burst of
	// stale-while-revalidate hits could start a second refresh.
	var stale *cache.Entry // usable only if AnqiCMS fails
	if e, fresh := d.l1.Get(key, time.Now().UnixNano()); e != nil {
		if fresh && d.state(e, time.Now().UnixNano()) == stateFresh {
			return &flightResult{entry: e, label: xHit}, nil
		}
		stale = e
	}
	rgen := int64(cache.NoGen)
	if d.redis != nil {
		rctx, cancel := context.WithTimeout(context.Background(), d.o.RedisBudget)
		e, gen, rerr := d.redis.Get(rctx, key)
		cancel()
		rgen = gen
		switch {
		case rerr != nil && !errors.Is(rerr, cache.ErrUnavailable):
			d.log.Warn("redis read failed; asking AnqiCMS", "order", key.Order, "err", rerr)
		case e != nil:
			// Redis's entry supersedes this replica's L1 copy as the
			// stale-if-error fallback: the copy may predate an invalidation
			// this replica did not hear of.
			stale = nil
			now := time.Now().UnixNano()
			switch d.state(e, now) {
			case stateFresh:
				d.m.TierResults.WithLabelValues("redis", "hit").Inc()
				d.l1.Set(key, e, g, now)
				return &flightResult{entry: e, label: xHit}, nil
			case stateRevalidate:
				if !refreshing {
					d.m.TierResults.WithLabelValues("redis", "stale").Inc()
					d.l1.Set(key, e, g, now)
					go d.revalidate(req, key, g)
					return &flightResult{entry: e, label: xStale}, nil
				}
				stale = e
			case stateIfError:
				stale = e
			}
		default:
			d.m.TierResults.WithLabelValues("redis", "miss").Inc()
			if rerr == nil {
				// Redis answered and has no entry: the order may have been
				// invalidated on another replica, so the L1 copy is no safe
				// fallback. (With Redis unreachable it stays one: L1 is
				// cleared whenever the subscription was broken.)
				stale = nil
			}
		}
	}

	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	start := time.Now()
	err = d.up.doDetail(req, resp)
	observe(d.m, metrics.RouteDetail, start, err)
	now := time.Now()
	if err != nil {
		if errors.Is(err, fasthttp.ErrBodyTooLarge) {
			return nil, err // not a failure: too big to store, streamed instead
		}
		d.log.Warn("upstream detail call failed", "order", key.Order, "site", requestSite(req), "err", err)
		if stale != nil && d.state(stale, now.UnixNano()) != stateExpired {
			return &flightResult{entry: stale, label: xStale}, nil
		}
		return nil, err
	}

	for _, v := range resp.Header.Cookies() {
		me.cookies = append(me.cookies, bytes.Clone(v))
	}
	if t := resp.Header.Peek("Update-Token"); len(t) > 0 {
		me.updateToken = bytes.Clone(t)
	}

	status, body := resp.StatusCode(), resp.Body()
	code, isEnvelope := anqicms.EnvelopeCode(body)
	storable := status == fasthttp.StatusOK && isEnvelope && len(body) <= d.o.MaxBody &&
		len(resp.Header.ContentEncoding()) == 0 && (code == anqicms.CodeOK || d.o.NegativeTTL > 0)
	if !storable {
		res := &flightResult{status: status, ctype: bytes.Clone(resp.Header.ContentType()), body: bytes.Clone(body)}
		for k, v := range resp.Header.All() {
			if !notShared[string(k)] {
				res.header = append(res.header, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
			}
		}
		return res, nil
	}
	e := cache.NewEntry(body, resp.Header.ContentType(), code != anqicms.CodeOK, now)
	if d.redis != nil {
		rctx, cancel := context.WithTimeout(context.Background(), d.o.RedisBudget)
		stored, ferr := d.redis.Fill(rctx, key, e, rgen, d.keep(e))
		cancel()
		switch {
		case ferr != nil:
			d.log.Warn("redis fill failed", "order", key.Order, "err", ferr)
		case stored:
			d.m.Fills.WithLabelValues("redis", "stored").Inc()
		case rgen != cache.NoGen:
			d.m.Fills.WithLabelValues("redis", "dropped_generation").Inc()
		}
	}
	if d.l1.Set(key, e, g, now.UnixNano()) {
		d.m.Fills.WithLabelValues("l1", "stored").Inc()
	} else {
		d.m.Fills.WithLabelValues("l1", "dropped_generation").Inc()
	}
	return &flightResult{entry: e, label: xMiss}, nil
}

// revalidate refreshes a stale Redis entry found inside a flight. req is the
// flight's own copy; the flight is done with it by the time this runs.
func (d *Detail) revalidate(req *fasthttp.Request, key cache.Key, g cache.Gen) {
	if !d.startRefresh(key) {
		return
	}
	defer d.endRefresh(key)
	<-d.flights.DoChan(flightKey('r', key, g), func() (any, error) {
		return d.fill(req, key, g, &leaderHeaders{}, true)
	})
}

// requestSite names the site of an upstream request for logs.
func requestSite(req *fasthttp.Request) string {
	return string(anqicms.SiteHost(nil, req.Header.Peek("X-Host"), req.Header.Host()))
}

var internalError = anqicms.ErrorBody("internal error")

// etagMatches implements If-None-Match's weak comparison over a list.
func etagMatches(header, etag []byte) bool {
	for len(header) > 0 {
		var tag []byte
		if i := bytes.IndexByte(header, ','); i >= 0 {
			tag, header = header[:i], header[i+1:]
		} else {
			tag, header = header, nil
		}
		tag = bytes.TrimSpace(tag)
		tag = bytes.TrimPrefix(tag, []byte("W/"))
		if bytes.Equal(tag, etag) || (len(tag) == 1 && tag[0] == '*') {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether Accept-Encoding allows gzip (and does not
// refuse it with q=0).
func acceptsGzip(ae []byte) bool {
	for len(ae) > 0 {
		var part []byte
		if i := bytes.IndexByte(ae, ','); i >= 0 {
			part, ae = ae[:i], ae[i+1:]
		} else {
			part, ae = ae, nil
		}
		name, params, _ := bytes.Cut(bytes.TrimSpace(part), []byte(";"))
		if !bytes.EqualFold(bytes.TrimSpace(name), vGzip) && !bytes.Equal(bytes.TrimSpace(name), []byte("*")) {
			continue
		}
		params = bytes.TrimSpace(params)
		if q, ok := bytes.CutPrefix(params, []byte("q=")); ok {
			if f, err := strconv.ParseFloat(string(q), 64); err == nil && f == 0 {
				return false
			}
		}
		return true
	}
	return false
}
