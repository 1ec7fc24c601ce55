// Package proxy is anqi-edge's HTTP face: the order detail answered from
// the cache tiers, the writes that invalidate it, and everything else
// forwarded to AnqiCMS. It speaks HTTP only: what is cached and for how
// long is package cache's business, who is asking is package anqicms's.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/config"
	"anqi-edge/internal/crlf"
	"anqi-edge/metrics"
	"anqi-edge/watch"
)

// Options are what the public listener serves.
type Options struct {
	Server config.Server
	// TLS, when set, makes the public listener speak TLS (server.tls_cert).
	TLS    *tls.Config
	Detail *Detail
	Hooks  *WriteHooks
	Pass   *PassThrough
	Watch  *watch.Watch // nil: the watch paths are forwarded like any other
	// Static serves files from disk ahead of pass-through (nil: off). It
	// reports false for a request it does not serve.
	Static    Static
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	ReplicaID string
}

// Static serves what is on disk; false means "not mine, forward it".
type Static interface {
	Serve(ctx *fasthttp.RequestCtx) bool
}

// Server is the public listener.
type Server struct {
	o       Options
	srv     *fasthttp.Server
	ln      net.Listener
	maxBody int64 // server.max_request_body
}

// New builds the public listener. Nothing listens until Serve.
func New(o Options) *Server {
	s := &Server{o: o, maxBody: int64(o.Server.MaxRequestBody)}
	s.srv = &fasthttp.Server{
		Handler:            s.handle,
		ErrorHandler:       s.serverError,
		ReadTimeout:        o.Server.ReadTimeout.Duration,
		WriteTimeout:       o.Server.WriteTimeout.Duration,
		IdleTimeout:        o.Server.IdleTimeout.Duration,
		MaxRequestBodySize: int(o.Server.MaxRequestBody),
		// The read buffer bounds the request line plus headers: past it
		// fasthttp reports ErrSmallBuffer and serverError answers 431.
		ReadBufferSize:               int(o.Server.MaxHeaderBytes),
		StreamRequestBody:            true,
		ExpectHandler:                s.expectContinue,
		Concurrency:                  o.Server.Concurrency,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{o.Log},
	}
	return s
}

// Listen binds server.listen.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.o.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen %q: %w", s.o.Server.Listen, err)
	}
	if s.o.TLS != nil {
		// Not wrapped for bare LF: fasthttp tells TLS connections by
		// their type (ctx.IsTLS), which a wrapper would hide.
		ln = tls.NewListener(ln, s.o.TLS)
	} else {
		ln = crlf.Listener(ln)
	}
	s.ln = ln
	return nil
}

// Serve serves the bound listener until Shutdown.
func (s *Server) Serve() error { return s.srv.Serve(s.ln) }

// Handler is the request handler the listener runs.
func (s *Server) Handler() fasthttp.RequestHandler { return s.srv.Handler }

// Addr is the public listener's address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops accepting and lets in-flight requests finish until ctx
// ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.ShutdownWithContext(ctx) }

var hRequestID = []byte("X-Request-Id")

// handle routes one public request by the path AnqiCMS would route it by:
// the detail read, the watch endpoints, a configured write, or
// pass-through.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	route := metrics.RoutePassThrough
	var idBuf [64]byte
	id := requestID(ctx, s.o.ReplicaID, idBuf[:0])
	defer func() {
		if p := recover(); p != nil {
			s.o.Metrics.Panics.Inc()
			s.o.Log.Error("handler panic", "path", string(ctx.Path()), "panic", p, "stack", string(debug.Stack()))
			writeEnvelope(ctx, fasthttp.StatusInternalServerError, internalError)
		}
		// Set last: pass-through copies AnqiCMS's headers over the response.
		if id == nil { // the client's, longer than idBuf: read it again
			id = ctx.Request.Header.PeekBytes(hRequestID)
		}
		ctx.Response.Header.SetCanonical(hRequestID, id)
		s.o.Metrics.Request(route, ctx.Response.StatusCode())
		if s.o.Log.Enabled(context.Background(), slog.LevelDebug) {
			s.o.Log.Debug("request", "method", string(ctx.Method()), "uri", string(ctx.RequestURI()),
				"status", ctx.Response.StatusCode(), "route", route,
				"cache", string(ctx.Response.Header.Peek("X-Cache")), "request_id", string(id))
		}
	}()

	// fasthttp streams request bodies and does not enforce
	// MaxRequestBodySize on streams, so the limit is applied here: a
	// declared length over it is refused before anything reaches AnqiCMS.
	if int64(ctx.Request.Header.ContentLength()) > s.maxBody {
		writeEnvelope(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
		return
	}
	if len(ctx.Request.Header.Host()) == 0 {
		// HTTP/1.0 without Host: AnqiCMS picks its site by Host, and
		// nothing can be forwarded without one. The client's error.
		writeEnvelope(ctx, fasthttp.StatusBadRequest, badRequest)
		return
	}

	// Route on the path AnqiCMS's router sees; the raw path is what is
	// forwarded, so a spelling AnqiCMS does not route (//, /./, %2F, a
	// trailing slash) is neither cached nor hooked here.
	var pathBuf [256]byte
	path, ok := anqicms.RoutePath(pathBuf[:0], ctx.Request.URI().PathOriginal())
	if !ok {
		s.o.Pass.Serve(ctx)
		return
	}
	switch {
	case string(path) == DetailPath:
		route = metrics.RouteDetail
		s.o.Detail.Serve(ctx)
	case s.o.Watch != nil && string(path) == watch.WatchPath:
		route = metrics.RouteWatch
		s.o.Watch.LongPoll(ctx)
	case s.o.Watch != nil && string(path) == watch.EventsPath:
		route = metrics.RouteEvents
		s.o.Watch.Events(ctx)
	default:
		if r := s.o.Hooks.Match(ctx.Method(), path); r != nil {
			route = metrics.RouteWrite
			if s.bufferBody(ctx) {
				s.o.Hooks.Serve(ctx, r)
			}
			return
		}
		if s.o.Static != nil && s.o.Static.Serve(ctx) {
			route = metrics.RouteStatic
			return
		}
		s.o.Pass.Serve(ctx)
	}
}

