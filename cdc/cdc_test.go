package cdc_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"anqi-edge/cdc"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/mariadbtest"
	"anqi-edge/internal/redistest"
)

const schema = `CREATE DATABASE anqicms;
CREATE TABLE anqicms.communication_orders (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT NOT NULL DEFAULT 0,
  title VARCHAR(250) NOT NULL DEFAULT '',
  status INT NOT NULL DEFAULT 0,
  quote_price VARCHAR(32) NOT NULL DEFAULT ''
) ENGINE=InnoDB;
CREATE TABLE anqicms.communication_messages (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  comm_order_id BIGINT UNSIGNED NOT NULL,
  sender_type VARCHAR(16) NOT NULL DEFAULT 'admin',
  content TEXT,
  KEY (comm_order_id)
) ENGINE=InnoDB;
CREATE TABLE anqicms.users (id BIGINT PRIMARY KEY, name VARCHAR(64)) ENGINE=InnoDB;`

var tables = []cdc.Table{
	{Name: "communication_orders", OrderColumn: "id"},
	{Name: "anqicms.communication_messages", OrderColumn: "comm_order_id"},
}

// startDB starts MariaDB with the AnqiCMS-like schema and a replication
// account cdc/pw.
func startDB(t *testing.T, cfg ...mariadbtest.Config) *mariadbtest.Server {
	t.Helper()
	return startDBForBench(t, cfg...)
}

func startDBForBench(t testing.TB, cfg ...mariadbtest.Config) *mariadbtest.Server {
	t.Helper()
	s := mariadbtest.Start(t, cfg...)
	s.Exec(t, schema)
	s.ReplicationUser(t, "cdc", "pw", "anqicms")
	return s
}

// recorder is an Invalidate/ResetAll pair that remembers every call.
type recorder struct {
	mu     sync.Mutex
	calls  []int64
	at     map[int64]time.Time // first call per order
	resets int
	fail   bool // answer errors (a cache layer that cannot invalidate)
}

func newRecorder() *recorder { return &recorder{at: map[int64]time.Time{}} }

func (r *recorder) invalidate(_ context.Context, order int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return fmt.Errorf("recorder: failing on purpose")
	}
	r.calls = append(r.calls, order)
	if _, ok := r.at[order]; !ok {
		r.at[order] = time.Now()
	}
	return nil
}

func (r *recorder) resetAll(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets++
	return nil
}

func (r *recorder) count(order int64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, o := range r.calls {
		if o == order {
			n++
		}
	}
	return n
}

func (r *recorder) resetCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resets
}

func (r *recorder) snapshot() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.calls...)
}

// logBuf is a goroutine-safe log sink.
type logBuf struct{ edgetest.SyncBuffer }

// lines returns the log lines containing sub.
func (l *logBuf) lines(sub string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return out
}

func options(t *testing.T, s *mariadbtest.Server, rec *recorder, log *logBuf) cdc.Options {
	currentLog.Store(t.Name(), log)
	return cdc.Options{
		Addr: s.Addr(), User: "cdc", Password: "pw",
		Tables:      tables,
		Settle:      -1,
		Heartbeat:   300 * time.Millisecond,
		ReadTimeout: 2 * time.Second,
		Invalidate:  rec.invalidate,
		ResetAll:    rec.resetAll,
		Log:         newTextLogger(log),
	}
}

func newTextLogger(l *logBuf) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// running is a Reader whose Run goroutine the test owns.
type running struct {
	*cdc.Reader
	cancel context.CancelFunc
	done   chan struct{}
}

// stop ends Run and waits for it (idempotent).
func (r *running) stop() {
	r.cancel()
	<-r.done
}

