package deploy_test

// The Grafana dashboard and docs/metrics.md, checked against what a running
// anqi-edge exports on its admin /metrics.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
)

// liveScrape runs an anqi-edge in front of the fake AnqiCMS, with a Redis
// address nothing listens on (so Redis error series exist), sends traffic
// that touches every labelled series the dashboard uses, and returns the
// admin /metrics text and the running registry.
func liveScrape(t *testing.T) (string, *prometheus.Registry) {
	t.Helper()
	// [cdc] pointed at a closed port: the reader keeps retrying, and every
	// cdc series (the per-table ones too) is exported, as in production.
	env := edgetest.Start(t, edgetest.Options{Redis: []string{closedAddr(t)}, Config: func(c *config.Config) {
		c.CDC.Addr = closedAddr(t)
		c.CDC.User = "cdc"
		c.CDC.Tables = []config.CDCTable{{Name: "communication_orders", OrderColumn: "id"}}
	}})
	env.Fake.AddUser(fake.User{ID: 1, Name: "alice"})
	order := env.Fake.AddOrder(fake.Order{UserID: 1, Title: "deploy test"})
	tok := "token: " + env.Fake.Token(1, 24*time.Hour)
	detail := edgetest.DetailURL(env.URL, order.ID)

	expectCache := func(want string) {
		t.Helper()
		resp, _ := edgetest.Get(t, detail, tok)
		if got := resp.Header.Get("X-Cache"); got != want {
			t.Fatalf("detail: X-Cache %q, want %q", got, want)
		}
	}
	expectCache("MISS")
	expectCache("HIT")
	post := func(body string) {
		t.Helper()
		resp, _ := edgetest.Do(t, http.MethodPost, env.URL+"/api/communication/message/send",
			strings.NewReader(body), tok, "Content-Type: application/json")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("write %s: HTTP %d", body, resp.StatusCode)
		}
	}
	post(fmt.Sprintf(`{"comm_order_id": %d, "content": "hello"}`, order.ID)) // invalidates
	post(`{"content": "no order id"}`)                                       // write hook error
	expectCache("MISS")
	if resp, _ := edgetest.Get(t, env.URL+"/__echo"); resp.StatusCode != http.StatusOK {
		t.Fatalf("pass-through: HTTP %d", resp.StatusCode)
	}
	if resp, _ := edgetest.Do(t, http.MethodPost, env.Admin+"/admin/purge?id="+strconv.FormatInt(order.ID, 10), nil,
		"Authorization: Bearer "+env.Config.Admin.Token); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("purge: HTTP %d", resp.StatusCode)
	}
	resp, body := edgetest.Get(t, env.Admin+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", resp.StatusCode)
	}
	return string(body), env.Edge.Metrics().Registry
}

// scrapeFamilies maps each metric family in a text-format scrape to its type.
func scrapeFamilies(t *testing.T, text string) map[string]string {
	t.Helper()
	fams := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			fams[f[2]] = f[3]
		}
	}
	if len(fams) == 0 {
		t.Fatalf("no # TYPE lines in the scrape:\n%.500s", text)
	}
	return fams
}

// familyOf resolves a series name to its family: histogram and summary
// series carry _bucket, _sum and _count suffixes.
func familyOf(name string, fams map[string]string) (string, bool) {
	if _, ok := fams[name]; ok {
		return name, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if typ := fams[base]; typ == "histogram" || typ == "summary" {
				return base, true
			}
		}
	}
	return "", false
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promVariables = regexp.MustCompile(`\$\{?\w+\}?`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promBraces    = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promNumbers   = regexp.MustCompile(`(^|[^\w:])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?:ms|s|m|h|d|w|y)?\b`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords  = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// promMetricNames returns the metric names a PromQL expression selects:
// identifiers that are not functions, keywords, label names or values.
func promMetricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, " ")
	e = promVariables.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	e = promBraces.ReplaceAllString(e, " ")
	e = promNumbers.ReplaceAllString(e, "$1 ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " ")
		if strings.HasPrefix(rest, "(") || promKeywords[strings.ToLower(id)] {
			continue
		}
		names = append(names, id)
	}
	return names
}

