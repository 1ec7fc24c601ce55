// Package metrics holds every Prometheus series anqi-edge exports, in one
// registry. Series that the request path touches are resolved once here, so
// a cache hit only does an atomic add; exporters read the same collectors.
package metrics

import (
	"maps"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every series name.
const Namespace = "anqi_edge"

// Routes label requests.
const (
	RouteDetail      = "detail"
	RoutePassThrough = "passthrough"
	RouteWrite       = "write"
	RouteWatch       = "watch"
	RouteEvents      = "events"
	RouteStatic      = "static"
)

// Metrics is the set of collectors. Build one per process with New; tests
// build their own so they never share counters.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // route, code
	DetailResults   *prometheus.CounterVec   // cache: HIT MISS STALE BYPASS ERROR
	TierResults     *prometheus.CounterVec   // tier (l1, redis), result (hit, stale, miss; redis also skipped, error)
	UpstreamCalls   *prometheus.CounterVec   // route, outcome (ok, error, timeout)
	UpstreamLatency *prometheus.HistogramVec // route
	Collapsed       prometheus.Counter       // requests that joined another request's flight
	Fills           *prometheus.CounterVec   // tier, result (stored, dropped_generation; redis: cache.FillResult labels)
	Invalidations   *prometheus.CounterVec   // source (write, purge, pubsub, cli)
	HookErrors      *prometheus.CounterVec   // reason (parse, no_id)
	RedisErrors     *prometheus.CounterVec   // op
	RedisBreaker    prometheus.Gauge         // 0 closed, 1 open, 2 half-open
	RedisPending    prometheus.Gauge         // invalidations queued while Redis is unreachable
	RedisEpoch      prometheus.Gauge         // global key epoch in use
	PubSubUp        prometheus.Gauge         // 1 while the invalidation subscription is live
	L1Clears        prometheus.Counter       // whole-L1 clears (resubscribe, epoch moved)
	Panics          prometheus.Counter
	Watchers        *prometheus.GaugeVec   // kind (longpoll, sse)
	WatchWakeups    prometheus.Counter     // watchers woken by an invalidation
	WatchEvents     prometheus.Counter     // SSE events and long-poll answers sent after a change
	WatchRejected   *prometheus.CounterVec // reason (global, identity)

	// InvalidationConfirms: writes through the proxy that waited for the
	// other replicas to confirm their invalidation, by result (confirmed,
	// timeout, skipped). InvalidationAcks: acks this replica owed other
	// writers, by result (sent, dropped, error).
	InvalidationConfirms *prometheus.CounterVec
	InvalidationAcks     *prometheus.CounterVec

	// Hot-path series, resolved once.
	DetailHit, DetailMiss, DetailStale, DetailBypass prometheus.Counter
	L1Hit, L1Stale, L1Miss                           prometheus.Counter
	// Redis lookups: skipped is Redis not asked (cache.ErrUnavailable),
	// error a failed call; neither is a miss.
	RedisHit, RedisStale, RedisMiss, RedisSkipped, RedisLookupError prometheus.Counter

	// codes is copied on write: every request reads it, and an RWMutex's
	// read lock is a write to one shared word, which the two cores of a
	// small machine then pass back and forth on every request. New
	// (route, status) pairs are rare after the first seconds.
	codesMu sync.Mutex
	codes   atomic.Pointer[map[routeCode]prometheus.Counter]
}

type routeCode struct {
	route string
	code  int
}

