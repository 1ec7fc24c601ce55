package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/config"
	"anqi-edge/metrics"
)

// WriteHooks forwards the writes that change an order and, once AnqiCMS
// has accepted one (HTTP 200, code 0), invalidates that order before the
// answer goes back, so the writer's next read sees the change. A write whose
// outcome is unknown (no answer: timeout, reset) invalidates too.
type WriteHooks struct {
	// rules is swapped whole by a reload.
	rules atomic.Pointer[[]hookRule]
	up    *Upstream
	inv   Invalidator
	m     *metrics.Metrics
	log   *slog.Logger
	// budget bounds the invalidation, which the client waits for.
	budget time.Duration
}

type hookRule struct {
	method, path []byte
	source       string // json, form, query
	field        string
}

// Invalidator drops an order everywhere (cache.Tiers).
type Invalidator interface {
	Invalidate(ctx context.Context, order int64) (queued bool, err error)
}

// NewWriteHooks compiles the [[invalidate]] rules.
func NewWriteHooks(rules []config.InvalidateRule, up *Upstream, inv Invalidator, m *metrics.Metrics, log *slog.Logger) *WriteHooks {
	w := &WriteHooks{up: up, inv: inv, m: m, log: log, budget: time.Second}
	w.SetRules(rules)
	return w
}

// SetRules replaces the [[invalidate]] rules (a reload); requests already
// matched finish under the rule they matched.
func (w *WriteHooks) SetRules(rules []config.InvalidateRule) {
	compiled := make([]hookRule, 0, len(rules))
	for _, r := range rules {
		src, field := r.Source()
		compiled = append(compiled, hookRule{method: []byte(r.Method), path: []byte(r.Path), source: src, field: field})
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
func (w *WriteHooks) Serve(ctx *fasthttp.RequestCtx, r *hookRule) {
	// Write bodies are small JSON or forms; reading them whole is what lets
	// us find the order id. They are still bounded by max_request_body.
	body := ctx.Request.Body()
	order, idErr := r.orderID(ctx, body)
	if idErr != nil {
		w.m.HookErrors.WithLabelValues("parse").Inc()
		w.log.Warn("write hook could not read the order id; forwarding without invalidation",
			"path", string(r.path), "source", r.source, "field", r.field, "err", idErr)
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
		if idErr == nil {
			// A timeout or reset says nothing about whether AnqiCMS stored
			// the write; one extra miss is cheaper than keeping a body it
			// may have changed.
			w.invalidate(ctx, order, string(r.path))
		}
		writeUpstreamFailure(ctx, err)
		return
	}
	if idErr == nil && resp.StatusCode() == fasthttp.StatusOK {
		// The client's Accept-Encoding went upstream, so AnqiCMS (or a
		// compressing proxy in front of it) may have gzipped the answer; it
		// is read decoded here and forwarded as it came.
		body, derr := resp.BodyUncompressedWithLimit(maxWriteAnswer)
		if derr != nil {
			w.log.Warn("write hook could not decode the upstream answer; order not invalidated",
				"path", string(r.path), "order", order, "content_encoding", string(resp.Header.ContentEncoding()), "err", derr)
		} else if code, ok := anqicms.EnvelopeCode(body); ok && code == anqicms.CodeOK {
			w.invalidate(ctx, order, string(r.path))
		}
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	stripHop(&ctx.Response.Header)
	ctx.Response.SetBody(resp.Body())
}

func (w *WriteHooks) invalidate(ctx *fasthttp.RequestCtx, order int64, path string) {
	ictx, cancel := context.WithTimeout(context.Background(), w.budget)
	defer cancel()
	queued, err := w.inv.Invalidate(ictx, order)
	w.m.Invalidations.WithLabelValues("write").Inc()
	var sb [128]byte
	site := anqicms.SiteHost(sb[:0], ctx.Request.Header.Peek("X-Host"), ctx.Request.Header.Host())
	w.log.Info("order invalidated", "order", order, "site", string(site), "source", "write", "path", path,
		"queued", queued, "err", err)
}

var errNoID = errors.New("order id not found")

// maxWriteAnswer bounds how far a compressed write answer is inflated to
// read its envelope code; AnqiCMS answers writes with a small envelope.
const maxWriteAnswer = 1 << 20

// orderID reads the rule's id field: json:FIELD (number or numeric string),
// form:FIELD (urlencoded body) or query:FIELD.
//
// It reads the body the way AnqiCMS binds it, not the way the rule is
// spelled: AnqiCMS accepts a form body on its JSON endpoints too, and Go's
// JSON decoding matches keys case-insensitively with the last match
// winning. A hook that read the body differently from AnqiCMS would let a
// write change an order without invalidating it.
func (r *hookRule) orderID(ctx *fasthttp.RequestCtx, body []byte) (int64, error) {
	var raw []byte
	switch src := r.source; {
	case src == "query":
		raw = ctx.QueryArgs().Peek(r.field)
	case src == "form" || isForm(ctx):
		raw = formValue(ctx, body, r.field)
	case src == "json":
		var err error
		if raw, err = jsonField(body, r.field); err != nil {
			return 0, err
		}
		raw = bytes.Trim(raw, `"`)
	}
	if len(raw) == 0 {
		return 0, errNoID
	}
	id, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || id <= 0 {
		return 0, errors.Join(errNoID, err)
	}
	return id, nil
}

func isForm(ctx *fasthttp.RequestCtx) bool {
	ct := ctx.Request.Header.ContentType()
	return bytes.HasPrefix(ct, []byte("application/x-www-form-urlencoded")) ||
		bytes.HasPrefix(ct, []byte("multipart/form-data"))
}

// formValue reads field from an urlencoded or multipart body.
func formValue(ctx *fasthttp.RequestCtx, body []byte, field string) []byte {
	if bytes.HasPrefix(ctx.Request.Header.ContentType(), []byte("multipart/form-data")) {
		if mf, err := ctx.Request.MultipartForm(); err == nil {
			if v := mf.Value[field]; len(v) > 0 {
				return []byte(v[len(v)-1])
			}
		}
		return nil
	}
	var args fasthttp.Args
	args.ParseBytes(body)
	return args.Peek(field)
}

// jsonField returns the raw value of the last top-level key of a JSON
// object that equals field case-insensitively, as encoding/json binds it.
func jsonField(body []byte, field string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("body is not a JSON object")
	}
	var found []byte
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if k, _ := t.(string); strings.EqualFold(k, field) {
			found = v
		}
	}
	return found, nil
}

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
