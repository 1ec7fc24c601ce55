package harness

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDB is a private mariadbd with its binary log on, as anqi-edge's
// [cdc] needs it: ROW format, full row metadata, server id 1 (the settings
// deploy/demo.sh and internal/mariadbtest use).
type MariaDB struct {
	Proc   *Proc
	Addr   string // 127.0.0.1:PORT
	Socket string
	dir    string
}

// MariaDBAvailable reports whether mariadbd and mariadb-install-db are installed.
func MariaDBAvailable() bool {
	_, e1 := LookTool("mariadbd")
	_, e2 := LookTool("mariadb-install-db")
	return e1 == nil && e2 == nil
}

// StartMariaDB installs a data directory under dir/db and starts mariadbd on
// a free port of 127.0.0.1. The socket lives in a short temp directory of
// its own (sun_path holds 108 bytes); Remove deletes it after Stop.
func StartMariaDB(ctx context.Context, dir string) (*MariaDB, error) {
	mariadbd, err := LookTool("mariadbd")
	if err != nil {
		return nil, err
	}
	install, err := LookTool("mariadb-install-db")
	if err != nil {
		return nil, err
	}
	sockDir, err := os.MkdirTemp("", "cdcb-")
	if err != nil {
		return nil, err
	}
	data, tmp := filepath.Join(dir, "db", "data"), filepath.Join(dir, "db", "tmp")
	for _, d := range []string{data, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// A small server that starts fast and does not fsync: a benchmark
	// never survives a power cut, and the binlog is read from the page cache.
	common := []string{"--tmpdir=" + tmp, "--skip-name-resolve",
		"--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
		"--innodb-flush-log-at-trx-commit=2", "--performance-schema=OFF"}
	if os.Geteuid() == 0 {
		common = append(common, "--user=root") // mariadbd refuses to run as root otherwise
	}
	args := append([]string{"--no-defaults", "--datadir=" + data,
		"--auth-root-authentication-method=normal", "--skip-test-db"}, common...)
	cmd := exec.CommandContext(ctx, install, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db into %s: %v\n%s", data, err, out)
	}
	ports, err := FreePorts(1)
	if err != nil {
		return nil, err
	}
	m := &MariaDB{Addr: "127.0.0.1:" + strconv.Itoa(ports[0]), Socket: filepath.Join(sockDir, "sock"), dir: sockDir}
	args = append([]string{"--no-defaults", "--datadir=" + data, "--socket=" + m.Socket,
		"--pid-file=" + filepath.Join(sockDir, "pid"),
		"--port=" + strconv.Itoa(ports[0]), "--bind-address=127.0.0.1", "--server-id=1",
		"--log-bin=" + filepath.Join(data, "binlog"), "--binlog-format=ROW",
		"--binlog-row-metadata=FULL", "--sync-binlog=0", "--skip-log-error",
		"--max-connections=500"}, common...)
	m.Proc, err = Start("mariadbd", dir, mariadbd, args...)
	if err != nil {
		os.RemoveAll(sockDir)
		return nil, err
	}
	if err := m.Proc.WaitReady(ctx, m.ping); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// Root opens a pool as root over the socket on database db ("" = none).
func (m *MariaDB) Root(db string) (*sql.DB, error) {
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "unix"
	cfg.Addr = m.Socket
	cfg.DBName = db
	cfg.Timeout = 5 * time.Second
	cfg.Logger = &mysql.NopLogger{}
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(c), nil
}

func (m *MariaDB) ping(ctx context.Context) error {
	db, err := m.Root("")
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}

// Exec runs statements as root.
func (m *MariaDB) Exec(ctx context.Context, stmts ...string) error {
	db, err := m.Root("")
	if err != nil {
		return err
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// Stop stops the server and removes its socket directory.
func (m *MariaDB) Stop() {
	m.Proc.Stop(30 * time.Second)
	os.RemoveAll(m.dir)
}

// CDCConfig is the [cdc] section of an anqi-edge config that reads the
// fake AnqiCMS's tables (fake.Schema) from the binlog of the server at
// addr as user, the way docs/cdc.md configures AnqiCMS's.
func CDCConfig(addr, user, password string) string {
	return fmt.Sprintf(`
[cdc]
addr = %q
user = %q
password = %q

[[cdc.table]]
name = "communication_orders"
order_column = "id"

[[cdc.table]]
name = "communication_messages"
order_column = "comm_order_id"
`, addr, user, password)
}
