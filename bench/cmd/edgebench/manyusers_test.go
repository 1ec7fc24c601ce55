package main

import (
	"context"
	"strings"
	"testing"
	"time"
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
	oc, om, bc, bm, _ := tr.check(0, t0, body, time.Second)
	if !oc || !om {
		t.Errorf("own change 9 committed before the read and missing: checked %v, missed %v", oc, om)
	}
	if !bc || bm {
		t.Errorf("change 7, 3s old, is in the body: checked %v, missed %v", bc, bm)
	}
	// A read that started before the own change was answered is not held to it.
	if oc, _, _, _, _ := tr.check(0, t0.Add(-time.Second), body, time.Second); oc {
		t.Error("a read started before the send's answer was checked against it")
	}
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
	o := options{detailLatency: 5 * time.Millisecond, mu: muOptions{users: 40, interval: 300 * time.Millisecond, jitter: 0.2,
		sendsPerSec: 5, warmup: 500 * time.Millisecond, duration: 2 * time.Second, ttl: 30 * time.Second, workers: 8, staleAfter: time.Second, messages: 2}}
	if err := o.mu.check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rs, md, err := manyUsersResults(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d systems measured, want 2 (anqi-edge, nginx)", len(rs))
	}
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
