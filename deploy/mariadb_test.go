package deploy_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"anqi-edge/internal/procattr"
)

// TestCompose_MariaDBFlagsAndCDCAccountWorkOnARealServer starts a private
// mariadbd with the compose file's command flags, runs the compose file's
// init script against it the way the mariadb image does, and logs in as the
// CDC account: the binlog is on in ROW format with full metadata, the
// account can read the position and nothing more than SELECT on the
// database. Skipped when MariaDB is not installed.
func TestCompose_MariaDBFlagsAndCDCAccountWorkOnARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mariadbd")
	}
	need := map[string]string{}
	for _, names := range [][]string{{"mariadbd", "mysqld"}, {"mariadb-install-db", "mysql_install_db"}, {"mariadb", "mysql"}} {
		for _, n := range names {
			if p, err := exec.LookPath(n); err == nil {
				need[names[0]] = p
				break
			}
			if p := "/usr/sbin/" + n; fileExists(p) {
				need[names[0]] = p
				break
			}
		}
		if need[names[0]] == "" {
			t.Skipf("%s not installed", names[0])
		}
	}
	services := composeServices(t)
	db, dbEnv := services["mariadb"], composeEnv(services["mariadb"])

	// A short directory: the socket path must fit sun_path (108 bytes).
	dir, err := os.MkdirTemp("", "aedb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "s.sock")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	install := exec.Command(need["mariadb-install-db"], "--no-defaults", "--datadir="+data, "--user="+me.Username,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcpPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// --skip-name-resolve as in the mariadb image's own config, so a TCP
	// login from 127.0.0.1 is matched against user@'%' as in compose.
	args := append([]string{"--no-defaults", "--skip-name-resolve", "--datadir=" + data, "--socket=" + sock, "--user=" + me.Username,
		"--bind-address=127.0.0.1", "--port=" + strconv.Itoa(tcpPort), "--log-error=" + filepath.Join(dir, "err.log"),
		"--pid-file=" + filepath.Join(dir, "pid")}, db.Command...)
	srv := exec.Command(need["mariadbd"], args...)
	srv.SysProcAttr = procattr.DieWithParent(syscall.SIGKILL)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			srv.Process.Kill()
			<-exited
		}
	})
	errLog := func() string { b, _ := os.ReadFile(filepath.Join(dir, "err.log")); return string(b) }

	// sql runs statements through the mariadb client; extra picks the login.
	sql := func(stmt string, extra ...string) (string, error) {
		cmd := exec.Command(need["mariadb"], append([]string{"--no-defaults", "-N", "-B", "-e", stmt}, extra...)...)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err := cmd.Run()
		if err != nil {
			return stderr.String(), err
		}
		return strings.TrimSpace(out.String()), nil
	}
	root := []string{"--protocol=socket", "--socket=" + sock, "-uroot"}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := sql("SELECT 1", root...); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("mariadbd %v exited: %v\n%s", db.Command, err, errLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mariadbd did not answer within 60s\n%s", errLog())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// What the image's entrypoint does before the init scripts.
	rootPW := dbEnv["MARIADB_ROOT_PASSWORD"]
	dbName := dbEnv["MARIADB_DATABASE"]
	if out, err := sql("CREATE DATABASE `"+dbName+"`; ALTER USER root@localhost IDENTIFIED BY '"+rootPW+"'", root...); err != nil {
		t.Fatalf("set up like the image: %v: %s", err, out)
	}
	// The script calls `mariadb` and relies on the image's client config for
	// the socket. Here a wrapper first on PATH points it at this server and
	// keeps it off the machine's option files (which may name another
	// server's socket, and win over MYSQL_UNIX_PORT).
	wrapDir := filepath.Join(dir, "bin")
	wrapper := "#!/bin/sh\nexec " + need["mariadb"] + " --no-defaults --socket=" + sock + " \"$@\"\n"
	if err := os.Mkdir(wrapDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wrapDir, "mariadb"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	script := exec.Command("bash", filepath.FromSlash("compose/mariadb-cdc-user.sh"))
	script.Env = append(os.Environ(), "PATH="+wrapDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	for k, v := range dbEnv {
		script.Env = append(script.Env, k+"="+v)
	}
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("compose/mariadb-cdc-user.sh: %v\n%s", err, out)
	}

	cdc := []string{"--protocol=tcp", "-h127.0.0.1", "-P" + strconv.Itoa(tcpPort),
		"-u" + dbEnv["ANQI_EDGE_CDC_USER"], "-p" + dbEnv["ANQI_EDGE_CDC_PASSWORD"]}
	got, err := sql("SELECT @@log_bin, @@binlog_format, @@binlog_row_metadata, @@server_id", cdc...)
	if err != nil {
		t.Fatalf("log in as the CDC account %s: %v: %s", dbEnv["ANQI_EDGE_CDC_USER"], err, got)
	}
	if want := "1\tROW\tFULL\t" + mariadbFlags(t, db)["server-id"]; got != want {
		t.Errorf("log_bin, binlog_format, binlog_row_metadata, server_id = %q, want %q", got, want)
	}
	if got, err := sql("SHOW MASTER STATUS", cdc...); err != nil || !strings.HasPrefix(got, "mariadb-bin.") {
		t.Errorf("SHOW MASTER STATUS as the CDC account (needs BINLOG MONITOR) = %q, %v; want a mariadb-bin.* position", got, err)
	}
	grants, err := sql("SHOW GRANTS", cdc...)
	if err != nil {
		t.Fatalf("SHOW GRANTS: %v: %s", err, grants)
	}
	for _, want := range []string{"REPLICATION SLAVE", "BINLOG MONITOR", "GRANT SELECT ON `" + dbName + "`.*"} {
		if !strings.Contains(grants, want) {
			t.Errorf("the CDC account's grants lack %s:\n%s", want, grants)
		}
	}
	if out, err := sql("CREATE TABLE `"+dbName+"`.t (a int)", cdc...); err == nil {
		t.Errorf("the CDC account could create a table; it must only read (%s)", out)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
