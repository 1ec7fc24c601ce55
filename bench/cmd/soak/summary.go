package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// print writes the summary as Markdown tables (readable in a terminal and
// pasted as is into bench/README.md).
func (r *result) print(w io.Writer) {
	o, rec := r.o, r.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	cmsN, redisN := r.win.counts()
	fmt.Fprintf(w, "\nanqi-edge soak: %v from %s to %s; %d users × %d orders, one action per ~%v (%.0f%% sends), %d SSE + %d long-poll watchers; 2 replicas (cache.ttl %v, cache.memory.ttl %v, stale_if_error %v)\n",
		o.duration, r.started.UTC().Format("2006-01-02 15:04:05Z"), r.ended.UTC().Format("15:04:05Z"),
		o.users, o.ordersPerUser, o.pace, 100*o.sendShare, o.sseWatchers, o.pollWatchers, o.edge.TTL, o.edge.MemTTL, o.edge.StaleIfError)
	fmt.Fprintf(w, "fake AnqiCMS answers the detail after %v\n", o.detailLatency)
	fmt.Fprintf(w, "faults: Redis SIGKILLed and restarted empty %d× (every %v, down %v); AnqiCMS stopped and restarted %d× (every %v, down %v)\n\n",
		redisN, o.redisEvery, o.redisDown, cmsN, o.cmsEvery, o.cmsDown)

	fmt.Fprintln(w, "| requests | total | ok | 502/504 in windows | other errors | p50 | p99 |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, k := range kinds {
		s := rec.kinds[k]
		if s == nil {
			s = &kindStats{}
		}
		l := sortedLatencies(s)
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %s | %s |\n", k, s.requests, s.ok, s.inWindow, s.errors,
			fmtDur(percentile(l, 0.50)), fmtDur(percentile(l, 0.99)))
	}
	var xc []string
	for _, k := range sortedKeys(rec.xcache) {
		xc = append(xc, fmt.Sprintf("%s %d", k, rec.xcache[k]))
	}
	fmt.Fprintf(w, "\ndetail X-Cache: %s; SSE detail events received: %d; SSE streams ended by a replica: %d\n", strings.Join(xc, ", "), rec.sseEvents, r.sseEnded)
	fmt.Fprintf(w, "unsolicited answers on idle client connections (no request waiting; not a violation): %d\n", r.unsolicited)
	fmt.Fprintf(w, "read-your-writes: %d sends answered code 0; %d (read, own earlier message) checks; %d allowed lags (other replica, send while a replica was short of Redis)\n",
		rec.sends, rec.rywChecks, rec.rywLagged)
	fmt.Fprintf(w, "Redis state scrapes: %d of edge-a, %d of edge-b, %d failed\n\n", len(r.health.points[0]), len(r.health.points[1]), r.healthErrs)

	fmt.Fprintln(w, "| errors by class | inside outage windows | outside |")
	fmt.Fprintln(w, "|---|---:|---:|")
	if len(rec.errClasses) == 0 {
		fmt.Fprintln(w, "| (none) | 0 | 0 |")
	}
	for _, k := range sortedKeys(rec.errClasses) {
		c := rec.errClasses[k]
		fmt.Fprintf(w, "| %s | %d | %d |\n", strings.ReplaceAll(k, "|", `\|`), c[0], c[1])
	}

	fmt.Fprintf(w, "\n| replica | metric | minute-2 avg (%v..%v) | last-%v avg | limit (%.0f%% + slack) | flat |\n", o.warmup, o.warmup+o.window, o.window, 100*o.flatRatio)
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
	for _, f := range r.flat {
		verdict, limit := "yes", fmt.Sprintf("%.1f", f.limit)
		if !f.ok {
			verdict = "NO"
		}
		if f.info {
			verdict, limit = "(not judged)", "-"
		}
		fmt.Fprintf(w, "| %s | %s | %.1f (%d samples) | %.1f (%d samples) | %s | %s |\n", f.replica, f.metric, f.base, f.baseN, f.end, f.endN, limit, verdict)
	}
	if r.sampleErrs > 0 {
		fmt.Fprintf(w, "(%d samples failed; see the log)\n", r.sampleErrs)
	}

	var total int64
	for _, v := range rec.violations {
		total += v.count
	}
	fmt.Fprintf(w, "\nviolations: %d\n", total)
	for _, k := range sortedKeys(rec.violations) {
		v := rec.violations[k]
		fmt.Fprintf(w, "- %s: %d\n", k, v.count)
		for _, e := range v.examples {
			fmt.Fprintf(w, "    %s\n", e)
		}
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
