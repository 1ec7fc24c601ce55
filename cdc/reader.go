// Package cdc invalidates cached orders from the database's own change
// stream: it reads the MySQL/MariaDB binary log as a replica does, turns
// each row change of a watched table into the order id it belongs to, and
// calls Invalidate once per order per transaction, at its commit, plus once
// more cdc.settle later (see settle.go). Where it stopped is kept in a
// PositionStore, so a restart or a lost connection resumes there; when that
// position is gone, ResetAll drops every cached order before reading on.
// With a Lease, exactly one replica reads at a time.
//
// Delivery is at least once: the position is saved after a transaction's
// invalidations, so a crash between the two replays that transaction (one
// extra refill), never skips it.
package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// State is what the reader is doing, for /readyz and the state metric.
type State string

const (
	StateStarting   State = "starting"   // Run not yet connected
	StateStandby    State = "standby"    // another replica holds the lease
	StateConnecting State = "connecting" // opening a session
	StateStreaming  State = "streaming"  // reading the binary log
	StateRetrying   State = "retrying"   // waiting to reconnect after an error
	StateStopped    State = "stopped"    // Run returned
	StateOff        State = "off"        // no [cdc] configured
)

var allStates = []State{StateStarting, StateStandby, StateConnecting, StateStreaming, StateRetrying, StateStopped, StateOff}

