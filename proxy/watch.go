package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/cache"
	"anqi-edge/metrics"
)

// Watch endpoints: push instead of poll. anqi-edge learns of every change
// it can see the instant it happens (write hooks, purge, pub/sub from other
// replicas), so a client can wait for the next change instead of asking
// again and again.
const (
	WatchPath  = "/api/communication/order/watch"
	EventsPath = "/api/communication/order/events"
)

// WatchOptions are the watch.* settings.
type WatchOptions struct {
	MaxWait   time.Duration // long-poll: answer 304 after this long without a change
	Heartbeat time.Duration // SSE: comment line this often; also how fast a gone client is noticed
	// TTL re-checks an SSE watcher's order this often even without a
	// change signal, so changes anqi-edge cannot see (the admin panel)
	// still arrive within cache.ttl.
	TTL time.Duration
}

// Watch serves long-poll and Server-Sent-Events watchers of an order. Every
// answer goes through the detail path (same key, same identity rules, same
// singleflight), so a watcher sees exactly what the detail endpoint would
// show it, and one change costs one upstream call however many watch.
type Watch struct {
	o   WatchOptions
	d   *Detail
	hub *watchHub
	m   *metrics.Metrics
	log *slog.Logger
}

var hLastEventID = []byte("Last-Event-ID")

// sseMaxLife bounds one event stream; the client reconnects after it.
const sseMaxLife = time.Hour

// sameETag compares a client-supplied tag (etag query value, Last-Event-ID)
// with a stored strong ETag, accepting it with or without quotes or W/.
func sameETag(client, stored []byte) bool {
	client = bytes.TrimPrefix(bytes.TrimSpace(client), []byte("W/"))
	client = bytes.Trim(client, `"`)
	return len(client) > 0 && bytes.Equal(client, bytes.Trim(stored, `"`))
}

// admit runs the detail path's admission for a watch request: bad ids are
// answered locally, and anonymous or renewing tokens are forwarded as the
// detail read they stand for (AnqiCMS's answer, no subscription). It also
// rewrites the upstream request template to the detail endpoint.
//
// until is when the token enters its renewal window: past it the detail
// path would no longer serve this identity from the cache, so an event
// stream must end by then (the client reconnects and AnqiCMS renews).
func (w *Watch) admit(ctx *fasthttp.RequestCtx) (key cache.Key, digest [32]byte, tmpl *fasthttp.Request, until time.Time, ok bool) {
	// Whatever is forwarded must be the detail read, not this path, which
	// AnqiCMS does not have.
	uri := ctx.Request.URI()
	uri.SetPath(DetailPath)
	uri.QueryArgs().Del("etag")
	ctx.Request.Header.SetRequestURIBytes(uri.RequestURI())
	key, id, ok := w.d.admit(ctx)
	if !ok {
		return key, digest, nil, until, false
	}
	digest = sha256.Sum256(append([]byte{byte(id.Kind)}, id.ID...))
	until = time.Now().Add(sseMaxLife)
	if id.Expiry != 0 {
		if renew := time.Unix(id.Expiry, 0).Add(-w.d.o.RenewWindow); renew.Before(until) {
			until = renew
		}
	}
	return key, digest, w.d.upstreamRequest(ctx), until, true
}

// subscribe reserves a watcher slot. When a limit refuses it, it answers
// 503 with the envelope and returns nil; during shutdown it returns nil and
// leaves the answer to the caller (why == "shutdown").
func (w *Watch) subscribe(ctx *fasthttp.RequestCtx, key cache.Key, id [32]byte) (*watchSlot, string) {
	slot, why := w.hub.admit(key.Order, id)
	if slot == nil && why != "shutdown" {
		w.m.WatchRejected.WithLabelValues(why).Inc()
		writeEnvelope(ctx, fasthttp.StatusServiceUnavailable, tooManyWatchers)
	}
	return slot, why
}

var tooManyWatchers = anqicms.ErrorBody("too many watchers; poll the detail endpoint instead")

// watchable reports whether res may be watched: a stored, positive answer.
// Anything else (no access, order not found, upstream trouble) is answered
// as the detail endpoint would and nothing is subscribed.
func watchable(res *flightResult) bool {
	return res.entry != nil && !res.entry.Negative
}

