package proxy_test

// The purge API (DESIGN §4.2, §7): POST /admin/purge?id=N on the admin
// listener only, bearer token compared in constant time, 204/400/401/403/405.
// Helpers come from invalidate_test.go.

import (
	"net/http"
	"strings"
	"testing"

	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/redistest"
)

func TestAdmin_PurgeDropsTheOrderOnEveryTier(t *testing.T) {
	addr := redistest.Shared(t)
	env, tok, _ := invStart(t, []string{addr}, nil)
	edgetest.Subscribed(t, env.Admin)
	const order = 2
	invWarm(t, env.URL, order, tok)

	resp, body := edgetest.Do(t, http.MethodPost, env.Admin+"/admin/purge?id=2&host=example.com", nil,
		"Authorization: Bearer admin-secret")
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("purge: HTTP %d %q, want 204 and no body", resp.StatusCode, body)
	}
	if q := resp.Header.Get("X-Purge-Queued"); q != "" {
		t.Errorf("purge with Redis up says it was queued: %q", q)
	}
	if d := invRead(t, env.URL, order, tok); d.xcache != "MISS" {
		t.Fatalf("read after purge: X-Cache %s, want MISS (gone from L1 and Redis)", d.xcache)
	}
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_invalidations_total", `source="purge"`); n != 1 {
		t.Errorf("purge invalidations = %v, want 1", n)
	}
	// Purging an order nobody cached is fine too, and the scheme name is
	// case-insensitive.
	edgetest.Purge(t, env.Admin, 999)
	if resp, b := edgetest.Do(t, http.MethodPost, env.Admin+"/admin/purge?id=2", nil,
		"Authorization: bearer admin-secret"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("purge with a lower-case scheme: HTTP %d %s", resp.StatusCode, b)
	}
}

func TestAdmin_PurgeRefusesBadRequests(t *testing.T) {
	env, tok, _ := invStart(t, nil, nil)
	invWarm(t, env.URL, 1, tok)
	cases := []struct {
		name, method, query string
		headers             []string
		status              int
	}{
		{"no token", http.MethodPost, "id=1", nil, http.StatusUnauthorized},
		{"wrong token", http.MethodPost, "id=1", []string{"Authorization: Bearer admin-secreT"}, http.StatusUnauthorized},
		{"token prefix", http.MethodPost, "id=1", []string{"Authorization: Bearer admin-secre"}, http.StatusUnauthorized},
		{"token not bearer", http.MethodPost, "id=1", []string{"Authorization: Basic admin-secret"}, http.StatusUnauthorized},
		{"token without scheme", http.MethodPost, "id=1", []string{"Authorization: admin-secret"}, http.StatusUnauthorized},
		{"token with a suffix", http.MethodPost, "id=1", []string{"Authorization: Bearer admin-secret2"}, http.StatusUnauthorized},
		{"empty bearer", http.MethodPost, "id=1", []string{"Authorization: Bearer "}, http.StatusUnauthorized},
		{"id missing", http.MethodPost, "", []string{"Authorization: Bearer admin-secret"}, http.StatusBadRequest},
		{"id empty", http.MethodPost, "id=", []string{"Authorization: Bearer admin-secret"}, http.StatusBadRequest},
		{"id zero", http.MethodPost, "id=0", []string{"Authorization: Bearer admin-secret"}, http.StatusBadRequest},
		{"id negative", http.MethodPost, "id=-1", []string{"Authorization: Bearer admin-secret"}, http.StatusBadRequest},
		{"id not a number", http.MethodPost, "id=abc", []string{"Authorization: Bearer admin-secret"}, http.StatusBadRequest},
		{"id overflowing", http.MethodPost, "id=9223372036854775808", []string{"Authorization: Bearer admin-secret"}, http.StatusBadRequest},
		{"id repeated", http.MethodPost, "id=1&id=2", []string{"Authorization: Bearer admin-secret"}, http.StatusBadRequest},
		{"GET", http.MethodGet, "id=1", []string{"Authorization: Bearer admin-secret"}, http.StatusMethodNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := edgetest.Do(t, c.method, env.Admin+"/admin/purge?"+c.query, nil, c.headers...)
			if resp.StatusCode != c.status {
				t.Fatalf("HTTP %d %q, want %d", resp.StatusCode, body, c.status)
			}
			if c.status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	// None of them purged anything.
	if d := invRead(t, env.URL, 1, tok); d.xcache != "HIT" {
		t.Fatalf("a refused purge dropped the entry: X-Cache %s", d.xcache)
	}
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_invalidations_total", `source="purge"`); n != 0 {
		t.Errorf("refused purges counted as invalidations: %v", n)
	}
}

func TestAdmin_PurgeIsForbiddenWithoutAnAdminToken(t *testing.T) {
	env, tok, _ := invStart(t, nil, func(c *config.Config) { c.Admin.Token = "" })
	invWarm(t, env.URL, 1, tok)
	for _, h := range [][]string{nil, {"Authorization: Bearer "}, {"Authorization: Bearer admin-secret"}} {
		resp, body := edgetest.Do(t, http.MethodPost, env.Admin+"/admin/purge?id=1", nil, h...)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("purge with admin.token empty and %q: HTTP %d %q, want 403", h, resp.StatusCode, body)
		}
	}
	if d := invRead(t, env.URL, 1, tok); d.xcache != "HIT" {
		t.Fatalf("a forbidden purge dropped the entry: X-Cache %s", d.xcache)
	}
}

