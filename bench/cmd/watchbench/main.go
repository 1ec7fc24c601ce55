// Command watchbench compares polling an order's detail with watching it
// (long-poll, GET /api/communication/order/watch): N clients follow one order
// while a message is sent to it through anqi-edge every interval, and the
// program reports, per mode, the upstream detail calls AnqiCMS saw and how
// long each message took from its send to each client seeing it.
//
// Everything runs in this process on 127.0.0.1: the fake AnqiCMS (with a
// latency on the detail path), one anqi-edge replica (replica.New, the same
// code as the binary) and the clients; a private redis-server is started
// when one is on PATH (-redis auto). It is run by hand, not by `go test`:
//
//	cd bench && go run ./cmd/watchbench [-clients 200] [-duration 20s] [-interval 2s]
//
// and prints a Markdown table for bench/README.md ("Watch versus poll").
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/procattr"
	"anqi-edge/proxy"
	"anqi-edge/replica"
	"anqi-edge/watch"
)

const secret = "watchbench-secret"

type options struct {
	clients       int
	duration      time.Duration
	interval      time.Duration
	fastPoll      time.Duration
	detailLatency time.Duration
	maxWait       time.Duration
	redis         string
}

func main() {
	var o options
	flag.IntVar(&o.clients, "clients", 200, "clients following the order in each mode")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "how long each mode runs (one message per -interval)")
	flag.DurationVar(&o.interval, "interval", 2*time.Second, "message interval, and the pollers' interval")
	flag.DurationVar(&o.fastPoll, "fast-poll", 250*time.Millisecond, "also run pollers at this interval, for scale (0 = skip)")
	flag.DurationVar(&o.detailLatency, "detail-latency", 20*time.Millisecond, "fake AnqiCMS latency on the detail path")
	flag.DurationVar(&o.maxWait, "max-wait", 30*time.Second, "watch.max_wait")
	flag.StringVar(&o.redis, "redis", "auto", `"auto" (private redis-server if one is on PATH), "none" (L1 only) or host:port`)
	flag.Parse()
	if o.clients < 1 || o.duration < o.interval || o.interval <= 0 {
		fmt.Fprintln(os.Stderr, "watchbench: need -clients ≥ 1 and -duration ≥ -interval > 0")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "watchbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	f := fake.New(fake.Options{TokenSecret: secret, Latency: map[string]time.Duration{proxy.DetailPath: o.detailLatency}})
	fakeURL, err := f.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer f.Close()

	redisAddr, redisLabel, stopRedis, err := redisFor(ctx, o.redis)
	if err != nil {
		return err
	}
	defer stopRedis()

	cfg := config.Default()
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Upstream.URL = fakeURL
	cfg.Redis.Addrs = nil
	if redisAddr != "" {
		cfg.Redis.Addrs = []string{redisAddr}
		cfg.Redis.KeyPrefix = fmt.Sprintf("wb%d", time.Now().UnixNano())
	}
	cfg.Auth.TokenSecret = secret
	// Every client is the order's owner: one identity, so the per-identity
	// cap (default 16) must admit all of them.
	cfg.Watch.MaxPerIdentity = o.clients
	cfg.Watch.MaxWatchers = max(cfg.Watch.MaxWatchers, 2*o.clients)
	cfg.Watch.MaxWait = config.Duration{Duration: o.maxWait}
	if err := cfg.Validate(); err != nil {
		return err
	}
	srv, err := replica.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	base := "http://" + srv.Addr()

	modes := []struct {
		name     string
		interval time.Duration // 0 = long-poll
	}{
		{fmt.Sprintf("poll detail every %v", o.interval), o.interval},
		{"long-poll watch", 0},
	}
	if o.fastPoll > 0 {
		modes = append(modes, struct {
			name     string
			interval time.Duration
		}{fmt.Sprintf("poll detail every %v (for scale)", o.fastPoll), o.fastPoll})
	}
	_, orders := f.Seed(1, len(modes))
	token := f.Token(1, 30*24*time.Hour)

	started := time.Now()
	var results []result
	for i, m := range modes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(os.Stderr, "watchbench: %s, %d clients, %v ...\n", m.name, o.clients, o.duration)
		r, err := runMode(ctx, o, f, base, token, orders[i].ID, m.name, m.interval)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	report(os.Stdout, o, redisLabel, started, results)
	return nil
}

