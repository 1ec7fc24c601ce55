package edgetest

import (
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape reads the admin listener's /metrics (admin is its base URL) and
// parses it with Prometheus's own text parser.
func Scrape(t testing.TB, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := Client.Get(admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", admin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: HTTP %d", admin, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", admin, err)
	}
	return fams
}

// Metric sums the samples of family name whose labels include every given
// pair, written k=v or k="v". A histogram counts its observations. A family
// that is not exported sums to 0.
func Metric(t testing.TB, admin, name string, labels ...string) float64 {
	t.Helper()
	return Sum(Scrape(t, admin), name, labels...)
}

// Sum is Metric over an existing scrape.
func Sum(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	want := map[string]string{}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		want[k] = strings.Trim(v, `"`)
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// Exported fails the test unless every named metric family is on admin's
// /metrics.
func Exported(t testing.TB, admin string, names ...string) {
	t.Helper()
	fams := Scrape(t, admin)
	for _, n := range names {
		if fams[n] == nil {
			t.Errorf("metric family %s is not exported", n)
		}
	}
}
