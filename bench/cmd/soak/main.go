// Command soak runs anqi-edge for a long time under a steady, mixed load
// while its dependencies fail, and checks every answer. `make soak` runs it
// for SOAK_DURATION (default 15m); `go run ./cmd/soak -h` lists the knobs.
//
// What runs, all on 127.0.0.1: a redis-server of its own (--save ""
// --appendonly no, so a restart comes back empty), the fake AnqiCMS
// (anqicms/fake, in this process, answering the order detail after
// o.detailLatency as a real AnqiCMS takes a moment: a fill is then in flight
// long enough for sends and Redis restarts to land inside it), and two anqi-edge replicas built from
// this tree as separate processes sharing that Redis (one deployment: the
// same key prefix and pub/sub channel). Every o.redisEvery Redis is killed
// with SIGKILL and started again, empty, on the same port; every
// o.cmsEvery the fake AnqiCMS's listener and all its connections are closed
// and, after o.cmsDown, opened again on the same address (its store lives
// on, as AnqiCMS's database does).
//
// Load: o.users users, each with its own orders and a 30-day token, do one
// action every o.pace·U(0.5,1.5), alternating replicas: a detail read of
// one of their orders or (o.sendShare) a message/send to one. Some users
// also watch an order: o.sseWatchers hold an SSE stream, o.pollWatchers
// long-poll with the ETag of their last answer.
//
// What every answer is checked for (a failed check is a violation):
//
//   - No other user's data: an order in any answer (detail, long-poll, SSE
//     event) is the one asked for and its user_id is the reader's.
//   - Errors: outside AnqiCMS outage windows every answer is a 2xx (or a
//     long-poll's 304). A request whose [start, end] overlaps an outage
//     window (from just before the listener closes to when it listens
//     again) may instead get exactly HTTP 502 or 504 with the body
//     {"code":-1,"msg":"upstream unavailable"} (DESIGN §6); nothing else.
//     Redis outages are never an excuse for an error (§6: "never a 5xx
//     because of Redis"), and no request may go unanswered: the replicas
//     never go down.
//   - Read-your-writes, from DESIGN §4. A send answered code 0 has
//     invalidated the order before the answer left the replica: its L1
//     at once, Redis at once or, if Redis was out of reach, from a queue
//     replayed before that replica reads Redis again. So every later read
//     through THE SAME replica must show the message, always.
//     The other replica learns by pub/sub, published by the same Redis
//     script that invalidates. When both replicas reached Redis and heard
//     pub/sub around the send (a delivery takes milliseconds, while a
//     user's next action comes at least pace/2 later), its next read must
//     show the message too. Otherwise the message may never reach it, and
//     §4 bounds the lag by cache.memory.ttl (its L1's freshness) after the
//     writer's queue is replayed: such reads may miss the message until
//     cache.memory.ttl after the later of the send's answer and the end
//     of the trouble, and are counted as "allowed lags". "Out of reach"
//     is decided from outside, conservatively: (a) the send overlapped a
//     Redis outage the soak caused (kill .. restarted + o.redisSettle, the
//     time replicas take to close their breakers, replay their queues and
//     resubscribe), or (b) each replica's admin /metrics, scraped every
//     o.healthEvery, does not prove the opposite: unless the last scrape
//     before the send and the first after it show the same
//     anqi_edge_redis_errors_total, and every scrape from one to the other
//     shows the breaker closed, nothing queued and pub/sub up, on both
//     replicas, the send counts as out of reach (a Redis command times out
//     after redis.timeout, 100ms, whenever the machine is busy, with no
//     outage at all). The trouble ends at the first clean scrape of the
//     writer after the send. Other-replica misses are judged after the
//     run, when every scrape is in.
//     "Later read" means a detail read or long-poll started after the send
//     was answered; a long-poll 304 claims nothing changed since its
//     ETag, so the answer that ETag came from must show the message under
//     the same rules.
//   - SSE streams answer 200, carry only detail events of the reader's
//     order, and never go silent for 3 heartbeats.
//   - RSS (/proc/PID/status VmRSS) and goroutines (go_goroutines on the
//     admin /metrics) of each replica are flat: the average over the last
//     o.window is at most (1+o.flatRatio)× the average over the window that
//     starts at o.warmup (minute 2 of a full run) plus a small absolute
//     slack (o.rssSlack, o.goroutineSlack). Only growth fails.
//   - Each replica exits 0 on SIGTERM at the end.
//
// It prints a summary table and exits 1 on any violation, 2 when the soak
// itself could not run.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

