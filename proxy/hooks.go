package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/cache"
	"anqi-edge/config"
	"anqi-edge/metrics"
)

// WriteHooks forwards the writes that change an order and, once AnqiCMS
// has accepted one (HTTP 200, code 0), invalidates that order before the
// answer goes back, so the writer's next read sees the change, through any
// replica: the invalidation waits (bounded by
// cache.invalidate_confirm_timeout) until the other replicas confirm they
// dropped their copies. A write whose outcome is unknown (no answer:
// timeout, reset) invalidates too.
type WriteHooks struct {
	// rules is swapped whole by a reload.
	rules atomic.Pointer[[]hookRule]
	up    *Upstream
	inv   Invalidator
	m     *metrics.Metrics
	log   *slog.Logger
	// budget bounds the invalidation, which the client waits for.
	budget time.Duration
	logged logLimiter
}

type hookRule struct {
	method, path []byte
	src          anqicms.IDSource
	// refusal answers a write whose order id cannot be read.
	refusal []byte
}

// Invalidator drops an order everywhere and waits, within its own bound,
// for the other replicas to confirm (cache.Tiers).
type Invalidator interface {
	InvalidateConfirmed(ctx context.Context, orders []int64) []cache.Invalidated
}

// writeBudget bounds a write's invalidations, which its client waits for:
// the Redis scripts and the confirmation wait, which is itself bounded by
// cache.invalidate_confirm_timeout (at most config.MaxInvalidateConfirmTimeout)
// once for all the orders. The scripts are quick; the rest is the wait's.
const writeBudget = time.Second + config.MaxInvalidateConfirmTimeout

// NewWriteHooks compiles the [[invalidate]] rules.
func NewWriteHooks(rules []config.InvalidateRule, up *Upstream, inv Invalidator, m *metrics.Metrics, log *slog.Logger) *WriteHooks {
	w := &WriteHooks{up: up, inv: inv, m: m, log: log, budget: writeBudget}
	w.SetRules(rules)
	return w
}

// SetRules replaces the [[invalidate]] rules (a reload); requests already
// matched finish under the rule they matched.
func (w *WriteHooks) SetRules(rules []config.InvalidateRule) {
	compiled := make([]hookRule, 0, len(rules))
	for _, r := range rules {
		kind, field := r.Source()
		compiled = append(compiled, hookRule{method: []byte(r.Method), path: []byte(r.Path),
			src:     anqicms.IDSource{Kind: kind, Field: field},
			refusal: anqicms.ErrorBody(field + " must name an order: a positive integer")})
	}
	w.rules.Store(&compiled)
}

// Match finds the rule for a request, if any. There are a handful of
// rules, so a scan beats a map keyed by a concatenated string.
func (w *WriteHooks) Match(method, path []byte) *hookRule {
	rules := *w.rules.Load()
	for i := range rules {
		r := &rules[i]
		if bytes.Equal(r.path, path) && bytes.Equal(r.method, method) {
			return r
		}
	}
	return nil
}

// Serve forwards a matched write and invalidates on success.
//
// A write whose order id cannot be read is refused before anything reaches
// AnqiCMS, with AnqiCMS's own kind of answer (HTTP 200, code -1). That is
// the fail-safe choice: the id is read the way AnqiCMS binds the body
// (anqicms.WriteOrderIDs accepts everything AnqiCMS could apply, and
// more), so a body it cannot read is one AnqiCMS would refuse as well, and
// refusing it costs the client nothing. The other choice, dropping every
// cached order, would let anyone empty the cache with junk writes.
func (w *WriteHooks) Serve(ctx *fasthttp.RequestCtx, r *hookRule) {
	// Write bodies are small JSON or forms; reading them whole is what lets
	// us find the order id. They are still bounded by max_request_body.
	body := ctx.Request.Body()
	orders, idErr := anqicms.WriteOrderIDs(r.src, ctx.Request.Header.ContentType(), ctx.QueryArgs(), body)
	if idErr != nil {
		w.m.HookErrors.WithLabelValues("parse").Inc()
		if w.logged.allow(time.Second) {
			w.log.Warn("write refused: its order id cannot be read, so the order it changes could not be invalidated",
				"path", string(r.path), "source", r.src.Kind, "field", r.src.Field, "err", idErr)
		}
		writeEnvelope(ctx, fasthttp.StatusOK, r.refusal)
		return
	}

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	w.up.prepare(ctx, req)
	req.SetBody(body)
	start := time.Now()
	err := w.up.doBuffered(req, resp)
	observe(w.m, metrics.RouteWrite, start, err)
	if err != nil {
		w.log.Warn("upstream write failed", "path", string(r.path), "err", err)
		// A timeout or reset says nothing about whether AnqiCMS stored the
		// write; one extra miss is cheaper than keeping a body it may have
		// changed.
		w.invalidate(ctx, orders, string(r.path))
		writeUpstreamFailure(ctx, err)
		return
	}
	if resp.StatusCode() == fasthttp.StatusOK {
		// The client's Accept-Encoding went upstream, so AnqiCMS (or a
		// compressing proxy in front of it) may have gzipped the answer; it
		// is read decoded here and forwarded as it came.
		body, derr := resp.BodyUncompressedWithLimit(maxWriteAnswer)
		if derr != nil {
			w.log.Warn("write hook could not decode the upstream answer; order not invalidated",
				"path", string(r.path), "order", orders[0], "content_encoding", string(resp.Header.ContentEncoding()), "err", derr)
		} else if code, ok := anqicms.EnvelopeCode(body); ok && code == anqicms.CodeOK {
			w.invalidate(ctx, orders, string(r.path))
		}
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	stripHop(&ctx.Response.Header)
	ctx.Response.SetBody(resp.Body())
}

// invalidate drops every order the write names (a field given several
// values names several; the order AnqiCMS applied is among them).
func (w *WriteHooks) invalidate(ctx *fasthttp.RequestCtx, orders []int64, path string) {
	ictx, cancel := context.WithTimeout(context.Background(), w.budget)
	defer cancel()
	var sb [128]byte
	site := anqicms.SiteHost(sb[:0], ctx.Request.Header.Peek("X-Host"), ctx.Request.Header.Host())
	for _, r := range w.inv.InvalidateConfirmed(ictx, orders) {
		w.m.Invalidations.WithLabelValues("write").Inc()
		w.log.Info("order invalidated", "order", r.Order, "site", string(site), "source", "write", "path", path,
			"queued", r.Queued, "err", r.Err)
	}
}

// maxWriteAnswer bounds how far a compressed write answer is inflated to
// read its envelope code; AnqiCMS answers writes with a small envelope.
const maxWriteAnswer = 1 << 20

func observe(m *metrics.Metrics, route string, start time.Time, err error) {
	m.UpstreamLatency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if _, timeout := failure(err); timeout {
			outcome = "timeout"
		}
	}
	m.UpstreamCalls.WithLabelValues(route, outcome).Inc()
}
