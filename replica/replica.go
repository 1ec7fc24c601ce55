// Package replica assembles one anqi-edge replica from its config: the
// cache tiers, the Redis client, the AnqiCMS pool, the public listener, the
// watch endpoints and the admin listener, and starts and stops them in
// order. It is the composition root that main.go runs and that the tests
// start in-process; every package it wires knows only its own job.
package replica

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"anqi-edge/admin"
	"anqi-edge/anqicms"
	"anqi-edge/cache"
	"anqi-edge/cdc"
	"anqi-edge/config"
	"anqi-edge/metrics"
	"anqi-edge/proxy"
	"anqi-edge/static"
	"anqi-edge/tlscert"
	"anqi-edge/watch"
)

// Replica is one running anqi-edge.
type Replica struct {
	// cfg is the config in force; a reload swaps it whole.
	cfg atomic.Pointer[config.Config]
	// reloadMu serialises reloads (SIGHUP and POST /admin/reload).
	reloadMu sync.Mutex
	reloader func() error
	log      *slog.Logger
	id       string
	m        *metrics.Metrics
	tiers    *cache.Tiers
	rdb      redis.UniversalClient // nil without Redis
	up       *proxy.Upstream
	ids      *anqicms.Identifier
	watch    *watch.Watch
	pub      *proxy.Server
	admin    *admin.Server
	// certs serves server.tls_cert (nil: plain HTTP); redirect is the
	// server.redirect_http listener (nil: none).
	certs    *tlscert.Source
	redirect *fasthttp.Server
	static   staticFiles
	detail   *proxy.Detail
	hooks    *proxy.WriteHooks
	cdc      *cdc.Reader // nil: cdc.addr not set

	bgCancel context.CancelFunc
	bg       sync.WaitGroup
}

// New wires a replica from cfg. Nothing listens until Start.
func New(cfg *config.Config, log *slog.Logger) (*Replica, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Replica{log: log}
	r.cfg.Store(cfg)
	var idb [6]byte
	rand.Read(idb[:])
	r.id = hex.EncodeToString(idb[:])

	c := cfg.Cache
	policy := policy(c)
	l1, err := cache.NewL1(int64(c.Memory.MaxBytes), c.Memory.TTL.Duration, policy.MaxKeep())
	if err != nil {
		return nil, fmt.Errorf("cache.memory: %w", err)
	}
	r.m = metrics.New(l1.Size)
	redisBudget := 2*cfg.Redis.Timeout.Duration + 50*time.Millisecond
	to := cache.TiersOptions{
		L1:          l1,
		Policy:      policy,
		RedisBudget: redisBudget,
		// A waiter gives up once the flight has overrun every timeout it has.
		Wait:           cfg.Upstream.Timeout.Duration + 2*redisBudget + time.Second,
		ConfirmTimeout: c.InvalidateConfirmTimeout.Duration,
		Metrics:        r.m,
		Log:            log,
	}
	if len(cfg.Redis.Addrs) > 0 {
		if r.rdb, err = cache.NewRedisClient(cfg.Redis); err != nil {
			return nil, err
		}
		to.Redis = &cache.RedisOptions{
			Client:          r.rdb,
			Prefix:          cfg.Redis.KeyPrefix,
			Channel:         cfg.Redis.Channel,
			ReplicaID:       r.id,
			BreakerFailures: cfg.Redis.BreakerFailures,
			BreakerCooldown: cfg.Redis.BreakerCooldown.Duration,
			QueueMax:        cfg.Redis.InvalidationQueue,
			NoAutopipeline:  !cfg.Redis.Autopipeline,
		}
	}
	r.tiers = cache.NewTiers(to)

	if r.up, err = proxy.NewUpstream(cfg.Upstream, r.id); err != nil {
		return nil, err
	}
	if r.ids, err = anqicms.NewIdentifier(cfg.Auth.TokenSecret, cfg.Auth.SiteSecrets, 0); err != nil {
		return nil, err
	}
	pass := proxy.NewPassThrough(r.up, int64(cfg.Server.MaxRequestBody), r.m, log)
	r.detail = proxy.NewDetail(detailOptions(cfg), r.tiers, r.up, pass, r.ids, r.m, log)
	detail := r.detail
	r.watch = watch.New(watch.Options{
		MaxWait:        cfg.Watch.MaxWait.Duration,
		Heartbeat:      cfg.Watch.Heartbeat.Duration,
		Recheck:        c.TTL.Duration,
		MaxWatchers:    cfg.Watch.MaxWatchers,
		MaxPerIdentity: cfg.Watch.MaxPerIdentity,
	}, detail, r.m, log)
	r.tiers.OnChange(r.watch.Changed)
	var tlsConfig *tls.Config
	if cfg.Server.TLSCert != "" {
		if r.certs, err = tlscert.New(tlscert.Options{CertFile: cfg.Server.TLSCert, KeyFile: cfg.Server.TLSKey, Log: log}); err != nil {
			return nil, err
		}
		tlsConfig = r.certs.Config()
	}
	if cfg.Static.Root != "" {
		h, err := static.New(static.Options{Root: cfg.Static.Root})
		if err != nil {
			return nil, err
		}
		r.static.p.Store(h)
	}
	r.hooks = proxy.NewWriteHooks(cfg.Invalidate, r.up, r.tiers, r.m, log)
	r.pub = proxy.New(proxy.Options{
		TLS:       tlsConfig,
		Static:    &r.static,
		Server:    cfg.Server,
		Detail:    detail,
		Hooks:     r.hooks,
		Pass:      pass,
		Watch:     r.watch,
		Metrics:   r.m,
		Log:       log,
		ReplicaID: r.id,
	})
	cdcMetrics := cdc.NewMetrics(r.m.Registry)
	if cfg.CDC.Addr != "" {
		if r.cdc, err = r.newCDC(cfg, cdcMetrics); err != nil {
			return nil, err
		}
	} else {
		cdcMetrics.Off()
	}
	r.admin = admin.New(admin.Options{
		Listen:   cfg.Admin.Listen,
		Token:    func() string { return r.cfg.Load().Admin.Token },
		Pprof:    cfg.Admin.Pprof,
		Gatherer: r.m.Registry,
		Ready:    r.ready,
		Purge:    r.purge,
		Reload:   r.reload,
		Log:      log,
	})
	return r, nil
}