func TestAdmin_PurgeIsNotOnThePublicPort(t *testing.T) {
	env, tok, _ := invStart(t, nil, nil)
	invWarm(t, env.URL, 1, tok)
	resp, _ := edgetest.Do(t, http.MethodPost, env.URL+"/admin/purge?id=1", nil, "Authorization: Bearer admin-secret")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /admin/purge on the public port: HTTP %d, want AnqiCMS's 404", resp.StatusCode)
	}
	if n := env.Fake.Calls("/admin/purge"); n != 1 {
		t.Fatalf("the public /admin/purge reached AnqiCMS %d times, want 1 (forwarded, not handled)", n)
	}
	if d := invRead(t, env.URL, 1, tok); d.xcache != "HIT" {
		t.Fatalf("a purge sent to the public port dropped the entry: X-Cache %s", d.xcache)
	}
	for _, p := range []string{"/metrics", "/readyz", "/healthz"} {
		edgetest.Get(t, env.URL+p)
		if env.Fake.Calls(p) != 1 {
			t.Errorf("%s on the public port was not forwarded to AnqiCMS", p)
		}
	}
}

func TestAdmin_ReadyzAndMetricsShowTheSubscription(t *testing.T) {
	srv := redistest.Start(t)
	env, _, _ := invStart(t, []string{srv.Addr()}, nil)
	edgetest.Subscribed(t, env.Admin)
	r := edgetest.Readyz(t, env.Admin)
	if r.Status != "ready" || !r.Redis.Subscribed || r.Redis.Ping != "ok" || r.Redis.Breaker != "closed" {
		t.Fatalf("readyz with Redis up: %+v", r)
	}
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_pubsub_up"); n != 1 {
		t.Fatalf("anqi_edge_pubsub_up = %v, want 1", n)
	}
	srv.Kill()
	edgetest.Eventually(t, "readyz and metrics to show the subscription down", func() bool {
		return !edgetest.Readyz(t, env.Admin).Redis.Subscribed && edgetest.Metric(t, env.Admin, "anqi_edge_pubsub_up") == 0
	})
	// Redis being down does not make the replica unready: it serves from
	// L1 and AnqiCMS.
	if r := edgetest.Readyz(t, env.Admin); r.Status != "ready" || r.Redis.Ping == "ok" {
		t.Fatalf("readyz with Redis down: %+v", r)
	}
	srv.Restart(t)
	edgetest.Eventually(t, "readyz and metrics to show the subscription back", func() bool {
		return edgetest.Readyz(t, env.Admin).Redis.Subscribed && edgetest.Metric(t, env.Admin, "anqi_edge_pubsub_up") == 1
	})
}
