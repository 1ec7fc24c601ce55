package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

const (
	readmeBegin = "<!-- cdcbench:begin (written by `make bench-cdc`) -->"
	readmeEnd   = "<!-- cdcbench:end -->"
	targetP99   = 100 * time.Millisecond
)

// rank is the q-quantile (nearest rank) of a mode's (client, change)
// pairs, counting the pairs never served within the drain as slower than
// all: ok is false when the quantile falls among them.
func (m *modeResult) rank(q float64) (time.Duration, bool) {
	if m.expected == 0 {
		return 0, false
	}
	i := int(q*float64(m.expected)+0.999999) - 1
	i = min(max(i, 0), m.expected-1)
	if i >= len(m.delays) {
		return 0, false
	}
	return m.delays[i], true
}

func (m *modeResult) cell(q float64, drain time.Duration) string {
	d, ok := m.rank(q)
	if !ok {
		return fmt.Sprintf("> %s (unseen)", drain)
	}
	return ms(d)
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

// cdcVerdict says whether anqi-edge with CDC met the target,
// p99 ≤ 100 ms from commit to served, for the customers who watch (SSE,
// long-poll): they are served the moment the change is. A poller's delay
// also holds the wait for its next poll (up to -poll) by construction, so
// its row is shown but not judged.
func cdcVerdict(res []result) (string, bool) {
	for _, r := range res {
		if r.sys.key != "cdc" {
			continue
		}
		met := true
		var parts []string
		for _, mode := range []string{modeSSE, modeLongPoll} {
			m := r.byMode[mode]
			if m == nil {
				continue
			}
			d, ok := m.rank(0.99)
			if !ok || d > targetP99 {
				met = false
			}
			parts = append(parts, fmt.Sprintf("%s %s", mode, m.cell(0.99, 0)))
		}
		if len(parts) == 0 {
			return "", false
		}
		word := "met"
		if !met {
			word = "NOT met"
		}
		return fmt.Sprintf("Target commit-to-visible p99 ≤ 100 ms with CDC (watchers): **%s** (p99 %s). "+
			"Polling rows include the wait for the next poll (up to the interval) by construction.",
			word, strings.Join(parts, ", ")), met
	}
	return "", false
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s/%s, %s", cpu, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// renderMarkdown is the README block: how it was run, the table, the verdict.
func renderMarkdown(o options, res []result, cmd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run `%s` on %s UTC; %s.\n", cmd, time.Now().UTC().Format("2006-01-02 15:04"), machine())
	fmt.Fprintf(&b, "Per system: %d clients on %d orders, %.4g admin replies/s for %s, polling every %s, drain %s.\n\n",
		o.clients, o.orders, o.rate, o.duration, o.poll, o.drain)
	b.WriteString("| system | clients | changes seen / expected | p50 | p99 | max | upstream detail calls |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|\n")
	for _, r := range res {
		for _, mode := range r.sys.modes {
			m := r.byMode[mode]
			if m == nil {
				continue
			}
			maxCell := "—"
			if len(m.delays) > 0 {
				maxCell = ms(m.delays[len(m.delays)-1])
				if len(m.delays) < m.expected {
					maxCell = fmt.Sprintf("> %s (unseen)", o.drain)
				}
			}
			fmt.Fprintf(&b, "| %s | %d × %s | %d / %d | %s | %s | %s | %d |\n",
				r.sys.label, m.clients, mode, len(m.delays), m.expected,
				m.cell(0.50, o.drain), m.cell(0.99, o.drain), maxCell, r.upstream)
		}
	}
	b.WriteString("\n")
	if v, _ := cdcVerdict(res); v != "" {
		b.WriteString(v + "\n")
	}
	for _, r := range res {
		fmt.Fprintf(&b, "\n%s: %d admin replies, admin endpoint p50 %s (commit = its answer); load average %s → %s.",
			r.sys.label, r.commits, ms(r.adminP50), r.load[0], r.load[1])
	}
	b.WriteString("\n")
	for _, r := range res {
		if r.sys.key != "cdc" {
			continue
		}
		b.WriteString("\nWhere the CDC delay goes (stages timed from outside anqi-edge, see `probe.go`):\n\n")
		b.WriteString("| stage | samples | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n")
		row := func(name string, ds []time.Duration) {
			if len(ds) == 0 {
				fmt.Fprintf(&b, "| %s | 0 | — | — | — |\n", name)
				return
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", name, len(ds),
				ms(percentile(ds, 0.5)), ms(percentile(ds, 0.99)), ms(percentile(ds, 1)))
		}
		row("commit → row event read from the binlog (anqi-edge's `cdc` reader inside cdcbench; < 0: read before the admin endpoint answered)", r.binlog)
		row("refill: the fake AnqiCMS's detail answer (reload from MariaDB + JSON)", r.upstreamTime)
		for _, mode := range []string{modeSSE, modeLongPoll, modePoll} {
			if ds := r.afterBinlog[mode]; len(ds) > 0 {
				row("binlog read → served to a "+mode+" client (invalidation, pub/sub, refill, write)", ds)
			}
		}
		row("commit → first refill request at AnqiCMS (anqi-edge's binlog read, invalidation, pub/sub, dispatch), per change", r.toRefill)
		row("that refill's answer, per change", r.refillTook)
		for _, mode := range []string{modeSSE, modeLongPoll} {
			if ds := r.delivery[mode]; len(ds) > 0 {
				row("refill answered → served to a "+mode+" client (write, wake-up, client read)", ds)
			}
		}
	}
	return b.String()
}

// writeReadme replaces the block between the cdcbench markers in path.
func writeReadme(path, md string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, readmeBegin), strings.Index(s, readmeEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q … %q block", path, readmeBegin, readmeEnd)
	}
	s = s[:i+len(readmeBegin)] + "\n" + md + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
