// Package proxy is anqi-edge's HTTP face: the order detail answered from
// the cache, the writes that invalidate it, and everything else forwarded
// to AnqiCMS untouched; plus the admin listener beside it.
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms"
	"anqi-edge/cache"
	"anqi-edge/config"
	"anqi-edge/metrics"
)

// Server is one anqi-edge replica: public and admin listeners, the cache
// tiers and the Redis connection.
type Server struct {
	cfg   *config.Config
	log   *slog.Logger
	m     *metrics.Metrics
	up    *Upstream
	store *cache.Store
	redis *cache.Redis // nil without Redis
	rdb   redis.UniversalClient

	pass   *PassThrough
	detail *Detail
	hooks  *WriteHooks
	watch  *Watch

	public    *fasthttp.Server
	admin     *http.Server
	ln, adLn  net.Listener
	replicaID string
	maxBody   int64 // server.max_request_body
	reqSeq    atomic.Uint64
	draining  atomic.Bool

	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	// extra holds test-only routes (path -> handler), consulted before
	// pass-through. Copy-on-write behind an atomic pointer, so a test may add
	// routes after Start while traffic flows; nil in production.
	extra atomic.Pointer[map[string]fasthttp.RequestHandler]
}

// New builds a replica from cfg. Nothing listens until Start.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, maxBody: int64(cfg.Server.MaxRequestBody)}
	var idb [6]byte
	rand.Read(idb[:])
	s.replicaID = hex.EncodeToString(idb[:])

	c := cfg.Cache
	keep := time.Duration(float64(c.TTL.Duration)*(1+c.Jitter)) + max(c.StaleWhileRevalidate.Duration, c.StaleIfError.Duration)
	l1, err := cache.NewL1(int64(c.Memory.MaxBytes), c.Memory.TTL.Duration, keep)
	if err != nil {
		return nil, fmt.Errorf("cache.memory: %w", err)
	}
	s.store = &cache.Store{L1: l1}
	s.m = metrics.New(l1.Size)

	if s.up, err = NewUpstream(cfg.Upstream); err != nil {
		return nil, err
	}
	ids, err := anqicms.NewIdentifier(cfg.Auth.TokenSecret, cfg.Auth.SiteSecrets, 0)
	if err != nil {
		return nil, err
	}

	if len(cfg.Redis.Addrs) > 0 {
		r := cfg.Redis
		s.rdb = redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs:         r.Addrs,
			MasterName:    r.MasterName,
			Username:      r.Username,
			Password:      r.Password,
			DB:            r.DB,
			IsClusterMode: r.Cluster,
			DialTimeout:   r.DialTimeout.Duration,
			ReadTimeout:   r.Timeout.Duration,
			WriteTimeout:  r.Timeout.Duration,
			PoolTimeout:   r.Timeout.Duration,
			PoolSize:      r.PoolSize,
			// A dead Redis must cost one short timeout, not three retries of
			// one; the breaker takes it from there.
			MaxRetries:            -1,
			ContextTimeoutEnabled: true,
		})
		s.redis = cache.NewRedis(cache.RedisOptions{
			Client:             s.rdb,
			Prefix:             r.KeyPrefix,
			Channel:            r.Channel,
			ReplicaID:          s.replicaID,
			BreakerFailures:    r.BreakerFailures,
			BreakerCooldown:    r.BreakerCooldown.Duration,
			QueueMax:           r.InvalidationQueue,
			OnRemoteInvalidate: s.store.Remote,
			OnClear:            s.store.Clear,
			Metrics:            s.m,
			Log:                log,
		})
		s.store.Redis = s.redis
	}

	s.pass = &PassThrough{up: s.up, m: s.m, maxBody: int64(cfg.Server.MaxRequestBody)}
	s.detail = NewDetail(DetailOptions{
		TTL:                  c.TTL.Duration,
		StaleWhileRevalidate: c.StaleWhileRevalidate.Duration,
		StaleIfError:         c.StaleIfError.Duration,
		NegativeTTL:          c.NegativeTTL.Duration,
		Jitter:               c.Jitter,
		RenewWindow:          cfg.Auth.RenewWindow.Duration,
		MaxBody:              int(cfg.Upstream.MaxBody),
		RedisBudget:          2*cfg.Redis.Timeout.Duration + 50*time.Millisecond,
	}, s.up, s.pass, ids, l1, s.redis, s.m, log)
	s.hooks = NewWriteHooks(cfg.Invalidate, s.up, s.store, s.m, log)
	s.watch = &Watch{
		o: WatchOptions{MaxWait: cfg.Watch.MaxWait.Duration, Heartbeat: cfg.Watch.Heartbeat.Duration, TTL: c.TTL.Duration},
		d: s.detail, m: s.m, log: log,
		hub: newWatchHub(cfg.Watch.MaxWatchers, cfg.Watch.MaxPerIdentity),
	}
	s.store.OnChange(func(order int64) { s.watch.hub.notify(order) })

	s.public = &fasthttp.Server{
		Handler:                      s.handle,
		ErrorHandler:                 s.serverError,
		ReadTimeout:                  cfg.Server.ReadTimeout.Duration,
		WriteTimeout:                 cfg.Server.WriteTimeout.Duration,
		IdleTimeout:                  cfg.Server.IdleTimeout.Duration,
		MaxRequestBodySize:           int(cfg.Server.MaxRequestBody),
		StreamRequestBody:            true,
		ExpectHandler:                s.expectContinue,
		Concurrency:                  cfg.Server.Concurrency,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{log},
	}
	s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Start binds both listeners and serves in the background. If Redis is