// result is one mode's outcome.
type result struct {
	name      string
	requests  int64 // answers the clients received
	errors    int64
	upstream  int64 // detail calls AnqiCMS saw while the mode ran
	messages  int
	delivered int // (client, message) pairs seen
	lat       []time.Duration
}

// runMode runs one mode on its own order: clients follow it (polling every
// interval, or long-polling when interval is 0) while a sender posts one
// message per o.interval through anqi-edge.
func runMode(ctx context.Context, o options, f *fake.Server, base, token string, order int64, name string, interval time.Duration) (result, error) {
	r := result{name: name}
	tr := &http.Transport{
		MaxConnsPerHost:     o.clients + 8,
		MaxIdleConnsPerHost: o.clients + 8,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: o.maxWait + 10*time.Second}

	// Warm the order (the initial fill is not counted).
	if _, _, err := get(ctx, client, base+proxy.DetailPath+"?id="+strconv.FormatInt(order, 10), token); err != nil {
		return r, fmt.Errorf("warm-up: %w", err)
	}

	var mu sync.Mutex
	sentAt := map[string]time.Time{}
	lat := make([]time.Duration, 0, o.clients*int(o.duration/o.interval))
	var delivered atomic.Int64
	seen := func(seen map[string]bool, texts []string) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, t := range texts {
			if at, ok := sentAt[t]; ok && !seen[t] {
				seen[t] = true
				lat = append(lat, now.Sub(at))
				delivered.Add(1)
			}
		}
	}

	calls0 := f.Calls(proxy.DetailPath)
	t0 := time.Now()
	messages := int(o.duration / o.interval)
	// Clients run one poll interval past the last message, so every poller
	// gets the chance to see it.
	end := t0.Add(time.Duration(messages)*o.interval + max(interval, o.interval))
	cctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()

	var wg sync.WaitGroup
	var reqs, errs atomic.Int64
	for i := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := map[string]bool{}
			if interval > 0 {
				poller(cctx, client, base, token, order, interval, time.Duration(i)*interval/time.Duration(o.clients), t0, end,
					func(texts []string) { reqs.Add(1); seen(mine, texts) }, func() { errs.Add(1) })
			} else {
				watcher(cctx, client, base, token, order,
					func(texts []string) { reqs.Add(1); seen(mine, texts) }, func() { reqs.Add(1) }, func() { errs.Add(1) })
			}
		}()
	}

	// The sender: message k at t0 + (k+½)·interval, between two polls of
	// the evenly spread pollers.
	var sendErr error
	for k := range messages {
		at := t0.Add(time.Duration(k)*o.interval + o.interval/2)
		if !sleepUntil(cctx, at) {
			break
		}
		text := fmt.Sprintf("watchbench %s #%d", name, k)
		mu.Lock()
		sentAt[text] = time.Now()
		mu.Unlock()
		if err := send(ctx, base, token, order, text); err != nil {
			sendErr = err
			break
		}
		r.messages++
	}
	wg.Wait()
	if sendErr != nil {
		return r, fmt.Errorf("send: %w", sendErr)
	}
	r.upstream = f.Calls(proxy.DetailPath) - calls0
	r.requests, r.errors = reqs.Load(), errs.Load()
	r.delivered = int(delivered.Load())
	slices.Sort(lat)
	r.lat = lat
	return r, nil
}

// poller GETs the detail every interval from t0+offset until end.
func poller(ctx context.Context, c *http.Client, base, token string, order int64, interval, offset time.Duration,
	t0, end time.Time, answer func([]string), failed func()) {
	u := base + proxy.DetailPath + "?id=" + strconv.FormatInt(order, 10)
	for k := 0; ; k++ {
		at := t0.Add(offset + time.Duration(k)*interval)
		if !at.Before(end) || !sleepUntil(ctx, at) {
			return
		}
		_, texts, err := get(ctx, c, u, token)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failed()
			continue
		}
		answer(texts)
	}
}

// watcher long-polls with the last ETag it saw until ctx ends.
func watcher(ctx context.Context, c *http.Client, base, token string, order int64,
	answer func([]string), notModified, failed func()) {
	etag := ""
	for ctx.Err() == nil {
		u := base + watch.WatchPath + "?id=" + strconv.FormatInt(order, 10)
		if etag != "" {
			u += "&etag=" + strings.Trim(etag, `"`)
		}
		resp, texts, err := get(ctx, c, u, token)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			failed()
			sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
		case resp.StatusCode == http.StatusNotModified:
			notModified()
		default:
			etag = resp.Header.Get("ETag")
			answer(texts)
		}
	}
}

