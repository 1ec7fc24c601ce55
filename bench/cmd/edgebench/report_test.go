package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const wrkSample = `Running 1s test @ http://127.0.0.1:38123/__status/404
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   152.14us  502.21us   7.70ms   95.80%
    Req/Sec    57.43k    11.78k   69.03k    81.82%
  Latency Distribution
     50%   51.00us
     75%   72.00us
     90%  166.00us
     99%    2.44ms
  62735 requests in 1.10s, 8.68MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 62735
Requests/sec:  57059.31
Transfer/sec:      7.89MB
`

func TestParseWrk_ReadsRateLatencyAndErrors(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS != 57059.31 {
		t.Errorf("RPS = %v, want 57059.31", r.RPS)
	}
	if r.P50 != 51*time.Microsecond {
		t.Errorf("P50 = %v, want 51µs", r.P50)
	}
	if r.P99 != 2440*time.Microsecond {
		t.Errorf("P99 = %v, want 2.44ms", r.P99)
	}
	if r.Requests != 62735 || r.Non2xx != 62735 || r.SockErrs != 6 {
		t.Errorf("requests %d, non-2xx %d, socket errors %d; want 62735, 62735, 6", r.Requests, r.Non2xx, r.SockErrs)
	}
	if want := 8.68 * (1 << 20); r.BytesRead < want-1 || r.BytesRead > want+1 {
		t.Errorf("BytesRead = %v, want %v", r.BytesRead, want)
	}
}

func TestParseWrk_RejectsAReportWithoutNumbers(t *testing.T) {
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Fatal("parseWrk accepted a failed run")
	}
}

func TestParseWrkDuration_ReadsEveryUnit(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"812.00us": 812 * time.Microsecond,
		"1.50ms":   1500 * time.Microsecond,
		"2.01s":    2010 * time.Millisecond,
		"1.00m":    time.Minute,
	} {
		got, err := parseWrkDuration(in)
		if err != nil || got != want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseWrkDuration("5 parsecs"); err == nil {
		t.Error("parseWrkDuration accepted an unknown unit")
	}
}

func TestReplaceBlock_KeepsEverythingOutsideTheMarkers(t *testing.T) {
	doc := "# Benchmarks\n\nintro\n\n" + beginMarker + "\nold numbers\n" + endMarker + "\n\n## Micro-benchmarks\n\nkept\n"
	got, err := replaceBlock(doc, "new numbers\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\nintro\n\n" + beginMarker + "\nnew numbers\n" + endMarker + "\n\n## Micro-benchmarks\n\nkept\n"
	if got != want {
		t.Fatalf("replaceBlock:\n%s\nwant:\n%s", got, want)
	}
	again, _ := replaceBlock(got, "new numbers\n")
	if again != got {
		t.Fatal("replacing with the same block changed the document")
	}
}

func TestReplaceBlock_AppendsMarkersWhenMissing(t *testing.T) {
	got, err := replaceBlock("# Benchmarks\n\n## Micro-benchmarks\nkept", "numbers")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "# Benchmarks\n\n## Micro-benchmarks\nkept\n") ||
		!strings.Contains(got, beginMarker+"\nnumbers\n"+endMarker) {
		t.Fatalf("replaceBlock appended badly:\n%s", got)
	}
}

func TestReplaceBlock_RefusesMarkersOutOfOrder(t *testing.T) {
	if _, err := replaceBlock(endMarker+"\n"+beginMarker, "x"); err == nil {
		t.Fatal("replaceBlock accepted an end marker before the begin marker")
	}
	if _, err := replaceBlock("text "+beginMarker, "x"); err == nil {
		t.Fatal("replaceBlock accepted a begin marker without an end marker")
	}
}

func TestUpdateReadme_CreatesTheFileWhenAbsent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench", "README.md")
	if err := updateReadme(path, "numbers"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "# Benchmarks\n") || !strings.Contains(string(b), "numbers") {
		t.Fatalf("new README:\n%s", b)
	}
}

func TestMedian_TakesTheMiddleOrTheMeanOfTheTwoMiddles(t *testing.T) {
	id := func(f float64) float64 { return f }
	if got := median([]float64{3, 1, 2}, id); got != 2 {
		t.Errorf("median(3,1,2) = %v", got)
	}
	if got := median([]float64{4, 1, 3, 2}, id); got != 2.5 {
		t.Errorf("median(4,1,3,2) = %v", got)
	}
	if got := median([]float64{}, id); got != 0 {
		t.Errorf("median() = %v", got)
	}
}