// Start binds both listeners and serves in the background. If Redis is
// configured but down, it logs a warning and serves from L1 while the Redis
// tier keeps reconnecting.
func (r *Replica) Start() error {
	if err := r.pub.Listen(); err != nil {
		return err
	}
	if err := r.admin.Listen(); err != nil {
		r.pub.Shutdown(context.Background())
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.bgCancel = cancel
	if rt := r.tiers.Redis(); rt != nil {
		rc := r.cfg.Load().Redis
		pctx, pcancel := context.WithTimeout(ctx, rc.DialTimeout.Duration+rc.Timeout.Duration)
		if perr := r.rdb.Ping(pctx).Err(); perr != nil {
			// go-redis reports a refused dial as a deadline; a plain dial
			// tells the operator what is actually wrong.
			if c, derr := net.DialTimeout("tcp", rc.Addrs[0], rc.DialTimeout.Duration); derr != nil {
				perr = derr
			} else {
				c.Close()
			}
			r.log.Warn(fmt.Sprintf("redis.addrs[0] %s: %v — serving from memory, reconnecting in the background", rc.Addrs[0], perr))
		}
		pcancel()
		r.goBackground(func() { rt.Run(ctx) })
	}
	if r.certs != nil {
		r.goBackground(func() { r.certs.Run(ctx) })
	}
	if r.cdc != nil {
		r.goBackground(func() { r.cdc.Run(ctx) })
	}
	if r.cfg.Load().Server.RedirectHTTP != "" {
		if err := r.startRedirect(); err != nil {
			cancel()
			r.pub.Shutdown(context.Background())
			r.admin.Shutdown(context.Background())
			return err
		}
	}
	r.goBackground(func() {
		if err := r.pub.Serve(); err != nil {
			r.log.Error("public listener stopped", "err", err)
		}
	})
	r.goBackground(func() {
		if err := r.admin.Serve(); err != nil {
			r.log.Error("admin listener stopped", "err", err)
		}
	})
	cfg := r.cfg.Load()
	r.log.Info("anqi-edge listening", "public", r.pub.Addr(), "admin", r.admin.Addr(),
		"upstream", cfg.Upstream.URL, "redis", cfg.Redis.Addrs, "replica", r.id)
	return nil
}

// startRedirect serves server.redirect_http: every plain request is sent
// to the same URL on the TLS listener's port.
func (r *Replica) startRedirect() error {
	addr := r.cfg.Load().Server.RedirectHTTP
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server.redirect_http %q: %w", addr, err)
	}
	_, p, _ := net.SplitHostPort(r.pub.Addr())
	port, _ := strconv.Atoi(p)
	r.redirect = tlscert.RedirectServer(port)
	r.goBackground(func() {
		if err := r.redirect.Serve(ln); err != nil {
			r.log.Error("redirect listener stopped", "err", err)
		}
	})
	return nil
}

