// Command edgebench is anqi-edge's load harness. It runs, on 127.0.0.1 only:
// the fake AnqiCMS (in this process, with a latency on the detail path), a
// private redis-server, three anqi-edge set-ups (L1 only, L1 + Redis, Redis
// only) and nginx with proxy_cache in front of the same fake, and then
//
//   - hot key: wrk against the same cached detail URL on every system, in
//     interleaved rounds, reporting the median req/s and p99;
//   - cold-key storm: N concurrent requests for one cold order, released
//     together, counting the upstream calls the fake saw;
//   - polling: N clients polling one order, counting upstream calls per
//     cache.ttl window.
//
// It prints Markdown tables and writes them into bench/README.md between the
// markers <!-- bench:begin --> and <!-- bench:end -->.
//
// Run it with `make bench` (after `make bench-deps`), or
//
//	cd bench && go run ./cmd/edgebench [-duration 10s] [-rounds 3] [-write=false]
//
// BENCH_DURATION, BENCH_ROUNDS, BENCH_POLL_DURATION, BENCH_PROFILE
// (auto|always|never) and BENCH_WRITE (0 = do not touch bench/README.md)
// set the defaults of the matching flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"anqi-edge/bench/internal/harness"
)

type options struct {
	duration       time.Duration
	rounds         int
	threads        int
	conns          int
	detailLatency  time.Duration
	storm          int
	pollClients    int
	pollInterval   time.Duration
	pollDuration   time.Duration
	pollTTL        time.Duration
	readme         string
	write          bool
	profile        string
	profileSeconds int
	keep           bool
	manyusers      bool
	mu             muOptions
}