// New registers every collector in a fresh registry. l1 reports the
// in-process cache's size at scrape time; it may be nil.
func New(l1 func() (bytes, entries int64)) *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	m.codes.Store(&map[routeCode]prometheus.Counter{})

	m.Requests = counterVec("requests_total", "Requests answered, by route and HTTP status.", "route", "code")
	m.DetailResults = counterVec("detail_results_total", "Order detail answers by X-Cache result.", "cache")
	m.TierResults = counterVec("cache_lookups_total", "Cache lookups by tier and result; a Redis lookup skipped by the breaker is skipped, not miss.", "tier", "result")
	m.UpstreamCalls = counterVec("upstream_requests_total", "Calls to AnqiCMS by route and outcome.", "route", "outcome")
	m.UpstreamLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "upstream_duration_seconds",
		Help:    "Latency of calls to AnqiCMS.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route"})
	m.Collapsed = counter("singleflight_collapsed_total", "Detail misses that waited for another request's upstream call instead of making their own.")
	m.Fills = counterVec("cache_fills_total", "Cache writes by tier and result: stored, or why not (dropped_generation: an invalidation overtook the fill; redis also dropped_epoch, dropped_reset, dropped_cap, skipped_breaker, skipped_nogen, error).", "tier", "result")
	m.Invalidations = counterVec("invalidations_total", "Order invalidations by source.", "source")
	m.InvalidationConfirms = counterVec("invalidation_confirm_total", "Invalidations of writes through the proxy by how waiting for the other replicas' acks ended: confirmed, timeout (cache.invalidate_confirm_timeout passed), skipped (nothing to wait for).", "result")
	m.InvalidationAcks = counterVec("invalidation_acks_total", "Acks of other replicas' confirmed invalidations by result: sent, dropped (queue full or Redis skipped), error.", "result")
	m.HookErrors = counterVec("write_hook_errors_total", "Writes whose order id could not be read; they were refused before reaching AnqiCMS.", "reason")
	m.RedisErrors = counterVec("redis_errors_total", "Failed Redis calls by operation.", "op")
	m.RedisBreaker = gauge("redis_breaker_state", "Redis circuit breaker: 0 closed, 1 open (Redis skipped), 2 half-open (probing).")
	m.RedisPending = gauge("redis_pending_invalidations", "Invalidations queued until Redis answers again.")
	m.RedisEpoch = gauge("redis_key_epoch", "Global cache epoch in use (moved up when the invalidation queue overflows or Redis lost its data).")
	m.PubSubUp = gauge("pubsub_up", "1 while the invalidation subscription is live.")
	m.L1Clears = counter("l1_clears_total", "Times the whole in-process cache was dropped (resubscribe, epoch moved).")
	m.Panics = counter("panics_total", "Handler panics answered with HTTP 500.")
	m.Watchers = gaugeVec("watchers", "Clients currently watching an order, by kind.", "kind")
	m.WatchWakeups = counter("watch_wakeups_total", "Watchers woken by an invalidation.")
	m.WatchEvents = counter("watch_events_total", "Changed-order answers sent to watchers (SSE events and long-poll answers).")
	m.WatchRejected = counterVec("watch_rejected_total", "Watch requests refused because a limit was reached.", "reason")

	for _, c := range []prometheus.Collector{m.Requests, m.DetailResults, m.TierResults, m.UpstreamCalls,
		m.UpstreamLatency, m.Collapsed, m.Fills, m.Invalidations, m.HookErrors, m.RedisErrors,
		m.RedisBreaker, m.RedisPending, m.RedisEpoch, m.PubSubUp, m.L1Clears, m.Panics,
		m.Watchers, m.WatchWakeups, m.WatchEvents, m.WatchRejected,
		m.InvalidationConfirms, m.InvalidationAcks} {
		f(c)
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "l1_bytes",
		Help: "Bytes held by the in-process cache."}, func() float64 {
		if l1 == nil {
			return 0
		}
		b, _ := l1()
		return float64(b)
	}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "l1_entries",
		Help: "Entries held by the in-process cache."}, func() float64 {
		if l1 == nil {
			return 0
		}
		_, n := l1()
		return float64(n)
	}))
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.DetailHit = m.DetailResults.WithLabelValues("HIT")
	m.DetailMiss = m.DetailResults.WithLabelValues("MISS")
	m.DetailStale = m.DetailResults.WithLabelValues("STALE")
	m.DetailBypass = m.DetailResults.WithLabelValues("BYPASS")
	m.L1Hit = m.TierResults.WithLabelValues("l1", "hit")
	m.L1Stale = m.TierResults.WithLabelValues("l1", "stale")
	m.L1Miss = m.TierResults.WithLabelValues("l1", "miss")
	m.RedisHit = m.TierResults.WithLabelValues("redis", "hit")
	m.RedisStale = m.TierResults.WithLabelValues("redis", "stale")
	m.RedisMiss = m.TierResults.WithLabelValues("redis", "miss")
	m.RedisSkipped = m.TierResults.WithLabelValues("redis", "skipped")
	m.RedisLookupError = m.TierResults.WithLabelValues("redis", "error")
	for _, s := range []string{"HIT", "MISS", "STALE", "BYPASS", "ERROR"} {
		m.DetailResults.WithLabelValues(s)
	}
	for _, k := range []string{"longpoll", "sse"} {
		m.Watchers.WithLabelValues(k)
	}
	for _, r := range []string{"confirmed", "timeout", "skipped"} {
		m.InvalidationConfirms.WithLabelValues(r)
	}
	for _, r := range []string{"sent", "dropped", "error"} {
		m.InvalidationAcks.WithLabelValues(r)
	}
	m.Collapsed.Add(0)
	return m
}

// The constructors of New, so each series is one line: name, help, labels.
func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
}

// Request counts one answered request. The counter for a (route, code) pair
// is created once and then found in the copy-on-write map without a lock.
func (m *Metrics) Request(route string, code int) {
	k := routeCode{route, code}
	c, ok := (*m.codes.Load())[k]
	if !ok {
		c = m.Requests.WithLabelValues(route, strconv.Itoa(code))
		m.codesMu.Lock()
		old := *m.codes.Load()
		next := make(map[routeCode]prometheus.Counter, len(old)+1)
		maps.Copy(next, old)
		next[k] = c
		m.codes.Store(&next)
		m.codesMu.Unlock()
	}
	c.Inc()
}
