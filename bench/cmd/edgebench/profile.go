package main

import (
	"fmt"
	"strconv"
	"strings"
)

// cpuProfile is a CPU profile of anqi-edge L1 under the hot-key load.
type cpuProfile struct {
	rps      float64            // wrk's rate while profiling
	top, cum string             // go tool pprof -top, by flat and by cumulative time
	share    map[string]float64 // cum% by function, for the buckets below
}

// Functions whose cumulative share explains where anqi-edge's CPU goes.
const (
	shareHandler   = "anqi-edge/proxy.(*Server).handle"
	shareDetail    = "anqi-edge/proxy.(*Detail).Serve"
	shareIdentify  = "anqi-edge/anqicms.(*Identifier).Identify"
	shareRespond   = "anqi-edge/proxy.(*Detail).respond"
	shareRequestID = "anqi-edge/proxy.requestID"
	shareWrite     = "syscall.write"
	shareRead      = "syscall.read"
	shareDeadline  = "internal/poll.setDeadlineImpl"
	shareSchedule  = "runtime.schedule"
	shareTimeNow   = "time.Now"
	shareGC        = "runtime.gcBgMarkWorker"
	shareServeConn = "github.com/valyala/fasthttp.(*Server).serveConn"
	shareTiersGet  = "anqi-edge/cache.(*Tiers).GetAt"
	shareRedisGet  = "anqi-edge/cache.(*Redis).Get"
	shareUnmarshal = "anqi-edge/cache.UnmarshalEntry"
	shareMallocgc  = "runtime.mallocgc"
)

// profileShares reads the cum% column of `go tool pprof -top -cum`.
func profileShares(out string) map[string]float64 {
	m := map[string]float64{}
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[4], "%") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64)
		if err != nil {
			continue
		}
		m[strings.Join(f[5:], " ")] = v
	}
	return m
}

// summary says where the CPU went and what that bounds.
func (p *cpuProfile) summary() string {
	s := p.share
	var b strings.Builder
	fmt.Fprintf(&b, "Where anqi-edge L1's CPU went (cumulative share of its samples, %.0f req/s while profiling):\n\n", p.rps)
	fmt.Fprintf(&b, "| part | share |\n|---|---:|\n")
	rows := []struct{ label, fn string }{
		{"kernel: `write(2)` of responses", shareWrite},
		{"kernel: `read(2)` of requests", shareRead},
		{"connection deadlines (`SetReadDeadline`/`SetWriteDeadline` per request)", shareDeadline},
		{"Go scheduler (`runtime.schedule`)", shareSchedule},
		{"garbage collector (`runtime.gcBgMarkWorker`)", shareGC},
		{"all of fasthttp's connection loop (`serveConn`, includes the rows above it and the handler)", shareServeConn},
		{"**anqi-edge handler** (`proxy.(*Server).handle`)", shareHandler},
		{"— detail path (`proxy.(*Detail).Serve`)", shareDetail},
		{"— identity: the token's remembered verdict (`anqicms.(*Identifier).Identify`)", shareIdentify},
		{"— writing the cached answer (`proxy.(*Detail).respond`)", shareRespond},
		{"— request id (`proxy.requestID`)", shareRequestID},
		{"`time.Now` (everywhere)", shareTimeNow},
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.1f%% |\n", r.label, s[r.fn])
	}
	if h := s[shareHandler]; h > 0 && h < 100 {
		fmt.Fprintf(&b, "\nThe handler is %.1f%% of anqi-edge's CPU: even a handler that cost nothing would make the same process serve at most "+
			"%.2f× as many hits per CPU-second (Amdahl). The rest is the kernel's loopback TCP, fasthttp and the Go runtime.\n", h, 100/(100-h))
	}
	return b.String()
}

// redisSummary says where a Redis-tier hit's CPU went.
func (p *cpuProfile) redisSummary() string {
	s := p.share
	var b strings.Builder
	fmt.Fprintf(&b, "Where anqi-edge Redis-only's CPU went (cumulative share of its samples, %.0f req/s while profiling):\n\n", p.rps)
	fmt.Fprintf(&b, "| part | share |\n|---|---:|\n")
	rows := []struct{ label, fn string }{
		{"kernel: `write(2)` (responses and Redis commands)", shareWrite},
		{"kernel: `read(2)` (requests and Redis replies)", shareRead},
		{"Go scheduler (`runtime.schedule`)", shareSchedule},
		{"allocation (`runtime.mallocgc`)", shareMallocgc},
		{"garbage collector (`runtime.gcBgMarkWorker`)", shareGC},
		{"**anqi-edge handler** (`proxy.(*Server).handle`)", shareHandler},
		{"— cache tiers (`cache.(*Tiers).GetAt`)", shareTiersGet},
		{"— — Redis read: MGET round trip and decode (`cache.(*Redis).Get`)", shareRedisGet},
		{"— — — entry decode (`cache.UnmarshalEntry`)", shareUnmarshal},
		{"— writing the answer (`proxy.(*Detail).respond`)", shareRespond},
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.1f%% |\n", r.label, s[r.fn])
	}
	return b.String()
}