// expectContinue answers "Expect: 100-continue": an upload whose declared
// length is over server.max_request_body is refused with 413 before the
// client sends it (fasthttp writes the bare status and closes).
func (s *Server) expectContinue(ctx *fasthttp.RequestCtx) int {
	if int64(ctx.Request.Header.ContentLength()) > s.maxBody {
		return fasthttp.StatusRequestEntityTooLarge
	}
	return fasthttp.StatusContinue
}

// bufferBody reads a streamed request body whole, for handlers that must
// see all of it (write hooks look for the order id). It stops one byte past
// server.max_request_body, which only a chunked body can reach, and answers
// 413 then, or 400 when the body breaks off; it reports whether to go on.
func (s *Server) bufferBody(ctx *fasthttp.RequestCtx) bool {
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return true
	}
	body, err := io.ReadAll(io.LimitReader(stream, s.maxBody+1))
	switch {
	case err != nil:
		writeEnvelope(ctx, fasthttp.StatusBadRequest, badRequest)
		return false
	case int64(len(body)) > s.maxBody:
		writeEnvelope(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
		return false
	}
	ctx.Request.SetBodyRaw(body)
	return true
}

// requestID returns the request's X-Request-Id: the client's, copied into
// buf (nil when it does not fit there), else the one anqi-edge gives it. A
// copy, because the handler may rewrite the request's headers before the
// answer is labelled with it. The request itself is not changed: what is
// forwarded gets the id in Upstream.prepare, and an answer from the cache
// never needs it on the request.
func requestID(ctx *fasthttp.RequestCtx, replica string, buf []byte) []byte {
	if id := ctx.Request.Header.PeekBytes(hRequestID); len(id) > 0 {
		if len(id) > cap(buf) {
			return nil
		}
		return append(buf, id...)
	}
	return appendGeneratedID(buf, replica, ctx)
}

// appendGeneratedID appends the id anqi-edge gives a request that came
// without one: the replica id, fasthttp's number of the connection and the
// request's number on it. That is unique in this process without a counter
// every request would write, and across replicas by the replica id. It is
// a function of the request alone, so the answer and the forwarded
// request, made in different places, carry the same id.
func appendGeneratedID(dst []byte, replica string, ctx *fasthttp.RequestCtx) []byte {
	dst = append(dst, replica...)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, ctx.ConnID(), 36)
	dst = append(dst, '.')
	return strconv.AppendUint(dst, ctx.ConnRequestNum(), 36)
}

// serverError answers what fasthttp rejects before the handler runs.
func (s *Server) serverError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeEnvelope(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
	case errors.As(err, &small):
		// Request line plus headers over server.max_header_bytes.
		writeEnvelope(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, headersTooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		// server.read_timeout passed before a whole request arrived, on a
		// connection that may never have sent a byte (a browser's spare,
		// preconnected socket). 408 with close is what clients expect there
		// and retry on; a 400 would read as this request's answer.
		writeEnvelope(ctx, fasthttp.StatusRequestTimeout, requestTimeout)
		ctx.SetConnectionClose()
	default:
		writeEnvelope(ctx, fasthttp.StatusBadRequest, badRequest)
	}
}

var (
	bodyTooLarge    = anqicms.ErrorBody("request body too large")
	badRequest      = anqicms.ErrorBody("bad request")
	headersTooLarge = anqicms.ErrorBody("request headers too large")
	requestTimeout  = anqicms.ErrorBody("request timeout")
)

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}
