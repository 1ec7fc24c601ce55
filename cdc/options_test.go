package cdc

import (
	"context"
	"strings"
	"testing"
	"time"

	"anqi-edge/config"
)

func TestFromConfig_ZeroSettleMeansNoSecondInvalidation(t *testing.T) {
	c := config.Default().CDC
	c.Addr, c.Tables = "db:3306", []config.CDCTable{{Name: "communication_orders", OrderColumn: "id"}}
	if o := FromConfig(c); o.Settle != 500*time.Millisecond || o.Heartbeat != 2*time.Second || o.ReadTimeout != 6*time.Second ||
		len(o.Tables) != 1 || o.Tables[0].OrderColumn != "id" {
		t.Errorf("defaults: %+v", o)
	}
	c.Settle = config.Duration{}
	if o := FromConfig(c); o.Settle >= 0 {
		t.Errorf("settle 0s gave Options.Settle %v, want negative (off)", o.Settle)
	}
}

func TestNew_RejectsIncompleteOptionsNamingTheKey(t *testing.T) {
	nop := func(context.Context, int64) error { return nil }
	_, err := New(Options{Tables: []Table{{Name: "t"}}, Invalidate: nop, ResetAll: func(context.Context) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), "cdc.addr") || !strings.Contains(err.Error(), "cdc.table[0].order_column") {
		t.Errorf("err = %v", err)
	}
}

func TestSettler_CoalescesRepeatedChangesOfOneOrder(t *testing.T) {
	fired := make(chan int64, 10)
	s := newSettler(50*time.Millisecond, func(_ context.Context, o int64) { fired <- o })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	s.add([]int64{1, 2})
	s.add([]int64{1})
	got := map[int64]int{}
	deadline := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case o := <-fired:
			got[o]++
		case <-deadline:
			t.Fatalf("settle fired %v", got)
		}
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case o := <-fired:
		t.Fatalf("order %d fired again", o)
	default:
	}
	if s.pending() != 0 {
		t.Errorf("%d pending", s.pending())
	}
}

func TestOrderID(t *testing.T) {
	for _, tt := range []struct {
		v  any
		id int64
		ok bool
	}{
		{int32(7), 7, true}, {uint64(9), 9, true}, {int64(0), 0, false}, {int64(-3), -3, false},
		{"12", 12, true}, {[]byte("13"), 13, true}, {nil, 0, false}, {3.5, 0, false}, {uint64(1 << 63), 0, false},
	} {
		if id, ok := orderID(tt.v); ok != tt.ok || (ok && id != tt.id) {
			t.Errorf("orderID(%#v) = %d, %v", tt.v, id, ok)
		}
	}
}

func TestGTIDState_BehindNamesTheDomain(t *testing.T) {
	st := parseGTIDState("0-1-42, 1-2-7,bad")
	if st.String() != "0-1-42,1-2-7" {
		t.Fatalf("parsed %q", st.String())
	}
	if why := st.behind(parseGTIDState("0-1-40,1-9-7")); why != "" {
		t.Errorf("not behind, got %q", why)
	}
	if why := st.behind(parseGTIDState("0-1-43")); !strings.Contains(why, "domain 0") {
		t.Errorf("behind in domain 0, got %q", why)
	}
	if why := st.behind(parseGTIDState("5-1-1")); !strings.Contains(why, "domain 5") {
		t.Errorf("unknown domain 5, got %q", why)
	}
}
