package main

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// Request kinds, in the order the summary lists them.
const (
	kindDetail   = "detail"
	kindSend     = "send"
	kindLongPoll = "watch (long-poll)"
	kindSSE      = "events (SSE connect)"
)

var kinds = []string{kindDetail, kindSend, kindLongPoll, kindSSE}

// Violation types.
const (
	vLeak        = "other user's data"
	vRYW         = "read misses own write"
	vErrOutside  = "error outside outage windows"
	vErrInWindow = "error inside a window that is not the documented 502/504"
	vTransport   = "connection error (replicas never go down)"
	vAppError    = "code != 0 on a read or send of an own order"
	vBadBody     = "unreadable answer"
	vSSE         = "SSE stream error or stall"
	vFlat        = "RSS or goroutines not flat"
	vExit        = "replica exit status after SIGTERM"
)

type kindStats struct {
	requests  int64
	ok        int64
	inWindow  int64 // documented 502/504 inside an AnqiCMS outage
	errors    int64 // everything else that was not ok
	latencies []time.Duration
}

type violation struct {
	count    int64
	examples []string
}

// recorder collects what every client saw. One mutex: the load is a few
// hundred requests per second.
type recorder struct {
	start time.Time

	mu         sync.Mutex
	kinds      map[string]*kindStats
	xcache     map[string]int64
	errClasses map[string][2]int64 // class -> [inside windows, outside]
	violations map[string]*violation
	rywChecks  int64 // (read, acked message) pairs checked
	rywLagged  int64 // of those: missing on the other replica within the allowed lag
	sseEvents  int64
	sends      int64 // acked sends
	bodyBytes  int64 // detail answers' body bytes since the last sample
	bodyN      int64
}

func newRecorder() *recorder {
	return &recorder{start: time.Now(), kinds: map[string]*kindStats{}, xcache: map[string]int64{},
		errClasses: map[string][2]int64{}, violations: map[string]*violation{}}
}

func (r *recorder) kind(k string) *kindStats {
	s := r.kinds[k]
	if s == nil {
		s = &kindStats{}
		r.kinds[k] = s
	}
	return s
}

// answered records one request that got an HTTP answer.
func (r *recorder) answered(k string, d time.Duration, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.kind(k)
	s.requests++
	s.latencies = append(s.latencies, d)
	switch outcome {
	case "ok":
		s.ok++
	case "window":
		s.inWindow++
	default:
		s.errors++
	}
}

// failed records a request that got no HTTP answer.
func (r *recorder) failed(k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.kind(k)
	s.requests++
	s.errors++
}

func (r *recorder) errClass(class string, inWindow bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.errClasses[class]
	if inWindow {
		c[0]++
	} else {
		c[1]++
	}
	r.errClasses[class] = c
}

// violate records a broken promise with a short description of the case.
func (r *recorder) violate(typ, format string, args ...any) {
	r.violateAt(time.Now(), typ, format, args...)
}

// violateAt records a violation seen at a given moment.
func (r *recorder) violateAt(at time.Time, typ, format string, args ...any) {
	msg := fmt.Sprintf("t=%.1fs ", at.Sub(r.start).Seconds()) + fmt.Sprintf(format, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.violations[typ]
	if v == nil {
		v = &violation{}
		r.violations[typ] = v
	}
	v.count++
	if len(v.examples) < 5 {
		v.examples = append(v.examples, msg)
	}
}

func (r *recorder) add(p *int64, n int64) {
	r.mu.Lock()
	*p += n
	r.mu.Unlock()
}

func (r *recorder) totalViolations() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, v := range r.violations {
		n += v.count
	}
	return n
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedLatencies(s *kindStats) []time.Duration {
	l := slices.Clone(s.latencies)
	slices.Sort(l)
	return l
}

// takeBodyAvg returns the average detail body size since the last call.
func (r *recorder) takeBodyAvg() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bodyN == 0 {
		return 0
	}
	a := float64(r.bodyBytes) / float64(r.bodyN)
	r.bodyBytes, r.bodyN = 0, 0
	return a
}
