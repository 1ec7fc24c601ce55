package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"anqi-edge/bench/internal/harness"
)

func TestHasMessage_FindsMessagesNotTheOrderID(t *testing.T) {
	body := []byte(`{"code":0,"msg":"","data":{"id":42,"order_id":"2026010100042","messages":[{"id":7,"comm_order_id":42,"content":"hi"},{"id":420,"comm_order_id":42}]}}`)
	for id, want := range map[int64]bool{7: true, 420: true, 42: false, 4: false, 8: false} {
		if got := hasMessage(body, id); got != want {
			t.Errorf("hasMessage(%d) = %v, want %v", id, got, want)
		}
	}
}

func TestTracker_ChecksTheLatestOwnChangeAndTheLatestOneOlderThanTheWindow(t *testing.T) {
	tr := newTracker(1)
	t0 := time.Unix(1000, 0)
	tr.add(0, change{id: 7, at: t0.Add(-3 * time.Second)})                   // admin, long ago
	tr.add(0, change{id: 9, at: t0.Add(-200 * time.Millisecond), own: true}) // own, just now
	body := []byte(`[{"id":7,"comm_order_id":1}]`)
	v := tr.check(0, t0, body, time.Second)
	if !v.ownChecked || !v.ownMissed {
		t.Errorf("own change 9 committed before the read and missing: %+v", v)
	}
	if !v.oldChecked || v.oldMissed || !v.adminChecked || v.adminMissed {
		t.Errorf("admin change 7, 3s old, is in the body: %+v", v)
	}
	// A read that started before the own change was answered is not held to it.
	if v := tr.check(0, t0.Add(-time.Second), body, time.Second); v.ownChecked {
		t.Error("a read started before the send's answer was checked against it")
	}
}

func TestTracker_CountsAnAdminChangeOlderThanTheWindowApartFromSends(t *testing.T) {
	tr := newTracker(1)
	t0 := time.Unix(1000, 0)
	tr.add(0, change{id: 7, at: t0.Add(-3 * time.Second)})                    // admin, committed 3s before the read
	tr.add(0, change{id: 8, at: t0.Add(-2 * time.Second), own: true})         // a send after it
	tr.add(0, change{id: 9, at: t0.Add(-100 * time.Millisecond)})             // admin, inside the window
	v := tr.check(0, t0, []byte(`[{"id":8,"comm_order_id":1}]`), time.Second) // the send shows, the admin reply not
	if !v.oldChecked || v.oldMissed {
		t.Errorf("the latest change older than the window (send 8) is in the body: %+v", v)
	}
	if !v.adminChecked || !v.adminMissed {
		t.Errorf("admin change 7, 3s old and not in the body, not counted: %+v", v)
	}
	// A read of the commit time itself plus less than the window holds nothing against it.
	if v := tr.check(0, t0.Add(-2500*time.Millisecond), nil, time.Second); v.adminChecked || v.oldChecked {
		t.Errorf("a read 0.5s after the only commits was held to them: %+v", v)
	}
}

// shortManyUsers runs the many-user workload small (40 users polling every
// 300 ms, 5 sends/s) with the warm-up, window and admin rate of mu, within
// limit, and returns one result per system (it fails the test unless
// there are two) and the table.
func shortManyUsers(t *testing.T, mu muOptions, limit time.Duration) ([]*muResult, string) {
	t.Helper()
	mu.users, mu.interval, mu.jitter, mu.sendsPerSec = 40, 300*time.Millisecond, 0.2, 5
	mu.ttl, mu.workers, mu.staleAfter, mu.messages = 30*time.Second, 8, time.Second, 2
	o := options{detailLatency: 5 * time.Millisecond, mu: mu}
	if err := o.mu.check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	rs, md, err := manyUsersResults(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d systems measured, want 2 (anqi-edge, nginx)", len(rs))
	}
	return rs, md
}

