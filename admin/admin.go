// Package admin is the admin listener: liveness, readiness, metrics and the
// purge API. It is never mounted on the public port. What readiness reports
// and what a purge does are given to it; it knows nothing of the proxy.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"anqi-edge/anqicms"
)

// Options configure the admin listener.
type Options struct {
	Listen string // admin.listen
	// Token returns admin.token; it is read on every purge, so a reload
	// takes effect at once. Empty refuses purges.
	Token    func() string
	Pprof    bool // admin.pprof
	Gatherer prometheus.Gatherer
	// Ready reports the replica's state for /readyz. It must honour ctx.
	Ready func(ctx context.Context) any
	// Purge drops an order everywhere (cache.Tiers.Invalidate).
	Purge func(ctx context.Context, order int64) (queued bool, err error)
	// Reload re-reads the config file (nil: POST /admin/reload is 404).
	Reload func() error
	Log    *slog.Logger
}

// Server is the admin listener.
type Server struct {
	o        Options
	srv      *http.Server
	ln       net.Listener
	draining atomic.Bool
}

// New builds the admin listener; nothing listens until Listen.
func New(o Options) *Server {
	s := &Server{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /admin/purge", s.purge)
	if o.Reload != nil {
		mux.HandleFunc("POST /admin/reload", s.reload)
	}
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s
}

// Listen binds admin.listen.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen %q: %w", s.o.Listen, err)
	}
	s.ln = ln
	return nil
}

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Addr is the listener's address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Drain makes /readyz answer 503 from now on, so load balancers stop
// sending traffic while in-flight requests finish.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops the listener.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// readyz answers 200 while anqi-edge accepts traffic and 503 once it is
// draining. Neither Redis nor AnqiCMS nor the database being down makes it
// unready: it still serves from L1 and stale entries then, and pulling
// every replica out of a load balancer because AnqiCMS hiccups would turn a
// partial outage into a full one. Their state is reported for operators
// and dashboards.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
	defer cancel()
	// The replica's report, with "status" beside it.
	body := map[string]any{}
	if s.o.Ready != nil {
		if b, err := json.Marshal(s.o.Ready(ctx)); err == nil {
			json.Unmarshal(b, &body)
		}
	}
	body["status"] = "ready"
	code := http.StatusOK
	if s.draining.Load() {
		body["status"], code = "draining", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}

// authorized checks the bearer token in constant time; it answers the
// request itself when it reports false.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, what string) bool {
	want := s.o.Token()
	if want == "" {
		adminError(w, http.StatusForbidden, what+" is disabled: set admin.token")
		return false
	}
	// The scheme name is case-insensitive (RFC 9110 §11.1).
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="anqi-edge admin"`)
		adminError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return false
	}
	return true
}

// purge is POST /admin/purge?id=N[&host=H]. Invalidation is per order id
// across sites (DESIGN §4), so host is accepted and logged but drops no less.
func (s *Server) purge(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r, "purge") {
		return
	}
	ids := r.URL.Query()["id"]
	if len(ids) != 1 {
		adminError(w, http.StatusBadRequest, "give exactly one id")
		return
	}
	order, err := strconv.ParseInt(ids[0], 10, 64)
	if err != nil || order <= 0 {
		adminError(w, http.StatusBadRequest, "id must be a positive integer")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	queued, ierr := s.o.Purge(ctx, order)
	s.o.Log.Info("order invalidated", "order", order, "site", r.URL.Query().Get("host"), "source", "purge",
		"queued", queued, "err", ierr)
	if queued {
		// L1 is already clean; Redis gets it as soon as it answers.
		w.Header().Set("X-Purge-Queued", "redis unreachable; applied when it answers")
	}
	w.WriteHeader(http.StatusNoContent)
}

// reload is POST /admin/reload: the same as SIGHUP.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r, "reload") {
		return
	}
	if err := s.o.Reload(); err != nil {
		adminError(w, http.StatusBadRequest, "reload refused, running config kept: "+err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(anqicms.ErrorBody(msg))
}