// Status is a snapshot for /readyz.
type Status struct {
	State          State     `json:"state"`
	Leader         bool      `json:"leader"`
	Position       string    `json:"position,omitempty"`
	LagSeconds     float64   `json:"lag_seconds"`
	LastEvent      time.Time `json:"last_event,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
	Reconnects     int64     `json:"reconnects"`
	PositionResets int64     `json:"position_resets"`
	Problems       []string  `json:"problems,omitempty"` // missing server settings or grants, as of the latest connection
}

// Reader reads the binary log and invalidates changed orders. Build it with
// New and call Run once.
type Reader struct {
	o Options
	// rules maps lower-case "db.table" or "table" to its rule; a reload
	// swaps the whole map (SetTables).
	rules  atomic.Pointer[map[string]Table]
	settle *settler
	cols   *columnCache
	// Only the Run goroutine uses these two.
	adm      *client.Conn // the session's SQL connection (server settings, columns)
	checked  bool         // the start line about server settings was written
	unsaved  *Position    // a later position than the stored one, with nothing to invalidate before it
	lastSave time.Time

	mu         sync.Mutex // guards the fields below
	status     Status
	forceReset string          // why the stored position is gone, from a stream error or a failed reset
	warned     map[string]bool // warnOnce keys already logged
}

// New validates o and returns a Reader.
func New(o Options) (*Reader, error) {
	o.setDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Positions == nil {
		o.Positions = &MemoryPositions{}
	}
	r := &Reader{o: o, warned: map[string]bool{}}
	r.SetTables(o.Tables)
	r.settle = newSettler(o.Settle, r.settleFire)
	r.cols = newColumnCache(r.sqlConn)
	r.status.State = StateStarting
	o.Metrics.setState(StateStarting)
	return r, nil
}

// SetTables replaces the watched tables ([[cdc.table]], on reload); row
// events read from then on follow the new rules.
func (r *Reader) SetTables(tables []Table) {
	rules := make(map[string]Table, len(tables))
	for _, t := range tables {
		rules[strings.ToLower(t.Name)] = t
		if r.o.Metrics != nil {
			r.o.Metrics.Invalidations.WithLabelValues(t.Name) // shown at 0 from the start
		}
	}
	r.rules.Store(&rules)
}

// Status returns a snapshot of the reader's state.
func (r *Reader) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.Problems = append([]string(nil), s.Problems...)
	return s
}

func (r *Reader) setState(s State) {
	r.mu.Lock()
	r.status.State = s
	r.mu.Unlock()
	r.o.Metrics.setState(s)
}

func (r *Reader) setLeader(b bool) {
	r.mu.Lock()
	r.status.Leader = b
	r.mu.Unlock()
	if m := r.o.Metrics; m != nil {
		m.Leader.Set(map[bool]float64{true: 1}[b])
	}
}

// Run reads until ctx ends, reconnecting with backoff; it returns nil then.
func (r *Reader) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.settle.run(ctx)
	}()
	defer func() {
		wg.Wait()
		r.setLeader(false)
		r.setState(StateStopped)
	}()

	backoff := minBackoff
	for ctx.Err() == nil {
		held, release := ctx, func() {}
		if r.o.Lease != nil {
			r.setState(StateStandby)
			var err error
			held, release, err = r.o.Lease.Acquire(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.o.Log.Warn("cdc: acquiring the reader lease", "err", err)
				sleep(ctx, backoff)
				continue
			}
			r.o.Log.Info("cdc: this replica now reads the binary log (lease acquired)")
		}
		r.setLeader(true)
		began := time.Now()
		err := r.session(held)
		release()
		r.setLeader(false)
		if ctx.Err() != nil {
			return nil
		}
		if held.Err() != nil {
			r.o.Log.Warn("cdc: stopped reading: lease lost", "cause", context.Cause(held))
			continue
		}
		if time.Since(began) > time.Minute {
			backoff = minBackoff // it had been working: retry fast
		}
		r.mu.Lock()
		r.status.Reconnects++
		r.status.LastError = err.Error()
		r.mu.Unlock()
		if m := r.o.Metrics; m != nil {
			m.Reconnects.Inc()
		}
		r.setState(StateRetrying)
		r.o.Log.Warn("cdc: binary log connection ended; reconnecting", "err", err, "retry_in", backoff)
		sleep(ctx, backoff)
		backoff = min(2*backoff, maxBackoff)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (r *Reader) sqlConn() (*client.Conn, error) {
	if r.adm == nil {
		return nil, errors.New("cdc: no SQL connection")
	}
	return r.adm, nil
}

// session connects, picks the start position and streams until an error.
func (r *Reader) session(ctx context.Context) error {
	r.setState(StateConnecting)
	adm, err := connect(ctx, &r.o)
	if err != nil {
		return err
	}
	r.adm = adm
	defer func() {
		adm.Close()
		r.adm = nil
	}()
	r.cols.reset()
	info, err := readServerInfo(adm)
	if err != nil {
		return err
	}
	// Status shows the settings as of the latest connection; the log says
	// it once, at the first one, so a misconfigured server does not fill
	// the log with one line per retry.
	problems := info.settingsProblems(info.rowMetadata != "FULL")
	r.mu.Lock()
	r.status.Problems = problems
	r.mu.Unlock()
	if !r.checked {
		r.checked = true
		if len(problems) > 0 {
			r.o.Log.Warn("cdc: database at cdc.addr is not ready for change capture: "+strings.Join(problems, "; "), "addr", r.o.Addr)
		}
	}
	if !info.logBin {
		return errors.New("cdc: log_bin is OFF on the server at cdc.addr")
	}
	if info.format != "ROW" {
		// Statement events name no rows; reading them would silently miss changes.
		return fmt.Errorf("cdc: binlog_format is %s on the server at cdc.addr, need ROW", info.format)
	}
	start, err := r.startPosition(ctx, info)
	if err != nil {
		return err
	}

	cfg := replication.BinlogSyncerConfig{
		ServerID:         r.o.ServerID,
		Flavor:           info.flavor,
		User:             r.o.User,
		Password:         r.o.Password,
		HeartbeatPeriod:  r.o.Heartbeat,
		ReadTimeout:      r.o.ReadTimeout,
		DisableRetrySync: true, // we reconnect ourselves, from our own committed position
		Logger:           slog.New(debugOnly{r.o.Log.Handler()}),
	}
	if host, port, err := net.SplitHostPort(r.o.Addr); err == nil && !strings.Contains(r.o.Addr, "/") {
		p, _ := strconv.ParseUint(port, 10, 16)
		cfg.Host, cfg.Port = host, uint16(p)
	} else {
		cfg.Host = r.o.Addr // unix socket path
	}
	syncer := replication.NewBinlogSyncer(cfg)
	defer syncer.Close()
	stream, err := syncer.StartSync(mysql.Position{Name: start.File, Pos: start.Pos})
	if err != nil {
		return fmt.Errorf("cdc: starting binlog dump at %s: %w", start, err)
	}
	r.setState(StateStreaming)
	r.o.Log.Info("cdc: reading the binary log", "addr", r.o.Addr, "position", start.String(), "server_id", r.o.ServerID)
	return r.stream(ctx, stream, start)
}

// startPosition decides where to read from: the stored position if the
// server still has it; else the server's current position, after dropping
// every cached order.
func (r *Reader) startPosition(ctx context.Context, info *serverInfo) (Position, error) {
	if info.currentErr != nil {
		return Position{}, info.currentErr
	}
	// info.current was read before anything below. That order matters for a
	// reset: every change after it is streamed (and invalidated), every change
	// before it is covered by ResetAll, so nothing falls in between.
	cur := info.current
	p, ok, err := r.o.Positions.Load(ctx)
	if err != nil {
		return Position{}, err
	}
	if !ok {
		r.o.Log.Info("cdc: no stored binlog position; starting at the server's current position", "position", cur.String())
		return cur, r.savePosition(ctx, cur)
	}
	r.mu.Lock()
	reason := r.forceReset
	r.forceReset = ""
	r.mu.Unlock()
	if reason == "" {
		reason = info.positionGone(p)
	}
	if reason == "" {
		return p, nil
	}
	if err := r.o.ResetAll(ctx); err != nil {
		if m := r.o.Metrics; m != nil {
			m.Errors.WithLabelValues("reset").Inc()
		}
		r.mu.Lock()
		r.forceReset = reason // still gone next time
		r.mu.Unlock()
		return Position{}, fmt.Errorf("cdc: stored position %s is gone (%s) and dropping every cached order failed: %w", p, reason, err)
	}
	r.mu.Lock()
	r.status.PositionResets++
	r.mu.Unlock()
	if m := r.o.Metrics; m != nil {
		m.PositionResets.Inc()
	}
	r.o.Log.Warn("cdc: stored binlog position is gone; dropped every cached order (epoch bump) and reading on from the current position",
		"stored", p.String(), "reason", reason, "position", cur.String())
	return cur, r.savePosition(ctx, cur)
}

func (r *Reader) savePosition(ctx context.Context, p Position) error {
	r.mu.Lock()
	r.status.Position = p.String()
	r.mu.Unlock()
	if err := r.o.Positions.Save(ctx, p); err != nil {
		if m := r.o.Metrics; m != nil {
			m.Errors.WithLabelValues("position").Inc()
		}
		return err
	}
	return nil
}

// txn collects the orders one transaction touched, in first-seen order.
type txn struct {
	orders []int64
	tables []string // table of each order, for the metric
	seen   map[int64]bool
}

func (t *txn) add(order int64, table string) {
	if t.seen == nil {
		t.seen = map[int64]bool{}
	}
	if !t.seen[order] {
		t.seen[order] = true
		t.orders = append(t.orders, order)
		t.tables = append(t.tables, table)
	}
}

func (t *txn) reset() {
	t.orders, t.tables = t.orders[:0], t.tables[:0]
	clear(t.seen)
}

// stream handles events until an error. Positions are only saved at
// transaction boundaries, after that transaction's invalidations.
func (r *Reader) stream(ctx context.Context, s *replication.BinlogStreamer, start Position) error {
	pos := start
	gtids := parseGTIDState(start.GTID)
	var next *gtid // GTID of the transaction being read (MariaDB)
	var nextDomain uint32
	var t txn
	defer func() {
		if r.unsaved != nil {
			r.save(ctx, *r.unsaved)
		}
	}()
	// endTxn closes the transaction whose end event ends at logPos: its
	// GTID joins the state, then its orders are invalidated and the
	// position saved, in that order (commit).
	endTxn := func(logPos uint32) error {
		pos.Pos = logPos
		if next != nil {
			gtids[nextDomain], next = *next, nil
			pos.GTID = gtids.String()
		}
		return r.commit(ctx, &t, pos)
	}
	for {
		ev, err := s.GetEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var me *mysql.MyError
			if errors.As(err, &me) && me.Code == mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG {
				r.mu.Lock()
				r.forceReset = "the server refused it: " + me.Message
				r.mu.Unlock()
			}
			return fmt.Errorf("cdc: reading the binary log after %s: %w", pos, err)
		}
		if m := r.o.Metrics; m != nil {
			m.Events.Inc()
		}
		h := ev.Header
		if h.EventType == replication.HEARTBEAT_EVENT || h.EventType == replication.HEARTBEAT_LOG_EVENT_V2 {
			// The server only sends these when it has nothing else: caught up.
			r.setLag(0, time.Time{})
			continue
		}
		if h.Timestamp != 0 {
			r.setLag(time.Since(time.Unix(int64(h.Timestamp), 0)).Seconds(), time.Now())
		}
		switch e := ev.Event.(type) {
		case *replication.RotateEvent:
			pos.File, pos.Pos = string(e.NextLogName), uint32(e.Position)
			if h.Timestamp != 0 && len(t.orders) == 0 {
				// A real rotation between transactions: remember the new
				// file so a purge of the old one does not look like a loss.
				r.save(ctx, pos)
			}
		case *replication.MariadbGTIDEvent:
			next, nextDomain = &gtid{h.ServerID, e.GTID.SequenceNumber}, e.GTID.DomainID
		case *replication.RowsEvent:
			if err := r.collect(e, &t); err != nil {
				return err // the transaction is read again after reconnecting
			}
		case *replication.XIDEvent:
			if err := endTxn(h.LogPos); err != nil {
				return err
			}
		case *replication.QueryEvent:
			q := strings.ToUpper(strings.TrimSpace(string(e.Query)))
			switch {
			case q == "BEGIN" || strings.HasPrefix(q, "XA START") || strings.HasPrefix(q, "SAVEPOINT"):
				continue
			case q == "COMMIT" || q == "ROLLBACK" || strings.HasPrefix(q, "XA "):
				// COMMIT ends transactions on non-transactional tables; a
				// ROLLBACK that is logged left non-transactional changes behind.
			default:
				// DDL (its own transaction): tables may have changed shape.
				r.cols.reset()
			}
			if err := endTxn(h.LogPos); err != nil {
				return err
			}
		}
	}
}

func (r *Reader) setLag(sec float64, at time.Time) {
	sec = max(sec, 0)
	r.mu.Lock()
	r.status.LagSeconds = sec
	if !at.IsZero() {
		r.status.LastEvent = at
	}
	r.mu.Unlock()
	if m := r.o.Metrics; m != nil {
		m.Lag.Set(sec)
	}
}

// commit invalidates every order of the transaction once, schedules the
// settle repeat, then saves pos. An invalidation error ends the session, so
// the transaction is read again from the last saved position.
func (r *Reader) commit(ctx context.Context, t *txn, pos Position) error {
	for i, o := range t.orders {
		if err := r.o.Invalidate(ctx, o); err != nil {
			if m := r.o.Metrics; m != nil {
				m.Errors.WithLabelValues("invalidate").Inc()
			}
			return fmt.Errorf("cdc: invalidating order %d (table %s): %w", o, t.tables[i], err)
		}
		if m := r.o.Metrics; m != nil {
			m.Invalidations.WithLabelValues(t.tables[i]).Inc()
		}
	}
	r.settle.add(t.orders)
	if len(t.orders) > 0 {
		r.o.Log.Debug("cdc: invalidated", "orders", t.orders, "position", pos.String())
	}
	touched := len(t.orders) > 0
	t.reset()
	if !touched && time.Since(r.lastSave) < idleSaveEvery {
		// Nothing watched changed: saving can wait (the database may be busy
		// with other tables). Replaying such transactions invalidates nothing.
		r.unsaved = &pos
		r.mu.Lock()
		r.status.Position = pos.String()
		r.mu.Unlock()
		return nil
	}
	r.save(ctx, pos)
	return nil
}

// idleSaveEvery bounds how often a position is saved while the
// transactions read touch no watched table.
const idleSaveEvery = time.Second

// save stores pos, even when ctx was just cancelled (a clean stop): the
// invalidations before pos are done, so the next reader must not redo them.
func (r *Reader) save(ctx context.Context, pos Position) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	r.unsaved = nil
	r.lastSave = time.Now()
	if err := r.savePosition(sctx, pos); err != nil {
		// Not fatal: the next save carries on; a restart before then replays
		// a little (at least once, never lost).
		r.warnOnce("save", "cdc: saving the binlog position failed; a restart may replay or reset", "err", err)
	}
}

func (r *Reader) settleFire(ctx context.Context, order int64) {
	if err := r.o.Invalidate(ctx, order); err != nil {
		if m := r.o.Metrics; m != nil {
			m.Errors.WithLabelValues("invalidate").Inc()
		}
		r.o.Log.Warn("cdc: settle invalidation failed", "order", order, "err", err)
		return
	}
	if m := r.o.Metrics; m != nil {
		m.SettleRepeats.Inc()
	}
}

// collect adds the orders of a watched table's rows to t. Updates carry the
// before and after image as consecutive rows: both are used, so an order id
// that changed invalidates the old and the new order.
//
// An error means the column names could not be read for a reason other
// than the server refusing (e.g. the idle SQL connection was closed): the
// session ends and the transaction is read again. A refusal (no SELECT
// grant, table gone) is logged once and the table's changes are skipped,
// since retrying could not help and would stall every other table.
func (r *Reader) collect(e *replication.RowsEvent, t *txn) error {
	tm := e.Table
	if tm == nil {
		return nil
	}
	db, table := string(tm.Schema), string(tm.Table)
	rules := *r.rules.Load()
	rule, ok := rules[strings.ToLower(db+"."+table)]
	if !ok {
		if rule, ok = rules[strings.ToLower(table)]; !ok {
			return nil
		}
	}
	idx := -1
	if len(tm.ColumnName) > 0 {
		idx = indexOf(tm.ColumnNameString(), rule.OrderColumn)
	} else {
		names, err := r.cols.columns(db, table)
		if err == nil && len(names) != int(tm.ColumnCount) {
			// Changed since we read it (DDL we did not see): read again.
			delete(r.cols.names, db+"."+table)
			names, err = r.cols.columns(db, table)
		}
		var refused *mysql.MyError
		if err != nil && !errors.As(err, &refused) {
			return err
		}
		if err == nil && len(names) == 0 {
			// information_schema hides tables the account may not read.
			err = errors.New("no columns visible to cdc.user")
		}
		if err != nil {
			r.warnOnce("cols:"+db+"."+table, "cdc: cannot read column names; changes to this table are missed until fixed",
				"table", db+"."+table, "err", err, "fix", "set binlog_row_metadata=FULL or GRANT SELECT on the table to cdc.user")
			return nil
		}
		idx = indexOf(names, rule.OrderColumn)
	}
	if idx < 0 {
		r.warnOnce("col:"+db+"."+table, "cdc: watched table has no such order column; its changes are missed",
			"table", db+"."+table, "order_column", rule.OrderColumn, "key", "cdc.table order_column")
		return nil
	}
	for _, row := range e.Rows {
		if idx >= len(row) {
			continue
		}
		if o, ok := orderID(row[idx]); ok {
			t.add(o, rule.Name)
		} else if row[idx] == nil && len(e.SkippedColumns) > 0 {
			r.warnOnce("img:"+db+"."+table, "cdc: row image lacks the order column (binlog_row_image is not FULL); some changes are missed",
				"table", db+"."+table)
		}
	}
	return nil
}

// orderID converts a decoded column value to a positive order id.
func orderID(v any) (int64, bool) {
	var n int64
	switch v := v.(type) {
	case int8:
		n = int64(v)
	case int16:
		n = int64(v)
	case int32:
		n = int64(v)
	case int64:
		n = v
	case int:
		n = int64(v)
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	case uint64:
		if v > 1<<63-1 {
			return 0, false
		}
		n = int64(v)
	case string:
		var err error
		if n, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
			return 0, false
		}
	case []byte:
		var err error
		if n, err = strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64); err != nil {
			return 0, false
		}
	default:
		return 0, false
	}
	return n, n > 0
}

func (r *Reader) warnOnce(key, msg string, args ...any) {
	r.mu.Lock()
	seen := r.warned[key]
	r.warned[key] = true
	r.mu.Unlock()
	if !seen {
		r.o.Log.Warn(msg, args...)
	}
}

// debugOnly turns go-mysql's own log lines (every connect, rotation and
// read error, which the reader reports itself) into debug lines.
type debugOnly struct{ slog.Handler }

func (d debugOnly) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.Handler.Enabled(ctx, slog.LevelDebug)
}

func (d debugOnly) Handle(ctx context.Context, rec slog.Record) error {
	rec.Level = slog.LevelDebug
	return d.Handler.Handle(ctx, rec)
}

func (d debugOnly) WithAttrs(a []slog.Attr) slog.Handler { return debugOnly{d.Handler.WithAttrs(a)} }
func (d debugOnly) WithGroup(n string) slog.Handler      { return debugOnly{d.Handler.WithGroup(n)} }