func TestProfileShares_ReadsCumulativePercentByFunction(t *testing.T) {
	out := `Duration: 10s, Total samples = 5.85s (58.50%)
      flat  flat%   sum%        cum   cum%
         0     0%     0%      5.35s 91.45%  github.com/valyala/fasthttp.(*Server).serveConn
     0.01s  0.17% 52.48%      1.12s 19.15%  anqi-edge/proxy.(*Server).handle
     0.03s  0.51% 74.53%      0.06s  1.03%  github.com/maypok86/otter/v2/internal/hashmap.(*Map[go.shape.struct { Order int64; Sum [32]uint8 },go.shape.int]).Get
`
	s := profileShares(out)
	if s[shareHandler] != 19.15 || s[shareServeConn] != 91.45 {
		t.Fatalf("shares = %v", s)
	}
	if s["github.com/maypok86/otter/v2/internal/hashmap.(*Map[go.shape.struct { Order int64; Sum [32]uint8 },go.shape.int]).Get"] != 1.03 {
		t.Fatalf("a function name with spaces was not read: %v", s)
	}
	p := &cpuProfile{share: s}
	if sum := p.summary(); !strings.Contains(sum, "19.1%") || !strings.Contains(sum, "1.24×") {
		t.Fatalf("summary does not state the handler share and its Amdahl bound:\n%s", sum)
	}
}

// hotRun is a hot-key result with one wrk round per rate, each 10 s long
// with the given server CPU.
func hotRun(name, label string, cpu time.Duration, rates ...float64) *hotResult {
	h := &hotResult{target: target{name: name, label: label}, bodyBytes: 2600}
	for _, r := range rates {
		h.rounds = append(h.rounds, wrkResult{RPS: r, P50: 300 * time.Microsecond, P99: 2 * time.Millisecond,
			Requests: int64(r * 10), BytesRead: r * 10 * 2900, Wall: 10 * time.Second, ServerCPU: cpu, ClientCPU: 5 * time.Second})
	}
	return h
}

func TestMarkdown_HotKeyTableHasTheCeilingRowAndTheRatioToIt(t *testing.T) {
	r := &results{
		opts: options{duration: 10 * time.Second, rounds: 3, threads: 2, conns: 64},
		hot: []*hotResult{
			hotRun("l1", "anqi-edge L1 only", 20*time.Second, 47000, 48000, 49000),
			hotRun("l1redis", "anqi-edge L1 + Redis", 20*time.Second, 45000, 46000, 47000),
			hotRun("redis", "anqi-edge Redis only", 20*time.Second, 30000, 31000, 32000),
			hotRun("nginx", "nginx proxy_cache", 20*time.Second, 40000, 40000, 40000),
			hotRun("direct", "direct (fake AnqiCMS, no cache)", 20*time.Second, 3000, 3000, 3000),
			hotRun("ceiling", ceilingLabel, 19*time.Second, 50000, 50000, 50000),
			hotRun("bare", bareLabel, 18*time.Second, 60000, 60000, 60000),
		},
	}
	md := r.markdown()
	row := func(label string) []string {
		for line := range strings.SplitSeq(md, "\n") {
			if strings.HasPrefix(line, "| "+label+" |") {
				return strings.Split(line, " | ")
			}
		}
		t.Fatalf("no table row for %q in:\n%s", label, md)
		return nil
	}
	head := row("system")
	col := -1
	for i, c := range head {
		if c == "vs ceiling" {
			col = i
		}
	}
	if col < 0 {
		t.Fatalf("hot-key table has no \"vs ceiling\" column: %q", head)
	}
	if got := row(ceilingLabel); got[1] != "50000" || got[col] != "1.00×" {
		t.Errorf("ceiling row %q: want 50000 req/s and 1.00× of itself", got)
	}
	if got := row("anqi-edge L1 only")[col]; got != "0.96×" {
		t.Errorf("L1 vs ceiling = %q, want 0.96× (48000 / 50000)", got)
	}
	for _, want := range []string{
		"**anqi-edge L1 hits / bare fasthttp ceiling: 0.96×** (per round: 0.94×, 0.96×, 0.98×)",
		"per CPU-second **0.91×** (41.7 µs vs 38.0 µs", // 24000 vs 26316 req per CPU-second
		"Target ≥ 0.9×: **met**",
		// The reference without timeouts: 48000 / 60000 req/s; 24000 vs 33333 req per CPU-second.
		"Against the same server without timeouts (the reference row) L1 reaches 0.80×, 0.72× per CPU-second (30.0 µs of server CPU per request).",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}

	// 20 s of CPU for 310,000 Redis-tier hits (median round) vs 480,000 L1 hits: 1.55×.
	if want := "**anqi-edge Redis-tier hit / L1 hit, server CPU per request: 1.55×** (64.5 µs vs 41.7 µs"; !strings.Contains(md, want) {
		t.Errorf("report lacks %q:\n%s", want, md)
	}
	if !strings.Contains(md, "Target ≤ 1.3× (DESIGN §8): **NOT met**, missed by 19%") {
		t.Errorf("a Redis-tier hit at 1.55× of L1's CPU is not reported as missing the target:\n%s", md)
	}
	if got := row("anqi-edge Redis only"); !slices.Contains(got, "64.5 µs") {
		t.Errorf("Redis-only row %q lacks the server CPU per request", got)
	}

	// Below the target, the line says so.
	r.hot[0] = hotRun("l1", "anqi-edge L1 only", 20*time.Second, 40000, 40000, 40000)
	if md := r.markdown(); !strings.Contains(md, "ceiling: 0.80×**") || !strings.Contains(md, "Target ≥ 0.9×: **NOT met**") {
		t.Errorf("an L1 at 0.80× of the ceiling is not reported as missing the target:\n%s", md)
	}
}
