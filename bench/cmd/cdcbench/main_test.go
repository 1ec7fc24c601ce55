package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anqi-edge/bench/internal/harness"
)

// TestCDCBench_AdminReplyReachesEveryWatcher runs the whole benchmark for a
// few seconds per system: a private MariaDB, two anqi-edge replicas with
// CDC, two without, nginx. It checks behaviour, not speed (the machine is
// shared): with CDC every SSE, long-poll and polling customer is served
// every admin reply; the ttl-bound pollers (anqi-edge without CDC, nginx)
// too, once their entries expire; and the README block is rendered and
// written.
func TestCDCBench_AdminReplyReachesEveryWatcher(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB, Redis, nginx and four anqi-edge processes")
	}
	for _, bin := range []string{"mariadbd", "mariadb-install-db", "nginx", "redis-server", "go"} {
		if _, err := harness.LookTool(bin); err != nil {
			t.Skipf("%v (apt-get install mariadb-server nginx-light redis-server)", err)
		}
	}
	o := defaultOptions()
	o.root = filepath.Join("..", "..", "..")
	o.duration, o.clients, o.orders, o.ttl, o.drain = 2*time.Second, 9, 3, 2*time.Second, 6*time.Second
	o.quiet = !testing.Verbose()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("%d systems measured, want 3", len(res))
	}
	for _, r := range res {
		if r.commits == 0 {
			t.Errorf("%s: no admin reply made", r.sys.label)
		}
		for _, mode := range r.sys.modes {
			m := r.byMode[mode]
			if m == nil || m.expected == 0 {
				t.Errorf("%s: no %s client measured", r.sys.label, mode)
				continue
			}
			// Without CDC a watcher learns of a change only when the
			// entry expires (SSE) or at watch.max_wait (long-poll, 30s),
			// maybe after the drain; every other row must see every change.
			if r.sys.key == "ttl" && mode != modePoll {
				continue
			}
			if len(m.delays) != m.expected {
				t.Errorf("%s, %s: %d of %d changes served within the drain", r.sys.label, mode, len(m.delays), m.expected)
			}
		}
	}
	if res[0].sys.key != "cdc" || len(res[0].binlog) == 0 {
		t.Errorf("the binlog probe timed no change of the CDC run")
	}

	md := renderMarkdown(o, res, "test")
	for _, want := range []string{"anqi-edge + CDC", "nginx proxy_cache", "Target commit-to-visible", "Where the CDC delay goes"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	readme := filepath.Join(t.TempDir(), "README.md")
	os.WriteFile(readme, []byte("# x\n"+readmeBegin+"\nold\n"+readmeEnd+"\ntail\n"), 0o644)
	if err := writeReadme(readme, md); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(readme)
	if got := string(b); strings.Contains(got, "old") || !strings.Contains(got, md) || !strings.HasSuffix(got, readmeEnd+"\ntail\n") {
		t.Errorf("README block not replaced:\n%s", got)
	}
}

func TestRank_UnseenChangesCountAsSlowest(t *testing.T) {
	m := &modeResult{expected: 100}
	for i := range 98 {
		m.delays = append(m.delays, time.Duration(i+1)*time.Millisecond)
	}
	if d, ok := m.rank(0.5); !ok || d != 50*time.Millisecond {
		t.Errorf("p50 = %v, %v; want 50ms", d, ok)
	}
	if _, ok := m.rank(0.99); ok {
		t.Errorf("p99 with 2 of 100 unseen is among the unseen, got a value")
	}
	if !strings.Contains(m.cell(0.99, 6*time.Second), "unseen") {
		t.Errorf("cell = %q", m.cell(0.99, 6*time.Second))
	}
}
