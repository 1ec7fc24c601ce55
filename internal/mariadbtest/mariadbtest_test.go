package mariadbtest

import (
	"strings"
	"testing"
)

func TestServer_StartsWithRowBinlogAndKeepsDataAcrossRestart(t *testing.T) {
	s := Start(t)
	s.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY)", "INSERT INTO shop.t VALUES (1)")
	var logBin, format, meta string
	if err := s.Root(t).QueryRow("SELECT @@log_bin, @@binlog_format, @@binlog_row_metadata").Scan(&logBin, &format, &meta); err != nil {
		t.Fatal(err)
	}
	if logBin != "1" || format != "ROW" || meta != "FULL" {
		t.Fatalf("log_bin=%s binlog_format=%s binlog_row_metadata=%s, want 1 ROW FULL", logBin, format, meta)
	}
	file, _ := s.BinlogPosition(t)
	addr := s.Addr()

	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("restart moved the server from %s to %s", addr, s.Addr())
	}
	var n int
	if err := s.Root(t).QueryRow("SELECT COUNT(*) FROM shop.t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after restart: count=%d err=%v, want 1 row", n, err)
	}

	s.ReplicationUser(t, "cdc", "pw", "shop")
	db := s.Open(t, "cdc", "pw", "shop")
	if err := db.QueryRow("SELECT COUNT(*) FROM t").Scan(&n); err != nil {
		t.Fatalf("replication user over TCP: %v", err)
	}

	s.PurgeBinlogs(t)
	for _, name := range s.BinaryLogs(t) {
		if name == file {
			t.Fatalf("binary log %s still listed after PurgeBinlogs", file)
		}
	}
}

func TestServer_WithoutBinlog(t *testing.T) {
	s := Start(t, Config{NoBinlog: true})
	var logBin string
	if err := s.Root(t).QueryRow("SELECT @@log_bin").Scan(&logBin); err != nil {
		t.Fatal(err)
	}
	if logBin != "0" {
		t.Fatalf("log_bin=%s, want 0", logBin)
	}
	if !strings.Contains(s.LogTail(), "mariadbtest: starting") {
		t.Fatalf("log tail lacks the start marker:\n%s", s.LogTail())
	}
}