// LongPoll is GET /api/communication/order/watch?id=N&etag=E. If the
// order's current ETag differs from E it answers at once, exactly as the
// detail endpoint would; otherwise it waits for a change (then answers with
// the new detail) or for watch.max_wait (then 304).
//
// Access is established before anything is subscribed: the first look goes
// through the detail path, so a request that would not get this order's
// detail (no access, not found, upstream trouble) gets the detail
// endpoint's answer and never takes a watcher slot.
func (w *Watch) LongPoll(ctx *fasthttp.RequestCtx) {
	etag := bytes.Clone(ctx.QueryArgs().Peek("etag"))
	key, id, tmpl, _, ok := w.admit(ctx)
	if !ok {
		return
	}
	res, err := w.d.current(key, tmpl)
	if err != nil {
		w.d.fail(ctx, err)
		return
	}
	if !watchable(res) || !sameETag(etag, res.entry.ETag) {
		w.d.write(ctx, res, &leaderHeaders{}, time.Now().UnixNano())
		return
	}
	slot, why := w.subscribe(ctx, key, id)
	if slot == nil {
		if why == "shutdown" {
			w.notModified(ctx, etag)
		}
		return
	}
	defer slot.release()
	gauge := w.m.Watchers.WithLabelValues("longpoll")
	gauge.Inc()
	defer gauge.Dec()

	// Take the change signal, then look again (an L1 hit): a change that
	// landed between the first look and the subscription still counts.
	changed := slot.changed()
	// answerIfChanged looks at the order again and answers when it no
	// longer matches the client's ETag; a failed look keeps waiting (the
	// next change or max_wait answers).
	answerIfChanged := func() bool {
		res, err := w.d.current(key, tmpl)
		if err != nil || (watchable(res) && sameETag(etag, res.entry.ETag)) {
			return false
		}
		w.d.write(ctx, res, &leaderHeaders{}, time.Now().UnixNano())
		return true
	}
	if answerIfChanged() {
		return
	}
	deadline := time.NewTimer(w.o.MaxWait)
	defer deadline.Stop()
	probe := time.NewTicker(min(w.o.Heartbeat, time.Second))
	defer probe.Stop()
	for {
		select {
		case <-changed:
			w.m.WatchWakeups.Inc()
			changed = slot.changed()
			if answerIfChanged() {
				w.m.WatchEvents.Inc()
				return
			}
		case <-probe.C:
			if peerGone(ctx.Conn()) {
				// Nobody to answer: free the slot now, not at max_wait.
				ctx.SetConnectionClose()
				return
			}
		case <-deadline.C:
			w.notModified(ctx, etag)
			return
		case <-w.hub.closing:
			w.notModified(ctx, etag)
			return
		}
	}
}

func (w *Watch) notModified(ctx *fasthttp.RequestCtx, etag []byte) {
	ctx.SetStatusCode(fasthttp.StatusNotModified)
	ctx.Response.Header.SetCanonical(hETag, append(append([]byte{'"'}, bytes.Trim(etag, `"`)...), '"'))
	ctx.Response.Header.SetCanonical(hXCache, xHit)
	ctx.Response.SkipBody = true
}