// configured but down, it logs a warning and serves from L1 while the Redis
// tier keeps reconnecting.
func (s *Server) Start() error {
	var err error
	if s.ln, err = net.Listen("tcp", s.cfg.Server.Listen); err != nil {
		return fmt.Errorf("server.listen %q: %w", s.cfg.Server.Listen, err)
	}
	if s.adLn, err = net.Listen("tcp", s.cfg.Admin.Listen); err != nil {
		s.ln.Close()
		return fmt.Errorf("admin.listen %q: %w", s.cfg.Admin.Listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.bgCancel = cancel
	if s.redis != nil {
		pctx, pcancel := context.WithTimeout(ctx, s.cfg.Redis.DialTimeout.Duration+s.cfg.Redis.Timeout.Duration)
		if perr := s.rdb.Ping(pctx).Err(); perr != nil {
			// go-redis reports a refused dial as a deadline; a plain dial
			// tells the operator what is actually wrong.
			if c, derr := net.DialTimeout("tcp", s.cfg.Redis.Addrs[0], s.cfg.Redis.DialTimeout.Duration); derr != nil {
				perr = derr
			} else {
				c.Close()
			}
			s.log.Warn(fmt.Sprintf("redis.addrs[0] %s: %v — serving from memory, reconnecting in the background", s.cfg.Redis.Addrs[0], perr))
		}
		pcancel()
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.redis.Run(ctx)
		}()
	}
	s.bg.Add(2)
	go func() {
		defer s.bg.Done()
		if err := s.public.Serve(s.ln); err != nil {
			s.log.Error("public listener stopped", "err", err)
		}
	}()
	go func() {
		defer s.bg.Done()
		if err := s.admin.Serve(s.adLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", "err", err)
		}
	}()
	s.log.Info("anqi-edge listening", "public", s.ln.Addr().String(), "admin", s.adLn.Addr().String(),
		"upstream", s.cfg.Upstream.URL, "redis", s.cfg.Redis.Addrs, "replica", s.replicaID)
	return nil
}

// Addr is the public listener's address; AdminAddr the admin one's.
func (s *Server) Addr() string      { return s.ln.Addr().String() }
func (s *Server) AdminAddr() string { return s.adLn.Addr().String() }

// Store exposes the cache tiers (the purge CLI and tests use it).
func (s *Server) Store() *cache.Store { return s.store }

// Metrics exposes the collectors.
func (s *Server) Metrics() *metrics.Metrics { return s.m }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then stops the admin listener and the Redis tier.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	// Watchers first: long-polls answer 304 and event streams end, so the
	// connection drain below is not held up by them.
	s.watch.hub.shutdown()
	err := s.public.ShutdownWithContext(ctx)
	aerr := s.admin.Shutdown(ctx)
	if s.bgCancel != nil {
		s.bgCancel()
	}
	s.bg.Wait()
	if s.rdb != nil {
		s.rdb.Close()
	}
	s.store.L1.Close()
	s.detail.ids.Close()
	return errors.Join(err, aerr)
}

