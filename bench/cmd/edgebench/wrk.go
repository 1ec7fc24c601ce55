package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what edgebench reads from wrk's report.
type wrkResult struct {
	RPS       float64
	P50, P99  time.Duration
	Requests  int64
	BytesRead float64 // total, as wrk reports it ("45.67MB read")
	Non2xx    int64
	SockErrs  int64 // connect + read + write + timeout
	Raw       string

	// Filled by runWrk and the caller, not parsed.
	Wall      time.Duration // wrk's run time
	ClientCPU time.Duration // wrk's user + system CPU
	ServerCPU time.Duration // the system under test's CPU during the run (0 = unknown)
	SideCPU   time.Duration // CPU of the system's helper (redis-server for Redis-tier hits), 0 = none
}

// runWrk runs wrk with the harness's fixed shape against url.
func runWrk(ctx context.Context, threads, conns int, d time.Duration, token, url string) (wrkResult, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	args := []string{
		"-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(secs) + "s",
		"--latency", "-H", "token: " + token, url,
	}
	// Bounded: wrk stops itself after -d; the context adds a hard stop.
	c, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(c, tools["wrk"], args...)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(t0)
	if err != nil {
		return wrkResult{Raw: string(out)}, fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	r.Wall = wall
	r.ClientCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

// parseWrk reads wrk 4's text report.
func parseWrk(out string) (wrkResult, error) {
	r := wrkResult{Raw: out}
	inDist := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Latency Distribution"):
			inDist = true
		case inDist && len(f) == 2 && strings.HasSuffix(f[0], "%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			switch f[0] {
			case "50%", "50.000%":
				r.P50 = d
			case "99%", "99.000%":
				r.P99 = d
			}
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("Requests/sec %q: %v", f[1], err)
			}
			r.RPS = v
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			inDist = false
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("request count %q: %v", f[0], err)
			}
			r.Requests = n
			r.BytesRead, _ = parseWrkBytes(strings.TrimSuffix(f[4], ","))
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			r.Non2xx, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 12, write 0, timeout 3
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.SockErrs += n
			}
		}
	}
	if r.RPS == 0 || r.P99 == 0 || r.Requests == 0 {
		return r, errors.New("could not read Requests/sec, the 99% latency and the request count from wrk's report")
	}
	return r, nil
}

// parseWrkDuration reads wrk's latency format: "812.00us", "1.23ms", "2.01s", "1.50m".
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("latency %q: %v", s, err)
			}
			return time.Duration(math.Round(f * float64(u.unit))), nil
		}
	}
	return 0, fmt.Errorf("latency %q: unknown unit", s)
}

// parseWrkBytes reads wrk's size format: "512B", "45.67KB", "1.23MB", "2.00GB" (powers of 1024).
func parseWrkBytes(s string) (float64, error) {
	mult := map[string]float64{"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
	for suf, m := range mult {
		if v, ok := strings.CutSuffix(s, suf); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f * m, err
		}
	}
	v, _ := strings.CutSuffix(s, "B")
	return strconv.ParseFloat(v, 64)
}

// wrkVersion is the first line of `wrk -v`.
func wrkVersion() string {
	out, _ := commandOutput(tools["wrk"], "-v")
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	line = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), "Copyright (C) 2012 Will Glozer"))
	return line
}

// commandOutput runs a short version query, bounded to 10 s.
func commandOutput(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}