func TestPromMetricNames_FindsSelectorsOnly(t *testing.T) {
	got := promMetricNames(`histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{instance=~"$instance",x="y z"}[$__rate_interval]))) / clamp_min(sum(b_total offset 5m), 1e-9) and on (job) c`)
	if want := []string{"a_bucket", "b_total", "c"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestGrafana_DashboardQueriesOnlySeriesALiveEdgeExports(t *testing.T) {
	var dash struct {
		SchemaVersion int    `json:"schemaVersion"`
		UID           string `json:"uid"`
		Title         string `json:"title"`
		Templating    struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Query      json.RawMessage `json:"query"`
				Definition string          `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				Type string `json:"type"`
				UID  string `json:"uid"`
			} `json:"datasource"`
			GridPos struct{ X, Y, W, H int } `json:"gridPos"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(bytes.NewReader(repoFile(t, "deploy/grafana/anqi-edge.json")))
	if err := dec.Decode(&dash); err != nil {
		t.Fatal(err)
	}
	if dash.SchemaVersion < 36 || dash.UID == "" || dash.Title == "" {
		t.Errorf("schemaVersion %d, uid %q, title %q: want a modern dashboard with uid and title", dash.SchemaVersion, dash.UID, dash.Title)
	}

	type ref struct{ where, expr string }
	var refs []ref
	dsVar := ""
	for _, v := range dash.Templating.List {
		switch v.Type {
		case "datasource":
			var q string
			json.Unmarshal(v.Query, &q)
			if q == "prometheus" {
				dsVar = v.Name
			}
		case "query":
			// label_values(METRIC, LABEL) names a series too.
			if m := regexp.MustCompile(`label_values\(\s*([^,)]+)`).FindStringSubmatch(v.Definition); m != nil {
				refs = append(refs, ref{"variable " + v.Name, m[1]})
			}
		}
	}
	if dsVar == "" {
		t.Fatal("no Prometheus datasource variable in templating")
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v does not fit 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${"+dsVar+"}" {
			t.Errorf("panel %q: datasource uid %q, want ${%s}", p.Title, p.Datasource.UID, dsVar)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || refIDs[tg.RefID] {
				t.Errorf("panel %q: empty expr or repeated refId %q", p.Title, tg.RefID)
			}
			refIDs[tg.RefID] = true
			if !strings.Contains(tg.Expr, "$instance") {
				t.Errorf("panel %q: %s ignores the $instance variable", p.Title, tg.Expr)
			}
			if strings.Contains(tg.Expr, "histogram_quantile") && !regexp.MustCompile(`by \([^)]*\ble\b`).MatchString(tg.Expr) {
				t.Errorf("panel %q: histogram_quantile without `le` in the grouping: %s", p.Title, tg.Expr)
			}
			refs = append(refs, ref{"panel " + p.Title, tg.Expr})
		}
	}

	text, _ := liveScrape(t)
	fams := scrapeFamilies(t, text)
	used := map[string]bool{}
	for _, r := range refs {
		names := promMetricNames(r.expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %s", r.where, r.expr)
		}
		for _, n := range names {
			fam, ok := familyOf(n, fams)
			if !ok {
				t.Errorf("%s queries %s, which a running anqi-edge does not export", r.where, n)
			}
			used[fam] = true
		}
	}
	for _, want := range []string{"anqi_edge_detail_results_total", "anqi_edge_upstream_requests_total",
		"anqi_edge_upstream_duration_seconds", "anqi_edge_singleflight_collapsed_total", "anqi_edge_invalidations_total",
		"anqi_edge_redis_errors_total", "anqi_edge_redis_breaker_state", "anqi_edge_pubsub_up",
		"anqi_edge_l1_bytes", "anqi_edge_l1_entries", "anqi_edge_requests_total"} {
		if !used[want] {
			t.Errorf("the dashboard has no panel over %s", want)
		}
	}
}

// registeredSeries describes every collector in the registry, including
// labelled ones with no series yet: name -> variable label names.
func registeredSeries(reg *prometheus.Registry) map[string][]string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	re := regexp.MustCompile(`^Desc\{fqName: "([^"]+)".*variableLabels: \{([^}]*)\}\}$`)
	out := map[string][]string{}
	for d := range ch {
		if m := re.FindStringSubmatch(d.String()); m != nil {
			var labels []string
			if m[2] != "" {
				labels = strings.Split(m[2], ",")
			}
			out[m[1]] = labels
		}
	}
	return out
}

func TestMetricsDoc_ListsEverySeriesWithItsTypeAndLabels(t *testing.T) {
	doc := string(repoFile(t, "docs/metrics.md"))
	text, reg := liveScrape(t)
	fams := scrapeFamilies(t, text)
	series := registeredSeries(reg)

	// The table: | `name` | type | labels | meaning |
	rows := map[string][]string{}
	for _, l := range strings.Split(doc, "\n") {
		if cells := strings.Split(l, " | "); strings.HasPrefix(l, "| `anqi_edge_") && len(cells) >= 4 {
			rows[strings.Trim(cells[0], "| `")] = cells
		}
	}
	n := 0
	for name, labels := range series {
		if !strings.HasPrefix(name, "anqi_edge_") {
			continue
		}
		n++
		row, ok := rows[name]
		if !ok {
			t.Errorf("docs/metrics.md has no table row for %s", name)
			continue
		}
		if typ, scraped := fams[name]; scraped && strings.TrimSpace(row[1]) != typ {
			t.Errorf("docs/metrics.md: %s is a %s, the table says %q", name, typ, row[1])
		}
		var documented []string
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(row[2], -1) {
			documented = append(documented, m[1])
		}
		if !slices.Equal(slices.Sorted(slices.Values(documented)), slices.Sorted(slices.Values(labels))) {
			t.Errorf("docs/metrics.md: %s labels %v, the registry has %v", name, documented, labels)
		}
	}
	if n < 20 {
		t.Fatalf("only %d anqi_edge_ series registered; the registry description is not being read", n)
	}
	// And the reverse: the page names no series that is gone.
	for _, m := range regexp.MustCompile(`anqi_edge_[a-z0-9_]+`).FindAllString(doc, -1) {
		name := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(m, suf); ok && series[base] != nil {
				name = base
			}
		}
		if _, ok := series[name]; !ok {
			t.Errorf("docs/metrics.md mentions %s, which anqi-edge does not register", m)
		}
	}
}