var hRequestID = []byte("X-Request-Id")

// handle routes one public request. Routing is by exact path: the detail
// read, a configured write, or pass-through.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	route := metrics.RoutePassThrough
	defer func() {
		if p := recover(); p != nil {
			s.m.Panics.Inc()
			s.log.Error("handler panic", "path", string(ctx.Path()), "panic", p, "stack", string(debug.Stack()))
			writeEnvelope(ctx, fasthttp.StatusInternalServerError, internalError)
		}
		// Set last: pass-through copies AnqiCMS's headers over the response.
		ctx.Response.Header.SetCanonical(hRequestID, ctx.Request.Header.PeekBytes(hRequestID))
		s.m.Request(route, ctx.Response.StatusCode())
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("request", "method", string(ctx.Method()), "uri", string(ctx.RequestURI()),
				"status", ctx.Response.StatusCode(), "route", route,
				"cache", string(ctx.Response.Header.Peek("X-Cache")), "request_id", string(ctx.Request.Header.Peek("X-Request-Id")))
		}
	}()
	s.requestID(ctx)

	// fasthttp streams request bodies and does not enforce
	// MaxRequestBodySize on streams, so the limit is applied here: a
	// declared length over it is refused before anything reaches AnqiCMS.
	if int64(ctx.Request.Header.ContentLength()) > s.maxBody {
		writeEnvelope(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
		return
	}

	path := ctx.Path()
	switch {
	case string(path) == WatchPath:
		route = metrics.RouteWatch
		s.watch.LongPoll(ctx)
	case string(path) == EventsPath:
		route = metrics.RouteEvents
		s.watch.Events(ctx)
	case string(path) == DetailPath:
		route = metrics.RouteDetail
		s.detail.Serve(ctx)
	default:
		if r := s.hooks.Match(ctx.Method(), path); r != nil {
			route = metrics.RouteWrite
			if s.bufferBody(ctx) {
				s.hooks.Serve(ctx, r)
			}
			return
		}
		if extra := s.extra.Load(); extra != nil {
			if h, ok := (*extra)[string(path)]; ok {
				h(ctx)
				return
			}
		}
		s.pass.Serve(ctx)
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

// requestID makes sure every request carries X-Request-Id, upstream and back.
func (s *Server) requestID(ctx *fasthttp.RequestCtx) {
	id := ctx.Request.Header.PeekBytes(hRequestID)
	if len(id) == 0 {
		var buf [40]byte
		b := append(buf[:0], s.replicaID...)
		b = append(b, '-')
		b = strconv.AppendUint(b, s.reqSeq.Add(1), 36)
		ctx.Request.Header.SetCanonical(hRequestID, b)
	}
}

// serverError answers what fasthttp rejects before the handler runs.
func (s *Server) serverError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeEnvelope(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
	default:
		writeEnvelope(ctx, fasthttp.StatusBadRequest, badRequest)
	}
}

var (
	bodyTooLarge = anqicms.ErrorBody("request body too large")
	badRequest   = anqicms.ErrorBody("bad request")
)

// RedisLogger adapts slog for go-redis's process-wide logger: go-redis
// logs every failed reconnect (about once a second while Redis is down)
// with the standard logger; the process sends them to its log at debug.
type RedisLogger struct{ L *slog.Logger }

// Printf implements go-redis's internal logging interface.
func (r RedisLogger) Printf(_ context.Context, format string, args ...any) {
	r.L.Debug(fmt.Sprintf(format, args...), "component", "go-redis")
}

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}