// A short run of the whole many-user workload: both systems answer, the
// counters move, and the table has a row per system. Needs nginx, wrk and
// redis-server (`make bench-deps`); skipped without them or with -short.
func TestManyUsers_SmokeRunsBothSystems(t *testing.T) {
	if testing.Short() {
		t.Skip("builds anqi-edge and runs nginx and redis-server")
	}
	if err := needTools(); err != nil {
		t.Skip(err)
	}
	rs, md := shortManyUsers(t, muOptions{warmup: 500 * time.Millisecond, duration: 2 * time.Second}, 3*time.Minute)
	for _, r := range rs {
		if r.reads == 0 || r.errors != 0 || r.sends == 0 || r.sendErrors != 0 || r.sendCalls < r.sends {
			t.Errorf("%s: %d reads, %d errors, %d sends (%d errors), %d upstream send calls", r.system, r.reads, r.errors, r.sends, r.sendErrors, r.sendCalls)
		}
		if strings.HasPrefix(r.system, "anqi-edge") && r.lookups["l1 hit"] == 0 {
			t.Errorf("%s: no L1 hits scraped from the replicas' metrics: %v", r.system, r.lookups)
		}
		if !strings.Contains(md, "| "+r.system+" |") {
			t.Errorf("table has no row for %s:\n%s", r.system, md)
		}
	}
}

// The same short run with admin replies made behind the proxy: the fake on
// a private mariadbd with binlog, both anqi-edge replicas reading it
// ([cdc]). Needs mariadb-server besides `make bench-deps`.
//
// The test checks behaviour, not speed, so it asserts no time bound on
// anqi-edge's (b) count (a shared 2-core machine can stall a process past
// the window): every admin reply is made and counted, reads are checked
// against them, nginx (no CDC; entries filled before the replies and valid
// 30s) serves replies stale as the measurement must see it, and anqi-edge,
// which hears of them from the binlog, serves most admin-checked reads with
// the reply in them.
func TestManyUsers_AdminChangesReachAnqiEdgeThroughTheBinlog(t *testing.T) {
	if testing.Short() {
		t.Skip("builds anqi-edge and runs mariadbd, nginx and redis-server")
	}
	if err := needTools(); err != nil {
		t.Skip(err)
	}
	if !harness.MariaDBAvailable() {
		t.Skip("mariadbd or mariadb-install-db not found (apt-get install mariadb-server)")
	}
	rs, md := shortManyUsers(t, muOptions{adminPerSec: 5, warmup: time.Second, duration: 5 * time.Second}, 4*time.Minute)
	for _, r := range rs {
		t.Logf("%s: %d admin changes (%d errors); reads checked against one >= 1s old: %d, missing it: %d",
			r.system, r.adminChanges, r.adminErrors, r.adminReads, r.adminMissed)
		if r.reads == 0 || r.errors != 0 || r.sends == 0 || r.sendErrors != 0 || r.adminChanges == 0 || r.adminErrors != 0 || r.adminReads == 0 {
			t.Errorf("%s: %d reads (%d errors), %d sends (%d errors), %d admin changes (%d errors), %d reads checked against one",
				r.system, r.reads, r.errors, r.sends, r.sendErrors, r.adminChanges, r.adminErrors, r.adminReads)
		}
		if r.adminMissed > r.oldMissed {
			t.Errorf("%s: %d stale admin reads but %d stale reads in all", r.system, r.adminMissed, r.oldMissed)
		}
		switch {
		case strings.HasPrefix(r.system, "nginx") && r.adminMissed == 0:
			t.Errorf("%s: no admin reply counted stale, though nothing tells nginx of one within its 30s", r.system)
		case strings.HasPrefix(r.system, "anqi-edge") && 2*r.adminMissed >= r.adminReads:
			t.Errorf("%s: %d of %d admin-checked reads lack the reply: the binlog did not reach the replicas", r.system, r.adminMissed, r.adminReads)
		}
	}
	for _, want := range []string{"MariaDB", "5/s, replies", "(b) for admin changes alone"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}
