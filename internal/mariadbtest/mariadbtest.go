// Package mariadbtest runs real MariaDB servers for integration tests, the
// way internal/redistest runs Redis: each server is installed into its own
// temporary data directory (mariadb-install-db), listens on a free port of
// 127.0.0.1 with the binary log on (ROW format, full row metadata), and is
// owned by the test that started it.
//
// A server lives in its own temporary directory (data, socket, log), is
// stopped by t.Cleanup, and on Linux is started with a parent-death signal so
// it cannot outlive the test binary even if that binary is killed. Stop and
// Restart keep the data, so a test can take the database away mid-stream.
//
// When mariadbd or mariadb-install-db is not installed the helpers skip the
// test, unless the CI environment variable is set, in which case they fail
// it: CI must install MariaDB (apt-get install mariadb-server; see .ci/run).
package mariadbtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"anqi-edge/internal/procattr"
	"anqi-edge/internal/testproc"
)

const (
	startTimeout   = 30 * time.Second // until a started server answers (busy 2-core CI)
	stopTimeout    = 30 * time.Second // graceful shutdown before SIGKILL
	restartBindFor = 10 * time.Second // how long Restart retries a busy port
	maxPortTries   = 5
	pollInterval   = 20 * time.Millisecond
	logTailLines   = 40
)

// Config changes how Start configures the server. The zero value is what
// the CDC tests want: binary log on, binlog_format=ROW,
// binlog_row_metadata=FULL, server_id=1.
type Config struct {
	NoBinlog     bool     // start without --log-bin (log_bin=OFF)
	BinlogFormat string   // default "ROW"
	RowMetadata  string   // binlog_row_metadata; default "FULL"
	ServerID     int      // default 1
	Args         []string // extra mariadbd arguments, appended last
}

// Server is one mariadbd process owned by a test.
type Server struct {
	mariadbd string
	dir      string // temp dir: data/, mysqld.sock, mariadbd.log
	cfg      Config

	mu   sync.Mutex
	port int
	proc *testproc.Proc // nil when not running

	rootOnce sync.Once
	root     *sql.DB
}

// Available reports whether mariadbd and mariadb-install-db can be found.
func Available() bool {
	_, err1 := lookPath("mariadbd")
	_, err2 := lookPath("mariadb-install-db")
	return err1 == nil && err2 == nil
}

// lookPath finds a MariaDB binary on PATH or in /usr/sbin, where Debian puts
// mariadbd (not on a non-root PATH).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH nor in /usr/sbin", name)
}

func requireBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := lookPath(name)
	return testproc.Require(t, "mariadbtest", path, err, "mariadb-server")
}

// Start installs a fresh data directory and starts mariadbd on a free port of
// 127.0.0.1, waiting (up to 30s) until it answers. An optional Config
// changes the server's settings. The server is stopped when the test ends.
func Start(t testing.TB, cfg ...Config) *Server {
	t.Helper()
	mariadbd := requireBinary(t, "mariadbd")
	install := requireBinary(t, "mariadb-install-db")
	var c Config
	if len(cfg) > 0 {
		c = cfg[0]
	}
	// A short directory of our own, not t.TempDir: the socket path must fit
	// in sun_path (108 bytes) whatever the test's name.
	dir, err := os.MkdirTemp("", "mariadbtest-")
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	s := &Server{mariadbd: mariadbd, dir: dir, cfg: c}
	// Cleanups run last-in first-out: kill the process, close the pool,
	// then remove the directory.
	t.Cleanup(func() { os.RemoveAll(dir) })
	t.Cleanup(func() {
		if s.root != nil {
			s.root.Close()
		}
	})
	t.Cleanup(s.Kill)

	if err := s.installDB(install); err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	if err := testproc.StartOnFreePort(maxPortTries, freePort, s.start); err != nil {
		t.Fatalf("mariadbtest: starting mariadbd: %v", err)
	}
	return s
}

// serverArgs are the settings shared by install and run: a small server
// that starts fast and does not fsync (tests never survive a power cut),
// with a temp dir of its own: mariadbd deletes other servers' "#sql*" temp
// files from a shared /tmp at startup, which breaks concurrent installs.
func (s *Server) serverArgs() []string {
	args := []string{
		"--tmpdir=" + s.tmpDir(),
		"--skip-name-resolve",
		"--innodb-buffer-pool-size=16M",
		"--innodb-log-file-size=4M",
		"--innodb-data-file-path=ibdata1:4M:autoextend",
		"--innodb-flush-log-at-trx-commit=2",
		"--performance-schema=OFF",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // mariadbd refuses to run as root otherwise
	}
	return args
}