func (r *Replica) goBackground(f func()) {
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		f()
	}()
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then stops the admin listener, background refreshes and the Redis tier.
func (r *Replica) Shutdown(ctx context.Context) error {
	r.admin.Drain()
	// Watchers first: long-polls answer 304 and event streams end, so the
	// connection drain below is not held up by them.
	r.watch.Close()
	err := r.pub.Shutdown(ctx)
	aerr := r.admin.Shutdown(ctx)
	if r.redirect != nil {
		aerr = errors.Join(aerr, r.redirect.ShutdownWithContext(ctx))
	}
	if h := r.static.p.Load(); h != nil {
		h.Close()
	}
	// Refreshes may still be talking to Redis: wait for them before
	// closing it.
	terr := r.tiers.Close(ctx)
	if r.bgCancel != nil {
		r.bgCancel()
	}
	r.bg.Wait()
	if r.rdb != nil {
		r.rdb.Close()
	}
	r.ids.Close()
	return errors.Join(err, aerr, terr)
}

// Addr is the public listener's address; AdminAddr the admin one's.
func (r *Replica) Addr() string      { return r.pub.Addr() }
func (r *Replica) AdminAddr() string { return r.admin.Addr() }

// Handler is the public listener's handler (benchmarks call it directly).
func (r *Replica) Handler() fasthttp.RequestHandler { return r.pub.Handler() }

// ID tells this replica's pub/sub messages and request ids apart.
func (r *Replica) ID() string { return r.id }

// Tiers are the cache tiers (the purge CLI and tests use them).
func (r *Replica) Tiers() *cache.Tiers { return r.tiers }

// Metrics are the collectors.
func (r *Replica) Metrics() *metrics.Metrics { return r.m }

// Watch is the watch endpoints (tests end them as Shutdown does first).
func (r *Replica) Watch() *watch.Watch { return r.watch }

func (r *Replica) purge(ctx context.Context, order int64) (bool, error) {
	r.m.Invalidations.WithLabelValues("purge").Inc()
	return r.tiers.Invalidate(ctx, order)
}

// newCDC builds the database change-stream reader. Its invalidations take
// the same path as a proxied write's. With Redis, one replica reads at a
// time under a lease and keeps the position in Redis, so a restart of any
// replica resumes where the stream was left; without Redis every replica
// reads for itself from the current position.
func (r *Replica) newCDC(cfg *config.Config, m *cdc.Metrics) (*cdc.Reader, error) {
	o := cdc.FromConfig(cfg.CDC)
	o.Invalidate = func(ctx context.Context, order int64) error {
		r.m.Invalidations.WithLabelValues("cdc").Inc()
		_, err := r.tiers.Invalidate(ctx, order)
		return err
	}
	o.ResetAll = r.tiers.ResetAll
	if r.rdb != nil {
		// Both or neither: the stored position is shared, so only the
		// lease holder may move it.
		o.Positions = cdc.RedisPositions(r.rdb, cfg.Redis.KeyPrefix+":cdc:pos")
		o.Lease = cdc.RedisLease(r.rdb, cfg.Redis.KeyPrefix+":cdc:lease", cfg.CDC.LeaseTTL.Duration)
	}
	o.Metrics = m
	o.Log = r.log.With("component", "cdc")
	return cdc.New(o)
}

// readiness is what /readyz reports beside its status.
type readiness struct {
	Upstream struct {
		URL       string `json:"url"`
		Reachable bool   `json:"reachable"`
		Error     string `json:"error,omitempty"`
	} `json:"upstream"`
	Redis any `json:"redis"`
	// CDC is the change-stream reader's state; "disabled" without [cdc].
	CDC any `json:"cdc"`
	L1  struct {
		Bytes   int64 `json:"bytes"`
		Entries int64 `json:"entries"`
	} `json:"l1"`
}

func (r *Replica) ready(ctx context.Context) any {
	var rd readiness
	rd.Upstream.URL = r.cfg.Load().Upstream.URL
	if conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.up.Addr()); err != nil {
		rd.Upstream.Error = err.Error()
	} else {
		rd.Upstream.Reachable = true
		conn.Close()
	}
	if rt := r.tiers.Redis(); rt != nil {
		rd.Redis = rt.Status(ctx)
	} else {
		rd.Redis = "disabled"
	}
	if r.cdc != nil {
		rd.CDC = r.cdc.Status()
	} else {
		rd.CDC = "disabled"
	}
	rd.L1.Bytes, rd.L1.Entries = r.tiers.L1().Size()
	return rd
}

// RedisLogger adapts slog for go-redis's process-wide logger: go-redis
// logs every failed reconnect (about once a second while Redis is down)
// with the standard logger; the process sends them to its log at debug.
type RedisLogger struct{ L *slog.Logger }

// Printf implements go-redis's internal logging interface.
func (l RedisLogger) Printf(_ context.Context, format string, args ...any) {
	l.L.Debug(fmt.Sprintf(format, args...), "component", "go-redis")
}
