package proxy_test

// Behaviours found in review: writes bound the way AnqiCMS binds them,
// upstream answers that are not stored keep their headers, and answers over
// upstream.max_body are streamed through instead of held.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/redistest"
)

func TestInvalidate_WriteBodyIsReadTheWayAnqiCMSBindsIt(t *testing.T) {
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, nil)
	title := func() string {
		var v struct {
			Data struct {
				Title string `json:"title"`
			} `json:"data"`
		}
		json.Unmarshal(invRead(t, env.URL, 2, tok).body, &v)
		return v.Data.Title
	}
	cases := []struct{ name, ctype, body, want string }{
		// A JSON endpoint accepts a form body too; the hook must find the id.
		{"form body on a json rule", "application/x-www-form-urlencoded", "id=2&title=from-a-form", "from-a-form"},
		// Go binds JSON keys case-insensitively, the last one winning.
		{"differently cased key", "application/json", `{"ID":2,"title":"cased"}`, "cased"},
	}
	for _, c := range cases {
		invWarm(t, env.URL, 2, tok)
		if st, code := invPost(t, env.URL+"/api/communication/order/update", c.ctype, c.body, tok); st != 200 || code != 0 {
			t.Fatalf("%s: update answered HTTP %d code %d", c.name, st, code)
		}
		if got := title(); got != c.want {
			t.Fatalf("%s: next read shows title %q, want %q (the write was not invalidated)", c.name, got, c.want)
		}
	}
}

// rewritingUpstream is the fake behind a layer that answers the detail of
// order 1 with a redirect and passes everything else on.
func rewritingUpstream(t *testing.T, target string) string {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/communication/order/detail" && r.URL.Query().Get("id") == "1" {
			w.Header().Set("Location", "/api/communication/order/detail?id=1&lang=en")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestDetail_AnswersThatAreNotStoredKeepTheirHeaders(t *testing.T) {
	base := edgetest.Start(t, edgetest.Options{Verify: true})
	base.Fake.Seed(1, 1)
	tok := base.Fake.Token(1, 24*3600e9)
	up := rewritingUpstream(t, base.FakeURL)
	_, edge, _ := base.Replica(t, func(c *config.Config) { c.Upstream.URL = up })
	noRedirect := &http.Client{Transport: edgetest.Client.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, edgetest.DetailURL(edge, 1), nil)
	req.Header.Set("token", tok)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") == "" {
		t.Fatalf("got HTTP %d Location %q, want AnqiCMS's 307 with its Location", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestDetail_AnswerOverMaxBodyIsStreamedThroughNotStored(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true, Config: func(c *config.Config) {
		c.Upstream.MaxBody = 256 // smaller than any order detail
	}})
	env.Fake.Seed(1, 1)
	tok := env.Fake.Token(1, 24*3600e9)
	_, direct := edgetest.Get(t, edgetest.DetailURL(env.FakeURL, 1), "token: "+tok)
	for i := range 2 {
		resp, body := edgetest.Get(t, edgetest.DetailURL(env.URL, 1), "token: "+tok)
		if resp.StatusCode != 200 || string(body) != string(direct) {
			t.Fatalf("read %d: HTTP %d, body differs from AnqiCMS's (%d vs %d bytes)", i, resp.StatusCode, len(body), len(direct))
		}
		if x := resp.Header.Get("X-Cache"); x != "BYPASS" {
			t.Fatalf("read %d: X-Cache %q, want BYPASS (too large to store)", i, x)
		}
	}
	if n := env.Fake.Calls("/api/communication/order/detail"); n < 3 {
		t.Fatalf("upstream saw %d detail calls, want every read to go upstream (nothing stored)", n)
	}
	if !strings.Contains(string(direct), `"code":0`) {
		t.Fatalf("direct answer is not a code 0 detail: %.80s", direct)
	}
}

func TestWatch_EventStreamEndsWhenTheTokenEntersItsRenewalWindow(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true})
	env.Fake.Seed(1, 1)
	// One second of cacheable life left before auth.renew_window (1h).
	tok := env.Fake.Token(1, 3600e9+2e9)
	req, _ := http.NewRequest(http.MethodGet, env.URL+"/api/communication/order/events?id=1", nil)
	req.Header.Set("token", tok)
	client := &http.Client{Timeout: 10e9, Transport: edgetest.Client.Transport}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q, want an event stream", ct)
	}
	var sb strings.Builder
	if _, err := io.Copy(&sb, resp.Body); err != nil {
		t.Fatalf("stream did not end cleanly before the client timeout: %v (read %q)", err, sb.String())
	}
	if !strings.Contains(sb.String(), "event: detail") || !strings.Contains(sb.String(), "retry:") {
		t.Fatalf("stream %q: want the detail, then a retry hint when the token needs renewing", sb.String())
	}
}