// edgeEnv holds the -edge-env overrides, passed to every anqi-edge started.
var edgeEnv []string

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	fl := flag.NewFlagSet("edgebench", flag.ContinueOnError)
	fl.DurationVar(&o.duration, "duration", envDuration("BENCH_DURATION", 10*time.Second), "wrk duration of one round (env BENCH_DURATION)")
	fl.IntVar(&o.rounds, "rounds", envInt("BENCH_ROUNDS", 3), "interleaved wrk rounds per system (env BENCH_ROUNDS)")
	fl.IntVar(&o.threads, "threads", 2, "wrk threads (keep at 1 or 2 on a 2-core machine)")
	fl.IntVar(&o.conns, "conns", 64, "wrk connections")
	fl.DurationVar(&o.detailLatency, "detail-latency", 20*time.Millisecond, "fake AnqiCMS latency on the detail path")
	fl.IntVar(&o.storm, "storm", 1000, "concurrent requests in the cold-key storm")
	fl.IntVar(&o.pollClients, "poll-clients", 200, "clients in the polling test")
	fl.DurationVar(&o.pollInterval, "poll-interval", 250*time.Millisecond, "interval between one client's polls")
	fl.DurationVar(&o.pollDuration, "poll-duration", envDuration("BENCH_POLL_DURATION", 10*time.Second), "length of the polling test per system (env BENCH_POLL_DURATION)")
	fl.DurationVar(&o.pollTTL, "poll-ttl", 2*time.Second, "cache.ttl (and nginx proxy_cache_valid) in the polling test")
	fl.StringVar(&o.readme, "readme", "", "README to update (default bench/README.md of this module)")
	fl.BoolVar(&o.write, "write", os.Getenv("BENCH_WRITE") != "0", "write the results into the README (env BENCH_WRITE=0 to skip)")
	fl.StringVar(&o.profile, "profile", envString("BENCH_PROFILE", "auto"), "CPU profile of anqi-edge L1 under wrk: auto (when L1 < 1.5x nginx), always, never (env BENCH_PROFILE)")
	fl.IntVar(&o.profileSeconds, "profile-seconds", 10, "length of the CPU profile")
	fl.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs, profile)")
	fl.BoolVar(&o.manyusers, "manyusers", false, "run the many-user workload (two anqi-edge replicas, then nginx) instead of the hot-key harness; prints its table")
	fl.IntVar(&o.mu.users, "mu-users", 5000, "many users: users, one order each")
	fl.DurationVar(&o.mu.interval, "mu-interval", 2*time.Second, "many users: each user's poll interval")
	fl.Float64Var(&o.mu.jitter, "mu-jitter", 0.2, "many users: poll interval jitter, ± fraction")
	fl.Float64Var(&o.mu.sendsPerSec, "mu-sends", 10, "many users: messages per second sent through the proxy to random orders")
	fl.Float64Var(&o.mu.adminPerSec, "mu-admin", 2, "many users: admin replies per second made behind the proxy (the fake's admin endpoint, a write to its database only); "+
		"above 0 the fake keeps its orders in a private mariadbd with binlog and both anqi-edge replicas read it ([cdc]); 0 = in-memory fake, no mariadbd")
	fl.DurationVar(&o.mu.warmup, "mu-warmup", 30*time.Second, "many users: polling before the measured window: the cold fill, spread over it (keep >= -mu-ttl for a steady state)")
	fl.DurationVar(&o.mu.duration, "mu-duration", envDuration("BENCH_MU_DURATION", 60*time.Second), "many users: measured window per system (env BENCH_MU_DURATION)")
	fl.DurationVar(&o.mu.ttl, "mu-ttl", 30*time.Second, "many users: anqi-edge cache.ttl and nginx proxy_cache_valid")
	fl.IntVar(&o.mu.workers, "mu-workers", 128, "many users: client goroutines (users are split among them)")
	fl.IntVar(&o.mu.messages, "mu-messages", 8, "many users: messages added to every order first (8 make the ~2.6 KB detail of a live order)")
	fl.DurationVar(&o.mu.staleAfter, "mu-stale-after", time.Second, "many users: a change committed this long before a read must show in it")
	fl.Func("edge-env", "`ANQI_EDGE_SECTION_KEY=value`: a config override for every anqi-edge this run starts (repeatable), e.g. ANQI_EDGE_REDIS_AUTOPIPELINE=false; "+
		"other ANQI_EDGE_* variables of the environment are not passed on", func(kv string) error {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "ANQI_EDGE_") {
			return fmt.Errorf("want ANQI_EDGE_SECTION_KEY=value, got %q", kv)
		}
		edgeEnv = append(edgeEnv, kv)
		return nil
	})
	if err := fl.Parse(os.Args[1:]); err != nil {
		return 2
	}
	check := o.check
	if o.manyusers {
		check = o.mu.check
	}
	if err := check(); err != nil {
		fmt.Fprintln(os.Stderr, "edgebench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := bench
	if o.manyusers {
		run = manyUsers
	}
	if err := run(ctx, o); err != nil {
		if ctx.Err() != nil {
			err = errInterrupted // not the wrk or dial error the interruption caused
		}
		fmt.Fprintln(os.Stderr, "edgebench:", err)
		return 1
	}
	return 0
}

func (o *options) check() error {
	switch {
	case o.duration < time.Second:
		return fmt.Errorf("-duration must be at least 1s, got %s", o.duration)
	case o.rounds < 1:
		return fmt.Errorf("-rounds must be at least 1, got %d", o.rounds)
	case o.threads < 1 || o.conns < o.threads:
		return fmt.Errorf("-threads must be >= 1 and <= -conns, got %d and %d", o.threads, o.conns)
	case o.storm < 1 || o.storm > 10000:
		return fmt.Errorf("-storm must be between 1 and 10000, got %d", o.storm)
	case o.pollClients < 1 || o.pollClients > 5000:
		return fmt.Errorf("-poll-clients must be between 1 and 5000, got %d", o.pollClients)
	case o.pollInterval <= 0 || o.pollTTL <= 0 || o.pollDuration < o.pollTTL:
		return fmt.Errorf("-poll-interval and -poll-ttl must be > 0 and -poll-duration >= -poll-ttl")
	case o.profile != "auto" && o.profile != "always" && o.profile != "never":
		return fmt.Errorf("-profile must be auto, always or never, got %q", o.profile)
	case o.profileSeconds < 1 || o.profileSeconds > 60:
		return fmt.Errorf("-profile-seconds must be between 1 and 60, got %d", o.profileSeconds)
	}
	return nil
}

func envDuration(key string, def time.Duration) time.Duration {
	if v := os.Getenv(key); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		if n, err := strconv.Atoi(v); err == nil { // plain seconds, as wrk takes them
			return time.Duration(n) * time.Second
		}
		fmt.Fprintf(os.Stderr, "edgebench: ignoring %s=%q (want a duration such as 5s)\n", key, v)
	}
	return def
}

func envInt(key string, def int) int {
	if v := os.Getenv(key); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		fmt.Fprintf(os.Stderr, "edgebench: ignoring %s=%q (want an integer)\n", key, v)
	}
	return def
}

func envString(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// tools holds the paths of the external programs, filled by needTools.
var tools = map[string]string{}

// needTools finds the external programs before anything starts.
func needTools() error {
	var missing []string
	for _, t := range []string{"wrk", "nginx", "redis-server", "go"} {
		p, err := harness.LookTool(t)
		if err != nil {
			missing = append(missing, t)
			continue
		}
		tools[t] = p
	}
	if len(missing) > 0 {
		return fmt.Errorf("not found: %s (run `make bench-deps`)", strings.Join(missing, ", "))
	}
	return nil
}

var started = time.Now()

// logf reports progress on stderr with the elapsed time.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
}
