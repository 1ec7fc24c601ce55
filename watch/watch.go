// Package watch lets a client wait for an order's next change instead of
// polling its detail: long-poll and Server-Sent Events. It learns of every
// change the cache tiers hear of (write hooks, purge, the database change
// stream, other replicas) the instant it happens, and reads the order
// through the same detail path and flights as everyone else, so a watcher
// sees exactly what the detail endpoint would show it and one change costs
// one upstream call per identity, however many of its clients watch.
package watch

import (
	"bufio"
	"bytes"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/cache"
	"anqi-edge/internal/peer"
	"anqi-edge/metrics"
)

// The watch endpoints.
const (
	WatchPath  = "/api/communication/order/watch"
	EventsPath = "/api/communication/order/events"
)

// Subject is a watch request read as the detail read it stands for.
type Subject struct {
	Key cache.Key
	// Owner is who the watcher counts against watch.max_per_identity.
	Owner [32]byte
	// Renew is when the token enters its renewal window (zero: never):
	// past it the detail path no longer serves this identity from the
	// cache, so a stream must end by then.
	Renew time.Time
	// Caller reaches the origin for the watcher long after its request
	// ended (it owns a copy of the request).
	Caller cache.Caller
}

// Orders is the detail path as a watcher needs it.
type Orders interface {
	// Admit reads a watch request as the detail read it stands for. When
	// that read may not use the cache it answers ctx as the detail
	// endpoint would and reports false.
	Admit(ctx *fasthttp.RequestCtx) (Subject, bool)
	// Current is the order's answer for s as the detail endpoint would
	// give it now.
	Current(s Subject) (cache.Result, error)
	// Write and Fail answer ctx as the detail endpoint would.
	Write(ctx *fasthttp.RequestCtx, r cache.Result)
	Fail(ctx *fasthttp.RequestCtx, err error)
	// Body is the body r is answered with.
	Body(r cache.Result) []byte
}

// Options are the watch.* settings.
type Options struct {
	MaxWait   time.Duration // long-poll: answer 304 after this long without a change
	Heartbeat time.Duration // SSE: comment line this often; also how fast a gone client is noticed
	// Recheck re-reads an SSE watcher's order this often even without a
	// change signal (cache.ttl), so a change no source reported still
	// arrives within it.
	Recheck        time.Duration
	MaxWatchers    int // watch.max_watchers
	MaxPerIdentity int // watch.max_per_identity
}

// Watch serves long-poll and Server-Sent-Events watchers of an order.
type Watch struct {
	o   Options
	d   Orders
	hub *hub
	m   *metrics.Metrics
	log *slog.Logger
}

// New builds the watch endpoints over d. Call Changed for every order
// change (cache.Tiers.OnChange) and Close at shutdown.
func New(o Options, d Orders, m *metrics.Metrics, log *slog.Logger) *Watch {
	return &Watch{o: o, d: d, m: m, log: log, hub: newHub(o.MaxWatchers, o.MaxPerIdentity)}
}

// Changed wakes the watchers of order; 0 wakes everyone. It never blocks.
func (w *Watch) Changed(order int64) { w.hub.notify(order) }

// Close ends every watch: long-polls answer 304, event streams end with a
// shutdown event. Call it before draining connections.
func (w *Watch) Close() { w.hub.shutdown() }

// Count is the number of watchers.
func (w *Watch) Count() int { return w.hub.count() }

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

// subscribe reserves a watcher slot. When a limit refuses it, it answers
// 503 with the envelope and returns nil; during shutdown it returns nil and
// leaves the answer to the caller (why == "shutdown").
func (w *Watch) subscribe(ctx *fasthttp.RequestCtx, s Subject) (*slot, string) {
	sl, why := w.hub.admit(s.Key.Order, s.Owner)
	if sl == nil && why != "shutdown" {
		w.m.WatchRejected.WithLabelValues(why).Inc()
		ctx.Response.Reset()
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetContentType("application/json; charset=utf-8")
		ctx.SetBody(tooManyWatchers)
	}
	return sl, why
}

var tooManyWatchers = anqicms.ErrorBody("too many watchers; poll the detail endpoint instead")