// Events is GET /api/communication/order/events?id=N, a Server-Sent-Events
// stream: the current detail first (unless Last-Event-ID already names its
// ETag), then one event per change, each with `id:` set to the ETag, and a
// comment line every watch.heartbeat.
func (w *Watch) Events(ctx *fasthttp.RequestCtx) {
	last := bytes.Clone(ctx.Request.Header.PeekBytes(hLastEventID))
	key, id, tmpl, until, ok := w.admit(ctx)
	if !ok {
		return
	}
	// Access first, as in LongPoll: no slot for a request that would not
	// get this order's detail.
	res, err := w.d.current(key, tmpl)
	if err != nil {
		w.d.fail(ctx, err)
		return
	}
	if !watchable(res) {
		w.d.write(ctx, res, &leaderHeaders{}, time.Now().UnixNano())
		return
	}
	slot, why := w.subscribe(ctx, key, id)
	if slot == nil {
		if why == "shutdown" {
			// A short stream, so EventSource reconnects (to another
			// replica) instead of giving up as it would on an error status.
			w.sseHeaders(ctx)
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			if !sameETag(last, res.entry.ETag) {
				writeEvent(bw, res.entry)
			}
			bw.WriteString(sseShutdown)
			bw.Flush()
			ctx.SetBody(buf.Bytes())
		}
		return
	}
	// Take the change signal, then look again (an L1 hit), so a change
	// between the first look and the subscription is not missed.
	changed := slot.changed()
	if res, err = w.d.current(key, tmpl); err != nil || !watchable(res) {
		slot.release()
		if err != nil {
			w.d.fail(ctx, err)
		} else {
			w.d.write(ctx, res, &leaderHeaders{}, time.Now().UnixNano())
		}
		return
	}
	gauge := w.m.Watchers.WithLabelValues("sse")
	gauge.Inc()
	w.sseHeaders(ctx)
	// server.write_timeout would cut the stream; instead a stream lives at
	// most sseMaxLife (EventSource clients reconnect with Last-Event-ID), and
	// every flush below moves the connection's write deadline to a few
	// heartbeats ahead, so a client that stops reading is dropped (and its
	// slot freed) within that, not at the end of the stream's life.
	ctx.SetWriteDeadline(time.Now().Add(sseMaxLife + w.o.Heartbeat))
	// The stream writer runs on its own goroutine, so it must not touch
	// ctx: everything it needs is captured here.
	cur := res.entry
	conn := ctx.Conn()
	ctx.SetBodyStreamWriter(func(bw *bufio.Writer) {
		stall := 2*w.o.Heartbeat + 5*time.Second
		flush := func() error {
			// net.Conn deadlines may be moved from any goroutine; fasthttp
			// leaves this one alone because the handler set it.
			conn.SetWriteDeadline(time.Now().Add(stall))
			return bw.Flush()
		}
		defer gauge.Dec()
		defer slot.release()
		end := time.NewTimer(time.Until(until))
		defer end.Stop()
		if !sameETag(last, cur.ETag) {
			writeEvent(bw, cur)
		} else {
			bw.WriteString(": resumed\n\n")
		}
		if flush() != nil {
			return
		}
		beat := time.NewTicker(w.o.Heartbeat)
		defer beat.Stop()
		recheck := time.NewTicker(max(w.o.TTL, time.Second))
		defer recheck.Stop()
		for {
			select {
			case <-changed:
				w.m.WatchWakeups.Inc()
				changed = slot.changed()
			case <-recheck.C:
			case <-beat.C:
				// fasthttp is not reading the connection while it streams,
				// so a client that left is only noticed by a failing write,
				// which can take two or three beats; the peek sees its FIN
				// at once and frees the slot within one heartbeat.
				if peerGone(conn) {
					return
				}
				bw.WriteString(": heartbeat\n\n")
				if flush() != nil {
					return // client gone
				}
				continue
			case <-w.hub.closing:
				bw.WriteString(sseShutdown)
				flush()
				return
			case <-end.C:
				bw.WriteString("retry: 1000\n\n")
				flush()
				return
			}
			res, err := w.d.current(key, tmpl)
			if err != nil {
				continue
			}
			if !watchable(res) {
				// Access lost or the order is gone: say what AnqiCMS said
				// and end the stream.
				bw.WriteString("event: error\n")
				writeData(bw, res.body)
				flush()
				return
			}
			if !bytes.Equal(res.entry.ETag, cur.ETag) {
				cur = res.entry
				w.m.WatchEvents.Inc()
				writeEvent(bw, cur)
				if flush() != nil {
					return
				}
			}
		}
	})
}

func (w *Watch) sseHeaders(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/event-stream; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
}

// sseShutdown is the last event of a stream ended by SIGTERM.
const sseShutdown = "event: shutdown\ndata: {}\n\n"

func writeEvent(bw *bufio.Writer, e *cache.Entry) {
	bw.WriteString("id: ")
	bw.Write(e.ETag)
	bw.WriteString("\nevent: detail\n")
	writeData(bw, e.Body)
}

// writeData writes body as SSE data lines (a newline inside the body would
// otherwise end the field).
func writeData(bw *bufio.Writer, body []byte) {
	for {
		line, rest, more := bytes.Cut(body, []byte("\n"))
		bw.WriteString("data: ")
		bw.Write(bytes.TrimSuffix(line, []byte("\r")))
		bw.WriteByte('\n')
		if !more {
			break
		}
		body = rest
	}
	bw.WriteByte('\n')
}