func (s *Server) installDB(bin string) error {
	args := append([]string{
		"--no-defaults",
		"--datadir=" + s.DataDir(),
		"--auth-root-authentication-method=normal", // root without password, over the socket
		"--skip-test-db",
	}, s.serverArgs()...)
	if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = procattr.DieWithParent(syscall.SIGKILL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("mariadb-install-db into %s: %v\n%s", s.DataDir(), err, testproc.Tail(string(out), logTailLines))
	}
	return nil
}

// DataDir is the server's data directory (binary logs included).
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

func (s *Server) tmpDir() string { return filepath.Join(s.dir, "tmp") }

// Socket is the server's unix socket path.
func (s *Server) Socket() string { return filepath.Join(s.dir, "mysqld.sock") }

func (s *Server) logPath() string { return filepath.Join(s.dir, "mariadbd.log") }

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// LogTail returns the last lines of the server's error log.
func (s *Server) LogTail() string { return testproc.LogTail(s.logPath(), 0, logTailLines) }

func (s *Server) start(port int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
	s.port = port

	logf, logStart, err := testproc.OpenLog(s.logPath(), "mariadbtest", "mariadbd", port)
	if err != nil {
		return err
	}

	c := s.cfg
	args := append([]string{
		"--no-defaults",
		"--datadir=" + s.DataDir(),
		"--socket=" + s.Socket(),
		"--pid-file=" + filepath.Join(s.dir, "mariadbd.pid"),
		"--port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1",
		"--server-id=" + strconv.Itoa(max(c.ServerID, 1)),
		"--skip-log-error", // stderr goes to our log file
	}, s.serverArgs()...)
	if !c.NoBinlog {
		args = append(args,
			"--log-bin="+filepath.Join(s.DataDir(), "binlog"),
			"--binlog-format="+cmpOr(c.BinlogFormat, "ROW"),
			"--binlog-row-metadata="+cmpOr(c.RowMetadata, "FULL"),
			"--sync-binlog=0",
		)
	} else if c.BinlogFormat != "" {
		args = append(args, "--binlog-format="+c.BinlogFormat)
	}
	args = append(args, c.Args...)
	cmd := exec.Command(s.mariadbd, args...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	proc, err := testproc.Start(cmd)
	logf.Close()
	if err != nil {
		return fmt.Errorf("exec %s: %w", s.mariadbd, err)
	}
	s.proc = proc

	err = proc.WaitReady(func() error { return pingSocket(s.Socket()) }, startTimeout, pollInterval)
	if err == nil {
		return nil
	}
	s.killLocked()
	log := testproc.LogTail(s.logPath(), logStart, logTailLines)
	err = fmt.Errorf("mariadbd on port %d: %w; log %s:\n%s", port, err, s.logPath(), log)
	if errors.Is(err, testproc.ErrExited) &&
		(strings.Contains(log, "Address already in use") || strings.Contains(log, "Can't start server: Bind")) {
		err = fmt.Errorf("%w: %w", testproc.ErrPortBusy, err)
	}
	return err
}

// pingSocket opens one connection over the unix socket and pings it.
func pingSocket(sock string) error {
	if _, err := os.Stat(sock); err != nil {
		return err
	}
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "unix"
	cfg.Addr = sock
	cfg.Timeout = time.Second
	cfg.Logger = &mysql.NopLogger{}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// Kill sends SIGKILL and waits for the process to exit (InnoDB recovers the
// data on the next start). A no-op when the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	s.proc.Kill()
	s.proc = nil
}

// Stop shuts the server down cleanly (SIGTERM), waiting up to 30s before
// falling back to SIGKILL. The data directory is kept for Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proc.Terminate(stopTimeout)
	s.proc = nil
}

// Freeze stops the server process (SIGSTOP) without closing its sockets:
// clients see a silent connection, as behind a dropped network.
func (s *Server) Freeze(t testing.TB) { s.signal(t, syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw(t testing.TB) { s.signal(t, syscall.SIGCONT) }

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.proc.Signal(sig); err != nil {
		t.Fatalf("mariadbtest: %v: %v", sig, err)
	}
}

// Restart stops the server (if running) and starts it again on the same
// port with the same data, retrying briefly while the port is not yet
// bindable.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	testproc.RestartOnPort(t, "mariadbtest: mariadbd", port, restartBindFor, 100*time.Millisecond, s.start)
}

// Root returns a pool of root connections over the unix socket
// (multiStatements on), closed when the server's test ends. It survives
// Restart: database/sql reconnects.
func (s *Server) Root(t testing.TB) *sql.DB {
	t.Helper()
	s.rootOnce.Do(func() {
		cfg := mysql.NewConfig()
		cfg.User = "root"
		cfg.Net = "unix"
		cfg.Addr = s.Socket()
		cfg.MultiStatements = true
		cfg.Timeout = 5 * time.Second
		// A restarted server breaks pooled connections; the driver retries
		// them and need not print each one.
		cfg.Logger = &mysql.NopLogger{}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			t.Fatalf("mariadbtest: %v", err)
		}
		s.root = sql.OpenDB(conn)
	})
	return s.root
}