func start(t *testing.T, o cdc.Options) *running {
	t.Helper()
	rd, err := cdc.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Reader: rd, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := rd.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

var currentLog sync.Map // test name -> *logBuf, printed when eventually times out

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			if l, ok := currentLog.Load(t.Name()); ok {
				t.Logf("reader log:\n%s", l.(*logBuf))
			}
			t.Fatalf("timed out after 20s waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitStreaming(t *testing.T, r *running) {
	t.Helper()
	eventually(t, "reader streaming", func() bool { return r.Status().State == cdc.StateStreaming })
}

func TestCDC_InsertUpdateAndDeleteEachInvalidateTheirOrder(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Metrics = cdc.NewMetrics(nil)
	r := start(t, o)
	waitStreaming(t, r)

	s.Exec(t, "INSERT INTO anqicms.communication_orders (id, title) VALUES (11, 'new')")
	eventually(t, "insert of order 11", func() bool { return rec.count(11) == 1 })

	s.Exec(t, "INSERT INTO anqicms.communication_messages (comm_order_id, content) VALUES (12, 'hi')")
	eventually(t, "insert of a message of order 12", func() bool { return rec.count(12) == 1 })

	s.Exec(t, "UPDATE anqicms.communication_orders SET status = 2, quote_price = '9.90' WHERE id = 11")
	eventually(t, "update of order 11", func() bool { return rec.count(11) == 2 })

	// An update that moves a message to another order touches both.
	s.Exec(t, "UPDATE anqicms.communication_messages SET comm_order_id = 13 WHERE comm_order_id = 12")
	eventually(t, "update moving a message from 12 to 13", func() bool { return rec.count(12) == 2 && rec.count(13) == 1 })

	s.Exec(t, "DELETE FROM anqicms.communication_messages WHERE comm_order_id = 13")
	eventually(t, "delete of order 13's message", func() bool { return rec.count(13) == 2 })

	// Unwatched tables change nothing.
	s.Exec(t, "INSERT INTO anqicms.users VALUES (11, 'x')", "INSERT INTO anqicms.communication_orders (id) VALUES (99)")
	eventually(t, "marker order 99", func() bool { return rec.count(99) == 1 })
	if got := rec.snapshot(); len(got) != 7 {
		t.Fatalf("invalidations %v, want 7 (one per changed order per statement)", got)
	}
	if n := testutil.ToFloat64(o.Metrics.Invalidations.WithLabelValues("anqicms.communication_messages")); n != 4 {
		t.Errorf("invalidations_total{table=messages} = %v, want 4", n)
	}
	if n := testutil.ToFloat64(o.Metrics.State.WithLabelValues("streaming")); n != 1 {
		t.Errorf("state{streaming} = %v, want 1", n)
	}
	st := r.Status()
	if !st.Leader || st.Position == "" || len(st.Problems) != 0 {
		t.Errorf("status %+v: want leader, a position, no problems", st)
	}
}

func TestCDC_ReadsOverAUnixSocket(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Addr = s.Socket()
	r := start(t, o)
	waitStreaming(t, r)
	writer(t, s, 1, 2, 0, nil)
	eventually(t, "orders 1 and 2 over the socket", allSeen(rec, 1, 2))
}

func TestCDC_StoppedReaderLeavesNoGoroutines(t *testing.T) {
	s := startDB(t)
	s.Root(t).Ping() // the test's own pool exists before the snapshot
	rc := redis.NewClient(&redis.Options{Addr: redistest.Shared(t)})
	t.Cleanup(func() { rc.Close() })
	rc.Ping(context.Background())
	prefix := redistest.Prefix(t)
	before := goleak.IgnoreCurrent()

	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Settle = time.Hour // a pending settle must not keep a goroutine alive
	o.Positions = cdc.RedisPositions(rc, prefix+"pos")
	o.Lease = cdc.RedisLease(rc, prefix+"lease", time.Second)
	r := start(t, o)
	waitStreaming(t, r)
	writer(t, s, 1, 3, 0, nil)
	eventually(t, "orders 1..3", allSeen(rec, 1, 3))
	r.stop()
	if st := r.Status(); st.State != cdc.StateStopped || st.Leader {
		t.Errorf("status after Run returned: %+v", st)
	}
	goleak.VerifyNone(t, before,
		// go-redis's pool and go-sql-driver's connections live with the clients.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreAnyFunction("github.com/go-sql-driver/mysql.(*mysqlConn).startWatcher.func1"),
		goleak.IgnoreAnyFunction("database/sql.(*DB).connectionOpener"),
		redistest.ProcessServerGoroutine)
	if n, _ := rc.Exists(context.Background(), prefix+"lease").Result(); n != 0 {
		t.Errorf("the lease key outlived a clean stop: the next replica would wait for it to expire")
	}
}

func TestCDC_TransactionOfThreeOrdersInvalidatesEachOnceThenOnceMoreAfterSettle(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Settle = 300 * time.Millisecond
	o.Metrics = cdc.NewMetrics(nil)
	r := start(t, o)
	waitStreaming(t, r)

	s.Exec(t, `BEGIN;
INSERT INTO anqicms.communication_orders (id) VALUES (1), (2);
INSERT INTO anqicms.communication_messages (comm_order_id, content) VALUES (1, 'a'), (1, 'b'), (2, 'c'), (3, 'd');
UPDATE anqicms.communication_orders SET status = 1 WHERE id IN (1, 2);
COMMIT`)
	eventually(t, "three orders, each at commit and after settle", func() bool {
		return rec.count(1) == 2 && rec.count(2) == 2 && rec.count(3) == 2
	})
	calls := rec.snapshot()
	if len(calls) != 6 || fmt.Sprint(calls[:3]) != "[1 2 3]" {
		t.Fatalf("calls %v: want [1 2 3] at commit, then each once more", calls)
	}
	if n := testutil.ToFloat64(o.Metrics.SettleRepeats); n != 3 {
		t.Errorf("settle_invalidations_total = %v, want 3", n)
	}
	// Nothing more arrives later.
	time.Sleep(2 * o.Settle)
	if got := rec.snapshot(); len(got) != 6 {
		t.Fatalf("calls %v after settling, want 6", got)
	}
}

// writer inserts one message per order id, in its own transaction, for
// orders from..to, retrying each insert until the database takes it.
func writer(t *testing.T, s *mariadbtest.Server, from, to int64, pause time.Duration, progress chan<- int64) {
	t.Helper()
	db := s.Root(t)
	for id := from; id <= to; id++ {
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, err := db.Exec("INSERT INTO anqicms.communication_messages (comm_order_id, content) VALUES (?, 'x')", id)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("writer: order %d: %v", id, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		if progress != nil {
			select {
			case progress <- id:
			default:
			}
		}
		time.Sleep(pause)
	}
}

func allSeen(rec *recorder, from, to int64) func() bool {
	return func() bool {
		for id := from; id <= to; id++ {
			if rec.count(id) == 0 {
				return false
			}
		}
		return true
	}
}

func TestCDC_ReaderRestartedWhileChangesKeepComingMissesNone(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rc := redis.NewClient(&redis.Options{Addr: redistest.Shared(t)})
	t.Cleanup(func() { rc.Close() })
	key := redistest.Prefix(t) + "cdc:pos"
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Positions = cdc.RedisPositions(rc, key)

	r1 := start(t, o)
	waitStreaming(t, r1)
	progress := make(chan int64, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		writer(t, s, 1, 120, 5*time.Millisecond, progress)
	}()
	// Stop the first reader part way, keep writing, start a second one.
	for id := range progress {
		if id >= 30 {
			break
		}
	}
	r1.stop()
	time.Sleep(300 * time.Millisecond) // changes pile up while nobody reads
	r2 := start(t, o)
	<-done
	eventually(t, "every order 1..120 invalidated across the restart", allSeen(rec, 1, 120))
	if n := rec.resetCount(); n != 0 {
		t.Fatalf("ResetAll called %d times on a clean restart", n)
	}
	for id := int64(1); id <= 120; id++ {
		if n := rec.count(id); n != 1 {
			t.Errorf("order %d invalidated %d times, want 1 (position saved after each commit)", id, n)
		}
	}
	_ = r2
}

func TestCDC_DatabaseRestartedMidStreamReconnectsAndMissesNothing(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	r := start(t, o)
	waitStreaming(t, r)

	writer(t, s, 1, 20, 0, nil)
	eventually(t, "orders 1..20", allSeen(rec, 1, 20))
	s.Restart(t)
	writer(t, s, 21, 40, 0, nil)
	eventually(t, "orders 21..40 after the database restart", allSeen(rec, 21, 40))
	if st := r.Status(); st.Reconnects < 1 {
		t.Errorf("status %+v: want at least one reconnect", st)
	}
	if n := rec.resetCount(); n != 0 {
		t.Errorf("ResetAll called %d times: the position survived the restart", n)
	}
	if len(log.lines("reconnecting")) == 0 {
		t.Errorf("no reconnect logged; log:\n%s", log)
	}
}

func TestCDC_SilentNetworkDropIsNoticedByTheReadTimeout(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	r := start(t, o)
	waitStreaming(t, r)
	// SIGSTOP freezes the server: the TCP connection stays open and silent,
	// as behind a dead NAT or a pulled cable.
	s.Freeze(t)
	eventually(t, "a reconnect after the read timeout", func() bool { return r.Status().Reconnects >= 1 })
	// Reconnecting to the frozen server times out too, rather than hanging
	// in the handshake.
	eventually(t, "a second failed attempt while frozen", func() bool { return r.Status().Reconnects >= 2 })
	s.Thaw(t)
	writer(t, s, 1, 3, 0, nil)
	eventually(t, "orders 1..3 after the freeze", allSeen(rec, 1, 3))
}

func TestCDC_PurgedPositionDropsEveryOrderLogsItAndReadsOn(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	store := &cdc.MemoryPositions{}
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Positions = store
	o.Metrics = cdc.NewMetrics(nil)
	r1 := start(t, o)
	waitStreaming(t, r1)
	writer(t, s, 1, 1, 0, nil)
	eventually(t, "order 1", allSeen(rec, 1, 1))
	r1.stop()

	writer(t, s, 2, 2, 0, nil) // missed while stopped, then purged
	s.PurgeBinlogs(t)
	r2 := start(t, o)
	eventually(t, "ResetAll", func() bool { return rec.resetCount() == 1 })
	waitStreaming(t, r2)
	writer(t, s, 3, 3, 0, nil)
	eventually(t, "order 3 after the reset", allSeen(rec, 3, 3))
	warn := log.lines("position is gone")
	if len(warn) != 1 || !strings.Contains(warn[0], "level=WARN") || !strings.Contains(warn[0], "purged") {
		t.Fatalf("want one WARN line saying the position is gone (purged); got %q", warn)
	}
	if n := testutil.ToFloat64(o.Metrics.PositionResets); n != 1 {
		t.Errorf("position_resets_total = %v, want 1", n)
	}
	if st := r2.Status(); st.PositionResets != 1 {
		t.Errorf("status %+v: want position_resets 1", st)
	}
}

func TestCDC_PositionOfAnotherServerDropsEveryOrder(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	store := &cdc.MemoryPositions{}
	store.Save(context.Background(), cdc.Position{File: "binlog.000001", Pos: 4, ServerID: 77})
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Positions = store
	r := start(t, o)
	eventually(t, "ResetAll", func() bool { return rec.resetCount() == 1 })
	waitStreaming(t, r)
	if w := log.lines("server_id 77"); len(w) != 1 {
		t.Fatalf("want one line naming the other server; log:\n%s", log)
	}
}

func TestCDC_PositionFromARestoredServerWithTheSameNamesDropsEveryOrder(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	store := &cdc.MemoryPositions{}
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Positions = store
	r1 := start(t, o)
	waitStreaming(t, r1)
	writer(t, s, 1, 1, 0, nil)
	eventually(t, "order 1", allSeen(rec, 1, 1))
	r1.stop()
	p, _, _ := store.Load(context.Background())
	if p.GTID == "" {
		t.Fatalf("stored position %+v has no GTID state", p)
	}
	// As if the server had been rebuilt: same server_id, same file names,
	// but its history is behind what the reader had seen.
	var d, sv, n uint64
	fmt.Sscanf(p.GTID, "%d-%d-%d", &d, &sv, &n)
	p.GTID = fmt.Sprintf("%d-%d-%d", d, sv, n+1000)
	store.Save(context.Background(), p)
	r2 := start(t, o)
	eventually(t, "ResetAll", func() bool { return rec.resetCount() == 1 })
	waitStreaming(t, r2)
	if w := log.lines("GTID state is behind"); len(w) != 1 {
		t.Fatalf("want one line naming the GTID state; log:\n%s", log)
	}
}

// crashLease never releases: the holder "dies" with the key still set, and
// the other replica must wait for it to expire.
type crashLease struct{ cdc.Lease }

func (c crashLease) Acquire(ctx context.Context) (context.Context, func(), error) {
	held, _, err := c.Lease.Acquire(ctx)
	return held, func() {}, err
}

func TestCDC_TwoReplicasWithALeaseInvalidateEachChangeOnceAndTakeOverWhenTheLeaderDies(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rc := redis.NewClient(&redis.Options{Addr: redistest.Shared(t)})
	t.Cleanup(func() { rc.Close() })
	prefix := redistest.Prefix(t)
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.Positions = cdc.RedisPositions(rc, prefix+"cdc:pos")
	o.Lease = crashLease{cdc.RedisLease(rc, prefix+"cdc:lease", 2*time.Second)}
	oa, ob := o, o
	oa.ServerID, ob.ServerID = 101, 102
	oa.Metrics, ob.Metrics = cdc.NewMetrics(nil), cdc.NewMetrics(nil)
	a := start(t, oa)
	b := start(t, ob)
	var leader, other *running
	eventually(t, "one leader streaming", func() bool {
		switch {
		case a.Status().State == cdc.StateStreaming:
			leader, other = a, b
		case b.Status().State == cdc.StateStreaming:
			leader, other = b, a
		}
		return leader != nil
	})
	if st := other.Status(); st.State != cdc.StateStandby || st.Leader {
		t.Fatalf("the other replica is %+v, want standby", st)
	}

	writer(t, s, 1, 20, 0, nil)
	eventually(t, "orders 1..20", allSeen(rec, 1, 20))

	leader.stop() // dies holding the lease
	died := time.Now()
	writer(t, s, 21, 25, 0, nil)
	eventually(t, "the other replica takes over and catches up", allSeen(rec, 21, 25))
	t.Logf("takeover: orders written after the leader died were invalidated %v later (lease ttl 2s)",
		time.Since(died).Round(time.Millisecond))
	if st := other.Status(); !st.Leader || st.State != cdc.StateStreaming {
		t.Errorf("after takeover the other replica is %+v", st)
	}
	time.Sleep(500 * time.Millisecond)
	for id := int64(1); id <= 25; id++ {
		if n := rec.count(id); n != 1 {
			t.Errorf("order %d invalidated %d times by the two replicas, want 1", id, n)
		}
	}
}

func TestCDC_MissingBinlogIsNamedInOneLogLine(t *testing.T) {
	t.Parallel()
	s := startDB(t, mariadbtest.Config{NoBinlog: true})
	rec, log := newRecorder(), &logBuf{}
	r := start(t, options(t, s, rec, log))
	eventually(t, "a retry after the start check", func() bool { return r.Status().Reconnects >= 2 })
	lines := log.lines("not ready for change capture")
	if len(lines) != 1 || !strings.Contains(lines[0], "log_bin is OFF") {
		t.Fatalf("want exactly one start line naming log_bin; got %q\nlog:\n%s", lines, log)
	}
	if p := r.Status().Problems; len(p) != 1 || !strings.HasPrefix(p[0], "log_bin") {
		t.Errorf("status problems %q", p)
	}
}

func TestCDC_StatementFormatAndMissingGrantAreNamed(t *testing.T) {
	t.Parallel()
	s := mariadbtest.Start(t, mariadbtest.Config{BinlogFormat: "STATEMENT"})
	s.Exec(t, schema)
	s.CreateUser(t, "weak", "pw", "REPLICATION SLAVE ON *.*")
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.User = "weak"
	r := start(t, o)
	eventually(t, "a retry after the start check", func() bool { return r.Status().Reconnects >= 1 })
	lines := log.lines("not ready for change capture")
	if len(lines) != 1 || !strings.Contains(lines[0], "binlog_format is STATEMENT") || !strings.Contains(lines[0], "BINLOG MONITOR") {
		t.Fatalf("want one line naming binlog_format and the BINLOG MONITOR grant; got %q", lines)
	}
}

func TestCDC_ColumnNamesFromInformationSchemaFollowDDL(t *testing.T) {
	t.Parallel()
	s := startDB(t, mariadbtest.Config{RowMetadata: "MINIMAL"})
	rec, log := newRecorder(), &logBuf{}
	r := start(t, options(t, s, rec, log))
	waitStreaming(t, r)
	s.Exec(t, "INSERT INTO anqicms.communication_messages (comm_order_id, content) VALUES (5, 'a')")
	eventually(t, "order 5", allSeen(rec, 5, 5))
	// A new first column shifts comm_order_id's position.
	s.Exec(t, "ALTER TABLE anqicms.communication_messages ADD COLUMN site_id INT NOT NULL DEFAULT 42 FIRST",
		"INSERT INTO anqicms.communication_messages (comm_order_id, content) VALUES (6, 'b')")
	eventually(t, "order 6 after ALTER", allSeen(rec, 6, 6))
	if rec.count(42) != 0 {
		t.Fatalf("site_id read as the order id after ALTER: %v", rec.snapshot())
	}
}

func TestCDC_WithoutColumnNamesOrSelectGrantTheTableIsNamedInALogLine(t *testing.T) {
	t.Parallel()
	s := mariadbtest.Start(t, mariadbtest.Config{RowMetadata: "MINIMAL"})
	s.Exec(t, schema)
	s.CreateUser(t, "noselect", "pw", "REPLICATION SLAVE, BINLOG MONITOR ON *.*")
	rec, log := newRecorder(), &logBuf{}
	o := options(t, s, rec, log)
	o.User = "noselect"
	r := start(t, o)
	waitStreaming(t, r)
	if p := r.Status().Problems; len(p) != 1 || !strings.Contains(p[0], "SELECT") {
		t.Errorf("problems %q: want the missing SELECT grant named", p)
	}
	s.Exec(t, "INSERT INTO anqicms.communication_orders (id) VALUES (1)")
	eventually(t, "a warning naming the table", func() bool {
		return len(log.lines("cannot read column names")) == 1
	})
	if w := log.lines("cannot read column names")[0]; !strings.Contains(w, "anqicms.communication_orders") || !strings.Contains(w, "binlog_row_metadata=FULL") {
		t.Errorf("warning %q", w)
	}
	if st := r.Status(); st.State != cdc.StateStreaming {
		t.Errorf("the reader stopped streaming: %+v", st)
	}
}

func TestCDC_InvalidateErrorReplaysTheTransaction(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rec, log := newRecorder(), &logBuf{}
	r := start(t, options(t, s, rec, log))
	waitStreaming(t, r)
	rec.mu.Lock()
	rec.fail = true
	rec.mu.Unlock()
	writer(t, s, 7, 7, 0, nil)
	eventually(t, "the failed invalidation ends the session", func() bool { return r.Status().Reconnects >= 1 })
	rec.mu.Lock()
	rec.fail = false
	rec.mu.Unlock()
	eventually(t, "order 7 invalidated after the retry", allSeen(rec, 7, 7))
}

func TestCheck_ReportsSettingsGrantsAndTables(t *testing.T) {
	t.Parallel()
	s := startDB(t)
	rec := newRecorder()
	o := options(t, s, rec, &logBuf{})
	o.Tables = append(o.Tables, cdc.Table{Name: "communication_orders", OrderColumn: "order_no"}, cdc.Table{Name: "nope", OrderColumn: "id"})
	res := cdc.Check(context.Background(), o)
	byName := map[string]cdc.CheckResult{}
	for _, c := range res {
		byName[c.Name] = c
		t.Logf("%-40s ok=%v %s", c.Name, c.OK, c.Detail)
	}
	for _, name := range []string{"connect", "log_bin", "binlog_format", "grants", "cdc.table[0] communication_orders", "cdc.table[1] anqicms.communication_messages"} {
		if !byName[name].OK {
			t.Errorf("%s: %+v, want ok", name, byName[name])
		}
	}
	if c := byName["cdc.table[2] communication_orders"]; c.OK || !strings.Contains(c.Detail, "order_no") {
		t.Errorf("missing column: %+v", c)
	}
	if c := byName["cdc.table[3] nope"]; c.OK {
		t.Errorf("missing table: %+v", c)
	}
}