func TestMetricsDoc_LogMessagesExistInTheCode(t *testing.T) {
	var src strings.Builder
	for _, dir := range []string{"proxy", "cache", "watch", "admin", "replica", "cdc", "."} {
		files, err := filepath.Glob(filepath.Join("..", dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				b, _ := os.ReadFile(f)
				src.Write(b)
			}
		}
	}
	code := src.String()
	// callsOf returns the text of every log call that logs msg: from the
	// message to the end of its statement.
	callsOf := func(msg string) string {
		var calls strings.Builder
		lit := strconv.Quote(msg)
		if !strings.Contains(code, lit) {
			lit = msg // part of a formatted message
		}
		for rest := code; ; {
			i := strings.Index(rest, lit)
			if i < 0 {
				return calls.String()
			}
			rest = rest[i:]
			end := strings.Index(rest, ")\n")
			if end < 0 {
				end = len(rest)
			}
			calls.WriteString(rest[:end])
			rest = rest[len(lit):]
		}
	}
	doc := string(repoFile(t, "docs/metrics.md"))
	_, logs, ok := strings.Cut(doc, "## Log lines")
	if !ok {
		t.Fatal(`docs/metrics.md has no "## Log lines" section`)
	}
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		cells := strings.Split(l, " | ")
		if !strings.HasPrefix(l, "| ") || len(cells) < 4 || !strings.Contains(cells[1], "`") {
			continue
		}
		var calls strings.Builder
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cells[1], -1) {
			n++
			c := callsOf(m[1])
			if c == "" {
				t.Errorf("docs/metrics.md log line %q: no such message in the product packages", m[1])
			}
			calls.WriteString(c)
		}
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(cells[2], -1) {
			if !strings.Contains(calls.String(), `"`+m[1]+`"`) {
				t.Errorf("docs/metrics.md log line %s: key %q is not logged with it", cells[1], m[1])
			}
		}
	}
	if n < 10 {
		t.Fatalf("read only %d log messages from docs/metrics.md", n)
	}
}