// Exec runs each statement as root, failing the test on the first error.
func (s *Server) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	db := s.Root(t)
	for _, q := range stmts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := db.ExecContext(ctx, q)
		cancel()
		if err != nil {
			t.Fatalf("mariadbtest: %s: %v", q, err)
		}
	}
}

// DSN returns a go-sql-driver/mysql DSN for user over TCP to the server's
// port, e.g. "cdc:pw@tcp(127.0.0.1:41234)/anqicms?parseTime=true".
func (s *Server) DSN(user, password, database string) string {
	return s.config(user, password, database).FormatDSN()
}

func (s *Server) config(user, password, database string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = user
	cfg.Passwd = password
	cfg.Net = "tcp"
	cfg.Addr = s.Addr()
	cfg.DBName = database
	cfg.Timeout = 5 * time.Second
	return cfg
}

// Open returns a database/sql pool for user over TCP (see DSN), closed when
// the test ends.
func (s *Server) Open(t testing.TB, user, password, database string) *sql.DB {
	t.Helper()
	cfg := s.config(user, password, database)
	cfg.Logger = &mysql.NopLogger{}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

// CreateUser creates user@'%' with password and grants each privilege
// clause, e.g. "REPLICATION SLAVE, BINLOG MONITOR ON *.*" or
// "SELECT ON anqicms.*".
func (s *Server) CreateUser(t testing.TB, user, password string, grants ...string) {
	t.Helper()
	s.Exec(t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, password))
	for _, g := range grants {
		s.Exec(t, fmt.Sprintf("GRANT %s TO '%s'@'%%'", g, user))
	}
}

// ReplicationUser creates the account a binlog reader needs: REPLICATION
// SLAVE and BINLOG MONITOR on *.*, plus SELECT on database (if not empty).
func (s *Server) ReplicationUser(t testing.TB, user, password, database string) {
	t.Helper()
	grants := []string{"REPLICATION SLAVE, BINLOG MONITOR ON *.*"}
	if database != "" {
		grants = append(grants, "SELECT ON `"+database+"`.*")
	}
	s.CreateUser(t, user, password, grants...)
}

// BinlogPosition returns the current binary log file and position.
func (s *Server) BinlogPosition(t testing.TB) (file string, pos uint32) {
	t.Helper()
	rows, err := s.Root(t).Query("SHOW MASTER STATUS")
	if err != nil {
		t.Fatalf("mariadbtest: SHOW MASTER STATUS: %v", err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		t.Fatalf("mariadbtest: SHOW MASTER STATUS: no row (binary log off?)")
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		t.Fatalf("mariadbtest: SHOW MASTER STATUS: %v", err)
	}
	p, _ := strconv.ParseUint(fmt.Sprint(string(asBytes(vals[1]))), 10, 32)
	return string(asBytes(vals[0])), uint32(p)
}

func asBytes(v any) []byte {
	switch v := v.(type) {
	case []byte:
		return v
	case string:
		return []byte(v)
	case nil:
		return nil
	default:
		return []byte(fmt.Sprint(v))
	}
}

// FlushLogs closes the current binary log and opens the next one.
func (s *Server) FlushLogs(t testing.TB) {
	t.Helper()
	s.Exec(t, "FLUSH BINARY LOGS")
}

// PurgeBinlogs rotates the binary log and deletes every older file, so a
// reader's stored position in them is gone.
//
// The server silently keeps a file that a dump thread still reads (a reader
// that just disconnected may linger a moment), so PurgeBinlogs retries until
// only the current file is left, for up to 20s.
func (s *Server) PurgeBinlogs(t testing.TB) {
	t.Helper()
	s.FlushLogs(t)
	file, _ := s.BinlogPosition(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.Exec(t, fmt.Sprintf("PURGE BINARY LOGS TO '%s'", file))
		logs := s.BinaryLogs(t)
		if len(logs) == 1 && logs[0] == file {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mariadbtest: binary logs %v still there 20s after PURGE BINARY LOGS TO '%s'", logs, file)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BinaryLogs lists the binary log files the server keeps, oldest first.
func (s *Server) BinaryLogs(t testing.TB) []string {
	t.Helper()
	rows, err := s.Root(t).Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatalf("mariadbtest: SHOW BINARY LOGS: %v", err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("mariadbtest: SHOW BINARY LOGS: %v", err)
		}
		out = append(out, string(asBytes(vals[0])))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("mariadbtest: SHOW BINARY LOGS: %v", err)
	}
	return out
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		return port, nil
	}
	return 0, errors.New("no free port found on 127.0.0.1")
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