// watchable reports whether r may be watched: a stored, positive answer.
// Anything else (no access, order not found, upstream trouble) is answered
// as the detail endpoint would and nothing is subscribed.
func watchable(r cache.Result) bool {
	return r.Entry != nil && !r.Entry.Negative
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
	subj, ok := w.d.Admit(ctx)
	if !ok {
		return
	}
	res, err := w.d.Current(subj)
	if err != nil {
		w.d.Fail(ctx, err)
		return
	}
	if !watchable(res) || !sameETag(etag, res.Entry.ETag) {
		w.d.Write(ctx, res)
		return
	}
	slot, why := w.subscribe(ctx, subj)
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
		res, err := w.d.Current(subj)
		if err != nil || (watchable(res) && sameETag(etag, res.Entry.ETag)) {
			return false
		}
		w.d.Write(ctx, res)
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
			if peer.Closed(ctx.Conn()) {
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
	ctx.Response.Header.Set("ETag", string(append(append([]byte{'"'}, bytes.Trim(etag, `"`)...), '"')))
	ctx.Response.Header.Set("X-Cache", "HIT")
	ctx.Response.SkipBody = true
}

// Events is GET /api/communication/order/events?id=N, a Server-Sent-Events
// stream: the current detail first (unless Last-Event-ID already names its
// ETag), then one event per change, each with `id:` set to the ETag, and a
// comment line every watch.heartbeat.
func (w *Watch) Events(ctx *fasthttp.RequestCtx) {
	last := bytes.Clone(ctx.Request.Header.PeekBytes(hLastEventID))
	subj, ok := w.d.Admit(ctx)
	if !ok {
		return
	}
	until := time.Now().Add(sseMaxLife)
	if !subj.Renew.IsZero() && subj.Renew.Before(until) {
		until = subj.Renew
	}
	// Access first, as in LongPoll: no slot for a request that would not
	// get this order's detail.
	res, err := w.d.Current(subj)
	if err != nil {
		w.d.Fail(ctx, err)
		return
	}
	if !watchable(res) {
		w.d.Write(ctx, res)
		return
	}
	if ctx.IsHead() {
		// Headers only: a HEAD has no stream to wait on, so it takes no
		// watcher slot (a slot held by a stream nobody reads is freed only
		// when a write fails, seconds later under load).
		sseHeaders(ctx)
		return
	}
	slot, why := w.subscribe(ctx, subj)
	if slot == nil {
		if why == "shutdown" {
			// A short stream, so EventSource reconnects (to another
			// replica) instead of giving up as it would on an error status.
			sseHeaders(ctx)
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			if !sameETag(last, res.Entry.ETag) {
				writeEvent(bw, res.Entry)
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
	if res, err = w.d.Current(subj); err != nil || !watchable(res) {
		slot.release()
		if err != nil {
			w.d.Fail(ctx, err)
		} else {
			w.d.Write(ctx, res)
		}
		return
	}
	gauge := w.m.Watchers.WithLabelValues("sse")
	gauge.Inc()
	sseHeaders(ctx)
	// server.write_timeout would cut the stream; instead a stream lives at
	// most sseMaxLife (EventSource clients reconnect with Last-Event-ID), and
	// every flush below moves the connection's write deadline to a few
	// heartbeats ahead, so a client that stops reading is dropped (and its
	// slot freed) within that, not at the end of the stream's life.
	ctx.SetWriteDeadline(time.Now().Add(sseMaxLife + w.o.Heartbeat))
	// The stream writer runs on its own goroutine, so it must not touch
	// ctx: everything it needs is captured here.
	cur := res.Entry
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
		recheck := time.NewTicker(max(w.o.Recheck, time.Second))
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
				if peer.Closed(conn) {
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
			res, err := w.d.Current(subj)
			if err != nil {
				continue
			}
			if !watchable(res) {
				// Access lost or the order is gone: say what AnqiCMS said
				// (the envelope, whether it was stored or not) and end the
				// stream.
				bw.WriteString("event: error\n")
				writeData(bw, w.d.Body(res))
				flush()
				return
			}
			if !bytes.Equal(res.Entry.ETag, cur.ETag) {
				cur = res.Entry
				w.m.WatchEvents.Inc()
				writeEvent(bw, cur)
				if flush() != nil {
					return
				}
			}
		}
	})
}

func sseHeaders(ctx *fasthttp.RequestCtx) {
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
