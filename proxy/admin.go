package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"anqi-edge/anqicms"
)

// adminHandler serves the admin listener: health, readiness, metrics and
// purge. It is never mounted on the public port.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /admin/purge", s.purge)
	if s.cfg.Admin.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

type readiness struct {
	Status   string `json:"status"`
	Upstream struct {
		URL       string `json:"url"`
		Reachable bool   `json:"reachable"`
		Error     string `json:"error,omitempty"`
	} `json:"upstream"`
	Redis any `json:"redis"`
	L1    struct {
		Bytes   int64 `json:"bytes"`
		Entries int64 `json:"entries"`
	} `json:"l1"`
}

// readyz answers 200 while anqi-edge accepts traffic and 503 once it is
// draining. Neither Redis nor AnqiCMS being down makes it unready: it still
// serves from L1 and stale entries then, and pulling every replica out of
// a load balancer because AnqiCMS hiccups would turn a partial outage into a
// full one. Their state is reported for operators and dashboards.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
	defer cancel()
	var rd readiness
	rd.Status = "ready"
	rd.Upstream.URL = s.cfg.Upstream.URL
	if conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.up.buffered.Addr); err != nil {
		rd.Upstream.Error = err.Error()
	} else {
		rd.Upstream.Reachable = true
		conn.Close()
	}
	if s.redis != nil {
		rd.Redis = s.redis.Status(ctx)
	} else {
		rd.Redis = "disabled"
	}
	rd.L1.Bytes, rd.L1.Entries = s.store.L1.Size()
	code := http.StatusOK
	if s.draining.Load() {
		rd.Status, code = "draining", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(rd)
}

// purge is POST /admin/purge?id=N[&host=H]. Invalidation is per order id
// across sites (DESIGN §4), so host is accepted and logged but drops no less.
func (s *Server) purge(w http.ResponseWriter, r *http.Request) {
	want := s.cfg.Admin.Token
	if want == "" {
		adminError(w, http.StatusForbidden, "purge is disabled: set admin.token")
		return
	}
	// The scheme name is case-insensitive (RFC 9110 §11.1).
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="anqi-edge admin"`)
		adminError(w, http.StatusUnauthorized, "missing or wrong bearer token")
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
	queued, ierr := s.store.Invalidate(ctx, order)
	s.m.Invalidations.WithLabelValues("purge").Inc()
	s.log.Info("order invalidated", "order", order, "site", r.URL.Query().Get("host"), "source", "purge",
		"queued", queued, "err", ierr)
	if queued {
		// L1 is already clean; Redis gets it as soon as it answers.
		w.Header().Set("X-Purge-Queued", "redis unreachable; applied when it answers")
	}
	w.WriteHeader(http.StatusNoContent)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(anqicms.ErrorBody(msg))
}
