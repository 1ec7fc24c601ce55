// Command cdcbench measures commit-to-visible: how long after the shop's
// admin replies (a write to AnqiCMS's database only, never through the
// proxy) a customer who watches or polls the order is served the reply.
//
// In one run, one after the other and each for -duration: anqi-edge with
// CDC (two replicas sharing Redis, reading a private MariaDB's binlog),
// anqi-edge without CDC (ttl-bound, -ttl), and nginx proxy_cache with the
// same ttl. The fake AnqiCMS keeps its orders in that MariaDB; a writer
// posts admin replies at -rate to the system's orders while -clients
// customers follow them (SSE, long-poll and 200 ms polling for anqi-edge;
// polling only for nginx, which has no watch endpoints). The delay of one
// (client, change) is from the admin endpoint's answer (the commit) to the
// first answer or event that client reads with the reply in it.
//
// Everything listens on 127.0.0.1; every wait is bounded; children get
// SIGTERM if cdcbench dies. `make bench-cdc` runs it and writes the table
// into bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type options struct {
	root     string
	duration time.Duration
	rate     float64
	clients  int
	orders   int
	poll     time.Duration
	ttl      time.Duration
	cdcTTL   time.Duration
	drain    time.Duration
	only     string
	readme   string
	keep     bool
	quiet    bool
}

func defaultOptions() options {
	return options{root: "..", duration: 60 * time.Second, rate: 5, clients: 50, orders: 10,
		poll: 200 * time.Millisecond, ttl: 5 * time.Second, cdcTTL: 30 * time.Second,
		only: "cdc,ttl,nginx"}
}

func main() {
	o := defaultOptions()
	flag.StringVar(&o.root, "root", o.root, "anqi-edge's module root (built with go build)")
	flag.DurationVar(&o.duration, "duration", o.duration, "how long admin changes are made, per system")
	flag.Float64Var(&o.rate, "rate", o.rate, "admin changes per second, round robin over the system's orders")
	flag.IntVar(&o.clients, "clients", o.clients, "customers following the orders, per system")
	flag.IntVar(&o.orders, "orders", o.orders, "orders per system, each of its own user")
	flag.DurationVar(&o.poll, "poll", o.poll, "polling interval of the polling customers")
	flag.DurationVar(&o.ttl, "ttl", o.ttl, "cache.ttl of anqi-edge without CDC and proxy_cache_valid of nginx")
	flag.DurationVar(&o.cdcTTL, "cdc-ttl", o.cdcTTL, "cache.ttl of anqi-edge with CDC (config.toml's default)")
	flag.DurationVar(&o.drain, "drain", 0, "after the last change, how long customers may take to see it (0 = 2×ttl + 2s)")
	flag.StringVar(&o.only, "systems", "cdc,ttl,nginx", "systems to run, comma separated: cdc, ttl, nginx")
	flag.StringVar(&o.readme, "readme", "", "write the table into this README's \"Commit to visible (CDC)\" block")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs)")
	flag.Parse()
	if o.drain == 0 {
		o.drain = 2*o.ttl + 2*time.Second
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cdcbench:", err)
		os.Exit(1)
	}
	md := renderMarkdown(o, res, invocation())
	fmt.Print(md)
	if o.readme != "" {
		if err := writeReadme(o.readme, md); err != nil {
			fmt.Fprintln(os.Stderr, "cdcbench:", err)
			os.Exit(1)
		}
		logf("wrote %s", o.readme)
	}
}

// invocation is how this run was started, for the README.
func invocation() string {
	if v := strings.TrimSpace(os.Getenv("BENCH_INVOKED")); v != "" {
		return v
	}
	return "cd bench && go run ./cmd/cdcbench " + strings.Join(os.Args[1:], " ")
}

var started = time.Now()

var quiet bool

// logf reports progress on stderr with the elapsed time.
func logf(format string, args ...any) {
	if quiet {
		return
	}
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
}

func absRoot(root string) (string, error) {
	r, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(r, "go.mod"))
	if err != nil || !strings.Contains(string(b), "module anqi-edge\n") {
		return "", fmt.Errorf("-root %s is not anqi-edge's module root", root)
	}
	return r, nil
}