// get sends GET u and returns the answer and the message texts of an
// order detail (code 0); any other answer is an error.
func get(ctx context.Context, c *http.Client, u, token string) (*http.Response, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("token", token)
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode == http.StatusNotModified {
		return resp, nil, nil
	}
	var env struct {
		Code int `json:"code"`
		Data struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &env) != nil || env.Code != 0 {
		return nil, nil, fmt.Errorf("GET %s: HTTP %d: %.200s", u, resp.StatusCode, body)
	}
	texts := make([]string, len(env.Data.Messages))
	for i, m := range env.Data.Messages {
		texts[i] = m.Content
	}
	return resp, texts, nil
}

// send posts a message to order through anqi-edge (which invalidates it).
func send(ctx context.Context, base, token string, order int64, text string) error {
	body, _ := json.Marshal(map[string]any{"comm_order_id": order, "content": text})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/communication/message/send", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env struct {
		Code int `json:"code"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &env) != nil || env.Code != 0 {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, b)
	}
	return nil
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// --- redis ------------------------------------------------------------------

// redisFor resolves -redis: an address to use (or "" for L1 only), a label
// for the report, and a stop function.
func redisFor(ctx context.Context, flagValue string) (addr, label string, stop func(), err error) {
	stop = func() {}
	switch flagValue {
	case "none":
		return "", "none (L1 only)", stop, nil
	case "auto":
		bin := lookRedis()
		if bin == "" {
			return "", "none (L1 only; no redis-server on PATH)", stop, nil
		}
		return startRedis(ctx, bin)
	default:
		return flagValue, flagValue, stop, nil
	}
}

func lookRedis() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, "redis-server")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// startRedis runs a private, non-persistent redis-server on a free port of
// 127.0.0.1 and waits until it answers PING.
func startRedis(ctx context.Context, bin string) (string, string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "watchbench-redis-")
	if err != nil {
		return "", "", nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--daemonize", "no", "--dir", dir)
	cmd.SysProcAttr = procattr.DieWithParent(syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", "", nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err := ping(addr); err == nil {
			break
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", "", nil, fmt.Errorf("redis-server on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, "private redis-server (L1 + Redis)", stop, nil
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "+PONG") {
		return errors.New("PING answered " + strings.TrimSpace(string(buf[:n])))
	}
	return nil
}

// --- report -----------------------------------------------------------------

func report(w io.Writer, o options, redisLabel string, started time.Time, results []result) {
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	fmt.Fprintf(w, "| machine | %d CPUs, %s, %s |\n", runtime.NumCPU(), cpuModel(), kernel())
	fmt.Fprintf(w, "| software | %s |\n", runtime.Version())
	fmt.Fprintf(w, "| command | `%s` |\n", strings.TrimSpace("cd bench && go run ./cmd/watchbench "+strings.Join(os.Args[1:], " ")))
	fmt.Fprintf(w, "| run | %s, load average %s at the end |\n", started.UTC().Format("2006-01-02 15:04 UTC"), loadAvg())
	fmt.Fprintf(w, "| set-up | one anqi-edge in this process, Redis: %s; fake AnqiCMS with %v detail latency; `cache.ttl` 30s, `auth.token_secret` set, `watch.max_wait` %v, `watch.max_per_identity` %d |\n",
		redisLabel, o.detailLatency, o.maxWait, o.clients)
	fmt.Fprintf(w, "| load | %d clients on one order (one order per mode), one message every %v for %v through `POST /api/communication/message/send` on anqi-edge |\n\n",
		o.clients, o.interval, o.duration)
	fmt.Fprintf(w, "| mode | answers to clients | errors | upstream detail calls | messages delivered | latency p50 | p95 | max |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d / %d | %s | %s | %s |\n", r.name, r.requests, r.errors, r.upstream,
			r.delivered, r.messages*o.clients, pct(r.lat, 0.5), pct(r.lat, 0.95), pct(r.lat, 1))
	}
}

func pct(sorted []time.Duration, p float64) string {
	if len(sorted) == 0 {
		return "-"
	}
	d := sorted[int(p*float64(len(sorted)-1))]
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return "Linux " + strings.TrimSpace(string(b))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
