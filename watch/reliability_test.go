package watch_test

// Issue 10: items 10 (an SSE error event carries the envelope of a cached
// negative entry) and 14 (a HEAD of a watch endpoint holds no slot).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/proxy"
	"anqi-edge/watch"
)

func TestWatch_ErrorEventCarriesTheEnvelopeOfAStoredNegativeAnswer(t *testing.T) {
	env := wtStart(t, true, nil, func(c *config.Config) {
		c.Cache.NegativeTTL = config.Duration{Duration: time.Minute}
	})
	_, order, tok := edgetest.SeedOne(env)
	s, a := wtOpen(t, edgetest.Client, env.URL, order.ID, tok, "")
	if s == nil {
		t.Fatalf("events: %v", a)
	}
	if e, _, ok := s.nextEvent(10 * time.Second); !ok || e.event != "detail" {
		t.Fatalf("first event %+v, want the detail", e)
	}
	// AnqiCMS now refuses this user the order; with cache.negative_ttl on
	// that answer is stored as a negative entry.
	const refusal = `{"code":1002,"msg":"No access","data":null}`
	env.Fake.FailNext(proxy.DetailPath, http.StatusOK, refusal)
	edgetest.Purge(t, env.Admin, order.ID)
	e, _, ok := s.nextEvent(10 * time.Second)
	if !ok || e.event != "error" {
		t.Fatalf("after the refusal: %+v (ok %v), want an error event", e, ok)
	}
	if e.data != refusal {
		t.Fatalf("error event data %q, want AnqiCMS's envelope %q", e.data, refusal)
	}
	// It was stored: the detail endpoint serves the same envelope.
	d := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok)
	if string(d.body) != refusal || d.header.Get("X-Cache") != "HIT" {
		t.Fatalf("detail after the refusal: %v, want the stored negative entry", d)
	}
}

func TestWatch_HeadOfAWatchEndpointSendsNoBodyAndHoldsNoSlot(t *testing.T) {
	env := wtStart(t, true, nil, func(c *config.Config) {
		c.Watch.MaxWatchers = 1
		c.Watch.MaxPerIdentity = 1
	})
	_, order, tok := edgetest.SeedOne(env)
	host := strings.TrimPrefix(env.URL, "http://")
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	// HEADs of both endpoints, then a GET, pipelined on one connection:
	// any body sent for a HEAD would be read as the next answer's status
	// line.
	req := func(method, path, extra string) string {
		return fmt.Sprintf("%s %s?id=%d%s HTTP/1.1\r\nHost: %s\r\ntoken: %s\r\n\r\n", method, path, order.ID, extra, host, tok)
	}
	io.WriteString(conn, req("HEAD", watch.EventsPath, "")+req("HEAD", watch.WatchPath, "&etag=nomatch")+
		req("GET", proxy.DetailPath, ""))
	br := bufio.NewReader(conn)
	for i, method := range []string{"HEAD", "HEAD", "GET"} {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("answer %d (%s): %v — a HEAD answer carried a body", i, method, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("answer %d (%s): HTTP %d", i, method, resp.StatusCode)
		}
	}
	// No slot is held: with watch.max_watchers = 1 a real watcher gets in.
	if n := wtWatchers(t, env.Admin, ""); n != 0 {
		t.Fatalf("anqi_edge_watchers = %v after the HEADs, want 0", n)
	}
	s, a := wtOpen(t, edgetest.Client, env.URL, order.ID, tok, "")
	if s == nil {
		t.Fatalf("a watcher after the HEADs was refused: %v", a)
	}
}