type options struct {
	duration       time.Duration
	users          int
	ordersPerUser  int
	pace           time.Duration
	sendShare      float64
	detailLatency  time.Duration
	sseWatchers    int
	pollWatchers   int
	redisEvery     time.Duration
	redisDown      time.Duration
	redisSettle    time.Duration
	cmsEvery       time.Duration
	cmsDown        time.Duration
	warmup, window time.Duration
	sampleEvery    time.Duration
	healthEvery    time.Duration
	flatRatio      float64
	rssSlack       int64
	goroutineSlack float64
	keep           bool
	edge           edgeConfig
	out            io.Writer // the summary
	log            io.Writer // progress lines
}

func defaultOptions() options {
	return options{
		duration:       15 * time.Minute,
		users:          200,
		ordersPerUser:  2,
		pace:           1500 * time.Millisecond,
		sendShare:      0.2,
		detailLatency:  20 * time.Millisecond,
		sseWatchers:    20,
		pollWatchers:   20,
		redisEvery:     60 * time.Second,
		redisDown:      time.Second,
		redisSettle:    3 * time.Second,
		cmsEvery:       90 * time.Second,
		cmsDown:        3 * time.Second,
		warmup:         time.Minute,
		window:         time.Minute,
		sampleEvery:    5 * time.Second,
		healthEvery:    250 * time.Millisecond,
		flatRatio:      0.2,
		rssSlack:       16 << 20,
		goroutineSlack: 20,
		edge: edgeConfig{
			TTL: 2 * time.Second, MemTTL: time.Second, SWR: time.Second, StaleIfError: 3 * time.Second,
			UpstreamTimeout: 2 * time.Second, MaxWait: 10 * time.Second, Heartbeat: 5 * time.Second,
		},
		out: os.Stdout,
		log: os.Stderr,
	}
}

func main() {
	o := defaultOptions()
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "soak: SOAK_DURATION=%q: want a positive Go duration such as 15m\n", v)
			os.Exit(2)
		}
		o.duration = d
	}
	fs := flag.CommandLine
	fs.DurationVar(&o.duration, "duration", o.duration, "how long the load runs (env SOAK_DURATION)")
	fs.IntVar(&o.users, "users", o.users, "simulated users")
	fs.IntVar(&o.ordersPerUser, "orders", o.ordersPerUser, "orders per user")
	fs.DurationVar(&o.pace, "pace", o.pace, "mean time between two actions of one user")
	fs.Float64Var(&o.sendShare, "send-share", o.sendShare, "share of actions that send a message (the rest read)")
	fs.DurationVar(&o.detailLatency, "detail-latency", o.detailLatency, "the fake AnqiCMS's answer time for the order detail (widens the fill/invalidation races)")
	fs.IntVar(&o.sseWatchers, "sse-watchers", o.sseWatchers, "users that also hold an SSE stream on an order")
	fs.IntVar(&o.pollWatchers, "poll-watchers", o.pollWatchers, "users that also long-poll an order")
	fs.DurationVar(&o.redisEvery, "redis-every", o.redisEvery, "kill Redis (SIGKILL) and restart it empty this often")
	fs.DurationVar(&o.redisDown, "redis-down", o.redisDown, "how long Redis stays down")
	fs.DurationVar(&o.redisSettle, "redis-settle", o.redisSettle, "after a Redis restart, how long replicas may still be catching up (breaker, queue, resubscribe)")
	fs.DurationVar(&o.cmsEvery, "cms-every", o.cmsEvery, "stop and restart the fake AnqiCMS this often")
	fs.DurationVar(&o.cmsDown, "cms-down", o.cmsDown, "how long the fake AnqiCMS stays down")
	fs.DurationVar(&o.warmup, "warmup", o.warmup, "start of the baseline window for the flatness check")
	fs.DurationVar(&o.window, "window", o.window, "length of the baseline and the final window of the flatness check")
	fs.DurationVar(&o.sampleEvery, "sample-every", o.sampleEvery, "RSS and goroutine sampling interval")
	fs.DurationVar(&o.healthEvery, "health-every", o.healthEvery, "how often each replica's Redis state (errors, breaker, queue, pub/sub) is scraped")
	fs.Float64Var(&o.flatRatio, "flat-ratio", o.flatRatio, "allowed growth of RSS and goroutines, as a fraction of the baseline")
	fs.Int64Var(&o.rssSlack, "rss-slack", o.rssSlack, "allowed RSS growth in bytes on top of flat-ratio")
	fs.Float64Var(&o.goroutineSlack, "goroutine-slack", o.goroutineSlack, "allowed goroutine growth on top of flat-ratio")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, configs) even on success")
	fs.DurationVar(&o.edge.TTL, "ttl", o.edge.TTL, "replicas' cache.ttl")
	fs.DurationVar(&o.edge.MemTTL, "memory-ttl", o.edge.MemTTL, "replicas' cache.memory.ttl")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "soak: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, &o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if n := res.violations(); n > 0 {
		fmt.Fprintf(os.Stderr, "soak: %d violations; work directory kept: %s\n", n, res.dir)
		os.Exit(1)
	}
}
