package cdc

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the anqi_edge_cdc_* series. Build them with NewMetrics on the
// process's registry (metrics.Metrics.Registry).
type Metrics struct {
	Events         prometheus.Counter     // binlog events read
	Invalidations  *prometheus.CounterVec // table: orders invalidated by a change in that table (settle repeats not counted)
	SettleRepeats  prometheus.Counter     // second invalidations fired by the settle guard
	Lag            prometheus.Gauge       // seconds the last event trailed its commit on the primary
	Reconnects     prometheus.Counter     // connections to the server that ended and were retried
	PositionResets prometheus.Counter     // stored position gone: every cached order dropped
	Leader         prometheus.Gauge       // 1 while this replica holds the lease and reads
	State          *prometheus.GaugeVec   // state: 1 for the current state, 0 for the others
	Errors         *prometheus.CounterVec // op: invalidate, reset, position
}

// NewMetrics creates the series and registers them on reg (nil: not
// registered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "anqi_edge", "cdc"
	m := &Metrics{
		Events: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_total",
			Help: "Binary log events read from the database."}),
		Invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "invalidations_total",
			Help: "Orders invalidated because a row of the table changed (once per order per transaction)."}, []string{"table"}),
		SettleRepeats: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "settle_invalidations_total",
			Help: "Second invalidations sent cdc.settle after a change."}),
		Lag: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "lag_seconds",
			Help: "How far behind the primary the reader is: now minus the last event's commit time; 0 when caught up."}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reconnects_total",
			Help: "Binary log connections that ended and were retried."}),
		PositionResets: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "position_resets_total",
			Help: "Times the stored position was gone (purged, other server) and every cached order was dropped."}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "leader",
			Help: "1 while this replica reads the binary log (holds the lease)."}),
		State: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "state",
			Help: "Reader state: 1 for the current one."}, []string{"state"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Failed operations by kind."}, []string{"op"}),
	}
	// Every series shows in a scrape from the start, at 0.
	for _, op := range []string{"invalidate", "reset", "position"} {
		m.Errors.WithLabelValues(op)
	}
	m.setState(StateStarting)
	if reg != nil {
		reg.MustRegister(m.Events, m.Invalidations, m.SettleRepeats, m.Lag, m.Reconnects,
			m.PositionResets, m.Leader, m.State, m.Errors)
	}
	return m
}

// Off marks the series of a replica without [cdc]: they are exported all
// the same (at 0, state "off"), so dashboards and alerts see one shape.
func (m *Metrics) Off() { m.setState(StateOff) }

func (m *Metrics) setState(s State) {
	if m == nil {
		return
	}
	for _, st := range allStates {
		v := 0.0
		if st == s {
			v = 1
		}
		m.State.WithLabelValues(string(st)).Set(v)
	}
}
