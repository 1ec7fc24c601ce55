package watch_test

// Issue 6, push instead of poll: long-poll (GET /api/communication/order/watch)
// and Server-Sent Events (GET /api/communication/order/events) watchers of
// an order, end to end over real sockets: a fake AnqiCMS, real anqi-edge
// replicas (internal/edgetest) and real redis-server processes for the
// cross-replica wakeups. Helpers are prefixed wt so they cannot collide
// with other test files of package proxy_test.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/redistest"
	"anqi-edge/proxy"
	"anqi-edge/watch"
)

// wtAnswer is a long-poll (or detail) answer as a client sees it.
type wtAnswer struct {
	status int
	header http.Header
	body   []byte
	code   int      // envelope code; wtNoEnvelope when the body is not one
	texts  []string // message contents when code == 0
	at     time.Time
}

const wtNoEnvelope = -999

func (a wtAnswer) etag() string { return a.header.Get("ETag") }

func (a wtAnswer) has(text string) bool { return slices.Contains(a.texts, text) }

func (a wtAnswer) String() string {
	return fmt.Sprintf("HTTP %d code=%d ETag=%s X-Cache=%s body=%.200q", a.status, a.code,
		a.etag(), a.header.Get("X-Cache"), a.body)
}

// wtParse reads an answer and its envelope; it never calls t, so watcher
// goroutines can use it.
func wtParse(resp *http.Response) (wtAnswer, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	a := wtAnswer{status: resp.StatusCode, header: resp.Header, body: body, at: time.Now(), code: wtNoEnvelope}
	if err != nil {
		return a, err
	}
	var env struct {
		Code int `json:"code"`
		Data *struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &env) == nil {
		a.code = env.Code
		if env.Data != nil {
			for _, m := range env.Data.Messages {
				a.texts = append(a.texts, m.Content)
			}
		}
	}
	return a, nil
}

// wtURL is path on base for order id (raw query appended as is).
func wtURL(base, path string, id int64, extra string) string {
	u := base + path + "?id=" + strconv.FormatInt(id, 10)
	if extra != "" {
		u += "&" + extra
	}
	return u
}

// wtDo sends GET u with headers ("Name: value"; an empty value is sent
// empty) on c and parses the answer.
func wtDo(ctx context.Context, c *http.Client, u string, headers ...string) (wtAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return wtAnswer{}, err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := c.Do(req)
	if err != nil {
		return wtAnswer{}, err
	}
	return wtParse(resp)
}

func wtGet(t testing.TB, u string, headers ...string) wtAnswer {
	t.Helper()
	a, err := wtDo(context.Background(), edgetest.Client, u, headers...)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return a
}

// wtLongPoll is GET /watch?id=N&etag=E with the user's token.
func wtLongPoll(ctx context.Context, c *http.Client, base string, id int64, token, etag string) (wtAnswer, error) {
	extra := ""
	if etag != "" {
		extra = "etag=" + url.QueryEscape(etag)
	}
	return wtDo(ctx, c, wtURL(base, watch.WatchPath, id, extra), "token: "+token)
}

// wtClient is an HTTP client for conns concurrent connections per replica;
// its idle connections are closed at cleanup, before the replicas shut down.
func wtClient(t testing.TB, conns int) *http.Client {
	tr := &http.Transport{
		DisableCompression:  true,
		MaxConnsPerHost:     conns,
		MaxIdleConns:        2 * conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     30 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// wtConfig is the watch tests' config: deterministic freshness, then edit.
func wtConfig(edit func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		c.Cache.Jitter = 0
		if edit != nil {
			edit(c)
		}
	}
}

func wtStart(t testing.TB, verify bool, redisAddrs []string, edit func(*config.Config)) *edgetest.Env {
	t.Helper()
	return edgetest.Start(t, edgetest.Options{Redis: redisAddrs, Verify: verify, Config: wtConfig(edit)})
}

// wtWatchers is the anqi_edge_watchers gauge of one replica (kind "" sums
// both kinds).
func wtWatchers(t testing.TB, admin, kind string) float64 {
	t.Helper()
	if kind == "" {
		return edgetest.Metric(t, admin, "anqi_edge_watchers")
	}
	return edgetest.Metric(t, admin, "anqi_edge_watchers", "kind="+kind)
}

// wtWaitGauge polls until the replica's watchers gauge equals want, up to
// within (a bound for a loaded 2-core machine); it returns how long it took.
func wtWaitGauge(t testing.TB, admin, kind string, want float64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := wtWatchers(t, admin, kind)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: anqi_edge_watchers{kind=%q} = %v after %v, want %v", admin, kind, got, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wtUpstreamDetailCalls is a replica's own count of detail calls to AnqiCMS.
func wtUpstreamDetailCalls(t testing.TB, admin string) float64 {
	t.Helper()
	return edgetest.Metric(t, admin, "anqi_edge_upstream_requests_total", `route="detail"`)
}

// --- Server-Sent Events client ---------------------------------------------

// wtEvent is one SSE event, or one comment line (comment set, rest empty).
type wtEvent struct {
	id, event, data string
	comment         string
}

// wtStream is an open event stream, parsed by one reader goroutine.
type wtStream struct {
	resp   *http.Response
	cancel context.CancelFunc
	events chan wtEvent
	done   chan struct{} // closed when the reader ends
	err    error         // why it ended; read after done
}

// wtOpen opens GET /events?id=N. When the answer is not an event stream it
// returns nil and the answer.
func wtOpen(t testing.TB, c *http.Client, base string, id int64, token, lastEventID string) (*wtStream, wtAnswer) {
	t.Helper()
	s, a, err := wtTryOpen(c, base, id, token, lastEventID)
	if err != nil {
		t.Fatalf("events %d via %s: %v", id, base, err)
	}
	if s != nil {
		t.Cleanup(s.close)
	}
	return s, a
}

func wtTryOpen(c *http.Client, base string, id int64, token, lastEventID string) (*wtStream, wtAnswer, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, wtURL(base, watch.EventsPath, id, ""), nil)
	if token != "" {
		req.Header.Set("token", token)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		return nil, wtAnswer{}, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		a, err := wtParse(resp)
		cancel()
		return nil, a, err
	}
	s := &wtStream{resp: resp, cancel: cancel, events: make(chan wtEvent, 4096), done: make(chan struct{})}
	go s.read()
	return s, wtAnswer{status: resp.StatusCode, header: resp.Header}, nil
}

func (s *wtStream) read() {
	defer close(s.done)
	defer close(s.events)
	br := bufio.NewReader(s.resp.Body)
	var ev wtEvent
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			s.err = err
			return
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		var out *wtEvent
		switch {
		case line == "":
			if ev.id != "" || ev.event != "" || data != nil {
				ev.data = strings.Join(data, "\n")
				out = &ev
			}
		case field == "":
			out = &wtEvent{comment: value}
		case field == "id":
			ev.id = value
		case field == "event":
			ev.event = value
		case field == "data":
			data = append(data, value)
		}
		if out != nil {
			select {
			case s.events <- *out:
			default:
				s.err = errors.New("test stream buffer full")
				return
			}
			if out == &ev {
				ev, data = wtEvent{}, nil
			}
		}
	}
}

// next returns the next event or comment, or false when the stream ended
// or nothing came within d.
func (s *wtStream) next(d time.Duration) (wtEvent, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case e, ok := <-s.events:
		return e, ok
	case <-t.C:
		return wtEvent{}, false
	}
}

// nextEvent skips comments and returns the next event, counting the
// heartbeats it skipped.
func (s *wtStream) nextEvent(d time.Duration) (e wtEvent, beats int, ok bool) {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return wtEvent{}, beats, false
		}
		e, ok := s.next(left)
		if !ok {
			return wtEvent{}, beats, false
		}
		if e.comment == "" {
			return e, beats, true
		}
		if e.comment == "heartbeat" {
			beats++
		}
	}
}

// close drops the connection and waits for the reader.
func (s *wtStream) close() {
	s.cancel()
	s.resp.Body.Close()
	<-s.done
}

// ended waits up to d for the stream to end and returns what came before.
func (s *wtStream) ended(d time.Duration) ([]wtEvent, bool) {
	var got []wtEvent
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return got, false
		}
		t := time.NewTimer(left)
		select {
		case e, ok := <-s.events:
			t.Stop()
			if !ok {
				return got, true
			}
			got = append(got, e)
		case <-t.C:
			return got, false
		}
	}
}

// --- answers at once, like the detail endpoint -----------------------------------

func TestWatch_LongPollWithoutTheCurrentETagAnswersAtOnceExactlyAsDetail(t *testing.T) {
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		env := wtStart(t, verify, nil, func(c *config.Config) { c.Watch.MaxWait = config.Duration{Duration: 20 * time.Second} })
		_, order, tok := edgetest.SeedOne(env)
		detail := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok)
		if detail.status != http.StatusOK || detail.code != 0 || detail.etag() == "" {
			t.Fatalf("detail: %v", detail)
		}
		for _, etag := range []string{"", `"0123456789abcdef0123456789abcdef"`, "stale", `W/"x"`} {
			start := time.Now()
			a, err := wtLongPoll(context.Background(), edgetest.Client, env.URL, order.ID, tok, etag)
			if err != nil {
				t.Fatal(err)
			}
			// max_wait is 20s: an answer well before it was not held.
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("etag %q: answered after %v, want at once", etag, took)
			}
			if a.status != http.StatusOK || string(a.body) != string(detail.body) {
				t.Fatalf("etag %q: %v\nwant the detail answer %v", etag, a, detail)
			}
			for _, h := range []string{"ETag", "Content-Type", "Vary"} {
				if a.header.Get(h) != detail.header.Get(h) {
					t.Errorf("etag %q: %s %q, detail has %q", etag, h, a.header.Get(h), detail.header.Get(h))
				}
			}
			if a.header.Get("X-Cache") == "" || a.header.Get("Age") == "" {
				t.Errorf("etag %q: X-Cache %q Age %q, want both like detail", etag, a.header.Get("X-Cache"), a.header.Get("Age"))
			}
		}
		if n := env.Fake.Calls(watch.WatchPath); n != 0 {
			t.Errorf("AnqiCMS saw %d calls to the watch path, which it does not have", n)
		}
		if w := wtWatchers(t, env.Admin, ""); w != 0 {
			t.Errorf("watchers gauge %v after answers given at once, want 0", w)
		}
	})
}

func TestWatch_LongPollWaitsForAChangeThenAnswersTheNewDetailElse304AtMaxWait(t *testing.T) {
	env := wtStart(t, true, []string{redistest.Shared(t)}, func(c *config.Config) {
		c.Watch.MaxWait = config.Duration{Duration: 600 * time.Millisecond}
	})
	_, order, tok := edgetest.SeedOne(env)
	detail := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok)
	etag := detail.etag()

	// Nothing changes: 304 with the same ETag once max_wait has passed.
	start := time.Now()
	a, err := wtLongPoll(context.Background(), edgetest.Client, env.URL, order.ID, tok, etag)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); a.status != http.StatusNotModified || a.etag() != etag || len(a.body) != 0 || took < 500*time.Millisecond {
		t.Fatalf("unchanged order: %v after %v, want 304 with ETag %s after max_wait (600ms)", a, took, etag)
	}
	// Also without the quotes, as a client may send it in a query string.
	if a, _ := wtLongPoll(context.Background(), edgetest.Client, env.URL, order.ID, tok, strings.Trim(etag, `"`)); a.status != http.StatusNotModified {
		t.Fatalf("unquoted etag: %v, want 304", a)
	}

	// A change while it waits: the fresh detail, with its new ETag.
	_, base, admin := env.Replica(t, wtConfig(func(c *config.Config) { c.Watch.MaxWait = config.Duration{Duration: 20 * time.Second} }))
	wakeups0 := edgetest.Metric(t, admin, "anqi_edge_watch_wakeups_total")
	events0 := edgetest.Metric(t, admin, "anqi_edge_watch_events_total")
	got := make(chan wtAnswer, 1)
	go func() {
		a, err := wtLongPoll(context.Background(), edgetest.Client, base, order.ID, tok, etag)
		if err != nil {
			a.code, a.body = wtNoEnvelope, []byte(err.Error())
		}
		got <- a
	}()
	wtWaitGauge(t, admin, "longpoll", 1, 10*time.Second)
	if code := edgetest.Send(t, base, order.ID, tok, "watch me change"); code != 0 {
		t.Fatalf("send: code %d", code)
	}
	select {
	case a := <-got:
		if a.status != http.StatusOK || a.code != 0 || !a.has("watch me change") || a.etag() == etag || a.etag() == "" {
			t.Fatalf("woken watcher got %v, want the new detail with a new ETag", a)
		}
		if now := wtGet(t, edgetest.DetailURL(base, order.ID), "token: "+tok); now.etag() != a.etag() || string(now.body) != string(a.body) {
			t.Fatalf("watcher's answer differs from the detail endpoint's: %v vs %v", a, now)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher was not woken by the change")
	}
	wtWaitGauge(t, admin, "longpoll", 0, 5*time.Second)
	if d := edgetest.Metric(t, admin, "anqi_edge_watch_wakeups_total") - wakeups0; d != 1 {
		t.Errorf("watch_wakeups_total grew by %v, want 1", d)
	}
	if d := edgetest.Metric(t, admin, "anqi_edge_watch_events_total") - events0; d != 1 {
		t.Errorf("watch_events_total grew by %v, want 1", d)
	}
}

// --- one change, a thousand watchers, two replicas -------------------------------

// One message sent through replica A wakes 1,000 long-poll watchers, 500 on
// each of two replicas, all on the same order and owner token; each gets the
// new message, and the change costs at most one detail call per replica.
//
// The target is "within 200 ms" from the send's response to each
// watcher's answer. On this shared, noisy 2-core machine under -race that is
// not a bound a test can hold without flaking, so the test asserts a
// generous 2 s and logs the measured p50 and max (the benchmark in
// bench/cmd/watchbench measures it without the race detector).
func TestWatch_OneChangeWakesAThousandLongPollsOnTwoReplicasWithOneRefillEach(t *testing.T) {
	const perReplica = 500
	edit := func(c *config.Config) {
		c.Watch.MaxWatchers = 2 * perReplica
		c.Watch.MaxPerIdentity = 2 * perReplica
		c.Watch.MaxWait = config.Duration{Duration: 60 * time.Second}
	}
	env := wtStart(t, true, []string{redistest.Shared(t)}, edit)
	_, bURL, bAdmin := env.Replica(t, wtConfig(edit))
	edgetest.Subscribed(t, env.Admin, bAdmin)
	_, order, tok := edgetest.SeedOne(env)
	etag := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok).etag()
	if b := wtGet(t, edgetest.DetailURL(bURL, order.ID), "token: "+tok); b.etag() != etag {
		t.Fatalf("replicas disagree on the ETag: %s vs %s", etag, b.etag())
	}

	client := wtClient(t, perReplica+16)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	answers := make([]wtAnswer, 2*perReplica)
	errs := make([]error, 2*perReplica)
	var wg sync.WaitGroup
	for i := range 2 * perReplica {
		base := env.URL
		if i%2 == 1 {
			base = bURL
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = wtLongPoll(ctx, client, base, order.ID, tok, etag)
		}()
	}
	defer wg.Wait()
	defer cancel() // on a failure below, end the watchers before waiting for them
	wtWaitGauge(t, env.Admin, "longpoll", perReplica, 60*time.Second)
	wtWaitGauge(t, bAdmin, "longpoll", perReplica, 60*time.Second)

	calls0 := edgetest.DetailCalls(env)
	upA0, upB0 := wtUpstreamDetailCalls(t, env.Admin), wtUpstreamDetailCalls(t, bAdmin)
	const text = "one change for a thousand watchers"
	if code := edgetest.Send(t, env.URL, order.ID, tok, text); code != 0 {
		t.Fatalf("send: code %d", code)
	}
	sent := time.Now()

	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("not every watcher answered within 30s of the change")
	}

	lat := make([]time.Duration, 0, len(answers))
	for i, a := range answers {
		if errs[i] != nil {
			t.Fatalf("watcher %d: %v", i, errs[i])
		}
		if a.status != http.StatusOK || a.code != 0 || !a.has(text) || a.etag() == etag {
			t.Fatalf("watcher %d: %v, want the new detail with %q", i, a, text)
		}
		// Replica A's watchers are woken before the send's answer leaves
		// A, so some answers precede `sent`: those count as 0.
		lat = append(lat, max(a.at.Sub(sent), 0))
	}
	slices.Sort(lat)
	p50, worst := lat[len(lat)/2], lat[len(lat)-1]
	t.Logf("1,000 watchers on 2 replicas woken by one change: p50 %v, max %v (from the send's answer to each watcher's answer; target 200ms, asserted 2s under -race)", p50, worst)
	if worst > 2*time.Second {
		t.Errorf("slowest watcher answered %v after the send, want ≤ 2s (target 200ms)", worst)
	}

	calls := edgetest.DetailCalls(env) - calls0
	upA, upB := wtUpstreamDetailCalls(t, env.Admin)-upA0, wtUpstreamDetailCalls(t, bAdmin)-upB0
	t.Logf("detail calls for the change: AnqiCMS saw %d (replica A made %v, replica B %v)", calls, upA, upB)
	// A replica may make none when it reads the other's fill from Redis.
	if calls < 1 || calls > 2 || upA > 1 || upB > 1 {
		t.Errorf("one change cost %d detail calls (A %v, B %v), want 1 or 2, at most one per replica", calls, upA, upB)
	}
	wtWaitGauge(t, env.Admin, "longpoll", 0, 10*time.Second)
	wtWaitGauge(t, bAdmin, "longpoll", 0, 10*time.Second)
}

// Watchers of an order that does not change cost AnqiCMS nothing: 1,000 of
// them (long-poll and SSE) held for 10 s make no detail call after the
// initial fill. watch.max_wait (30s) and cache.ttl (30s, the SSE re-check)
// are both longer than the window; heartbeats (1s) flow meanwhile. When the
// clients then hang up, every slot is freed within a heartbeat (+ slack).
func TestWatch_AThousandWatchersOfAnUnchangedOrderMakeNoUpstreamCalls(t *testing.T) {
	t.Parallel()
	const n = 1000
	env := wtStart(t, true, []string{redistest.Shared(t)}, func(c *config.Config) {
		c.Watch.MaxWatchers = n
		c.Watch.MaxPerIdentity = n
		c.Watch.MaxWait = config.Duration{Duration: 30 * time.Second}
		c.Watch.Heartbeat = config.Duration{Duration: time.Second}
	})
	_, order, tok := edgetest.SeedOne(env)
	etag := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok).etag()

	client := wtClient(t, n+16)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	early := make(chan string, n) // anything a watcher got before the end
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				a, err := wtLongPoll(ctx, client, env.URL, order.ID, tok, etag)
				if err == nil {
					early <- "long-poll answered: " + a.String()
				}
				return
			}
			s, a, err := wtTryOpen(client, env.URL, order.ID, tok, etag)
			switch {
			case err != nil:
				early <- "events: " + err.Error()
				return
			case s == nil:
				early <- "events: " + a.String()
				return
			}
			defer s.close()
			select {
			case <-ctx.Done():
			case <-s.done:
				early <- "event stream ended early"
			}
		}()
	}
	wtWaitGauge(t, env.Admin, "longpoll", n/2, 60*time.Second)
	wtWaitGauge(t, env.Admin, "sse", n/2, 60*time.Second)

	calls0 := edgetest.DetailCalls(env)
	time.Sleep(10 * time.Second)
	if d := edgetest.DetailCalls(env) - calls0; d != 0 {
		t.Errorf("%d watchers of an unchanged order made %d detail calls in 10s, want 0", n, d)
	}
	if w := wtWatchers(t, env.Admin, ""); w != n {
		t.Errorf("watchers gauge %v after 10s, want %d still waiting", w, n)
	}
	select {
	case msg := <-early:
		t.Errorf("a watcher of an unchanged order ended early: %s", msg)
	default:
	}
	cancel()
	wg.Wait()
	wtWaitGauge(t, env.Admin, "", 0, time.Second+5*time.Second)
}

// --- identity: a watcher gets only what detail would give it ----------------------

func TestWatch_NeverDeliversAnotherUsersOrder(t *testing.T) {
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		// One slot in all, taken by a legitimate watcher for the whole
		// test: a request that took a slot before its access was settled
		// would get 503 instead of AnqiCMS's answer.
		env := wtStart(t, verify, []string{redistest.Shared(t)}, func(c *config.Config) {
			c.Watch.MaxWatchers = 1
			c.Watch.MaxWait = config.Duration{Duration: 60 * time.Second}
		})
		users, orders := env.Fake.Seed(6, 2)
		tokens := map[int64]string{}
		for _, u := range users {
			tokens[u.ID] = env.Fake.Token(u.ID, 48*time.Hour)
		}
		// Each order's detail and ETag as its owner sees them.
		own := map[int64]wtAnswer{}
		for _, o := range orders {
			a := wtGet(t, edgetest.DetailURL(env.URL, o.ID), "token: "+tokens[o.UserID])
			if a.code != 0 {
				t.Fatalf("owner's detail of order %d: %v", o.ID, a)
			}
			own[o.ID] = a
		}

		holder := orders[0]
		held := make(chan wtAnswer, 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			a, _ := wtLongPoll(ctx, edgetest.Client, env.URL, holder.ID, tokens[holder.UserID], own[holder.ID].etag())
			held <- a
		}()
		defer func() { cancel(); <-held }()
		wtWaitGauge(t, env.Admin, "longpoll", 1, 10*time.Second)

		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 6))
		seed := rng.Uint64()
		rng = rand.New(rand.NewPCG(seed, 6))
		t.Logf("seed %d", seed)
		for i := range 60 {
			o := orders[rng.IntN(len(orders))]
			var watcher fake.User
			for {
				if watcher = users[rng.IntN(len(users))]; watcher.ID != o.UserID {
					break
				}
			}
			tok := tokens[watcher.ID]
			if !verify && i%10 == 9 {
				// A token AnqiCMS does not accept (anonymous to it); in
				// fingerprint mode anqi-edge still keys it as an identity.
				tok = tokens[watcher.ID] + "x"
			}
			// The watcher may even know the order's current ETag.
			etag := ""
			if rng.IntN(2) == 0 {
				etag = own[o.ID].etag()
			}
			detail := wtGet(t, edgetest.DetailURL(env.URL, o.ID), "token: "+tok)
			if detail.code == 0 {
				t.Fatalf("detail gave user %d order %d of user %d: the fake is not checking", watcher.ID, o.ID, o.UserID)
			}
			what := fmt.Sprintf("user %d watching order %d of user %d (etag %q)", watcher.ID, o.ID, o.UserID, etag)
			var got wtAnswer
			if rng.IntN(2) == 0 {
				got = wtGet(t, wtURL(env.URL, watch.WatchPath, o.ID, "etag="+url.QueryEscape(etag)), "token: "+tok)
				what = "long-poll: " + what
			} else {
				s, a := wtOpen(t, edgetest.Client, env.URL, o.ID, tok, etag)
				if s != nil {
					e, _, _ := s.nextEvent(2 * time.Second)
					t.Fatalf("events: %s: got an event stream, first event %+v", what, e)
				}
				got = a
				what = "events: " + what
			}
			if got.status != http.StatusOK || got.code == 0 || got.code == wtNoEnvelope {
				t.Fatalf("%s: %v, want AnqiCMS's error envelope", what, got)
			}
			if string(got.body) != string(detail.body) {
				t.Fatalf("%s: %s, but the detail endpoint answers that identity %s", what, got.body, detail.body)
			}
			if got.header.Get("ETag") != "" {
				t.Fatalf("%s: answer carries ETag %s", what, got.header.Get("ETag"))
			}
			for _, secret := range []string{o.Phone, o.Title, o.Content} {
				if strings.Contains(string(got.body), secret) {
					t.Fatalf("%s: answer contains %q", what, secret)
				}
			}
		}
		if w := wtWatchers(t, env.Admin, ""); w != 1 {
			t.Errorf("watchers gauge %v, want 1 (only the legitimate watcher)", w)
		}
		if r := edgetest.Metric(t, env.Admin, "anqi_edge_watch_rejected_total"); r != 0 {
			t.Errorf("%v watch requests were refused by a limit; no-access watchers must never reach admission", r)
		}
		select {
		case a := <-held:
			t.Fatalf("the legitimate watcher was answered while nothing changed: %v", a)
		default:
		}
	})
}

// --- Server-Sent Events -----------------------------------------------------------

func TestWatch_EventsStreamTheDetailThenEachChangeWithHeartbeatsAndResume(t *testing.T) {
	const beat = 200 * time.Millisecond
	edit := func(c *config.Config) { c.Watch.Heartbeat = config.Duration{Duration: beat} }
	env := wtStart(t, false, []string{redistest.Shared(t)}, edit)
	_, bURL, bAdmin := env.Replica(t, wtConfig(edit))
	edgetest.Subscribed(t, env.Admin, bAdmin)
	_, order, tok := edgetest.SeedOne(env)
	detail := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok)

	// First event: the current detail, id = its ETag; then heartbeats.
	s, a := wtOpen(t, edgetest.Client, env.URL, order.ID, tok, "")
	if s == nil {
		t.Fatalf("events: %v, want a stream", a)
	}
	if cc := a.header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q, want no-cache", cc)
	}
	first, _, ok := s.nextEvent(5 * time.Second)
	if !ok {
		t.Fatalf("no first event (stream error %v)", s.err)
	}
	if first.event != "detail" || first.id != detail.etag() || first.data != string(detail.body) {
		t.Fatalf("first event %+v\nwant id %s and data = the detail body %s", first, detail.etag(), detail.body)
	}
	beats := 0
	for deadline := time.Now().Add(10 * time.Second); beats < 3; {
		e, ok := s.next(time.Until(deadline))
		if !ok {
			t.Fatalf("only %d heartbeats in 10s with watch.heartbeat = %v", beats, beat)
		}
		if e.comment != "heartbeat" {
			t.Fatalf("unexpected %+v on an unchanged order", e)
		}
		beats++
	}
	s.close()
	wtWaitGauge(t, env.Admin, "sse", 0, 5*time.Second)

	// Reconnect, to the other replica, with Last-Event-ID = the current
	// ETag: no duplicate of the detail, only heartbeats.
	s2, a := wtOpen(t, edgetest.Client, bURL, order.ID, tok, first.id)
	if s2 == nil {
		t.Fatalf("reconnect: %v", a)
	}
	e, beats, ok := s2.nextEvent(5 * beat)
	if ok {
		t.Fatalf("reconnect with Last-Event-ID = current ETag got %+v, want no event", e)
	}
	if beats < 2 {
		t.Errorf("resumed stream: %d heartbeats in %v, want ≥2", beats, 5*beat)
	}
	wtWaitGauge(t, bAdmin, "sse", 1, 5*time.Second)

	// A change through replica A reaches the stream on replica B.
	events0 := edgetest.Metric(t, bAdmin, "anqi_edge_watch_events_total")
	if code := edgetest.Send(t, env.URL, order.ID, tok, "pushed over SSE"); code != 0 {
		t.Fatalf("send: code %d", code)
	}
	e, _, ok = s2.nextEvent(10 * time.Second)
	if !ok {
		t.Fatalf("no event for the change (stream error %v)", s2.err)
	}
	now := wtGet(t, edgetest.DetailURL(bURL, order.ID), "token: "+tok)
	if e.event != "detail" || e.id == first.id || e.id != now.etag() || e.data != string(now.body) || !now.has("pushed over SSE") {
		t.Fatalf("change event %+v\nwant id %s and the new detail %s", e, now.etag(), now.body)
	}
	if d := edgetest.Metric(t, bAdmin, "anqi_edge_watch_events_total") - events0; d != 1 {
		t.Errorf("watch_events_total grew by %v, want 1", d)
	}
	// Exactly one event for one change.
	if e, _, ok := s2.nextEvent(3 * beat); ok {
		t.Fatalf("a second event %+v for one change", e)
	}

	// A client that missed the change (stale Last-Event-ID) gets the
	// current detail at once.
	s3, _ := wtOpen(t, edgetest.Client, env.URL, order.ID, tok, first.id)
	if s3 == nil {
		t.Fatal("no stream for a stale Last-Event-ID")
	}
	if e, _, ok := s3.nextEvent(5 * time.Second); !ok || e.id != now.etag() {
		t.Fatalf("stale Last-Event-ID: first event %+v, want id %s", e, now.etag())
	}
}

// --- reaping, limits, shutdown -----------------------------------------------------

// 500 watchers (half long-poll, half SSE) whose clients go away free their
// slots within watch.heartbeat: both kinds peek at the socket every
// heartbeat (long-polls at most every second). The asserted bound adds 3s
// of slack for the loaded machine; the measured time is logged.
func TestWatch_DisconnectedWatchersAreReapedWithinAHeartbeat(t *testing.T) {
	const n = 500
	const beat = 500 * time.Millisecond
	env := wtStart(t, true, nil, func(c *config.Config) {
		c.Watch.MaxWatchers = n
		c.Watch.MaxPerIdentity = n
		c.Watch.Heartbeat = config.Duration{Duration: beat}
		c.Watch.MaxWait = config.Duration{Duration: 60 * time.Second}
	})
	_, order, tok := edgetest.SeedOne(env)
	etag := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok).etag()

	client := wtClient(t, n+16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				wtLongPoll(ctx, client, env.URL, order.ID, tok, etag)
				return
			}
			if s, _, err := wtTryOpen(client, env.URL, order.ID, tok, ""); err == nil && s != nil {
				defer s.close()
				<-ctx.Done()
			}
		}()
	}
	wtWaitGauge(t, env.Admin, "longpoll", n/2, 60*time.Second)
	wtWaitGauge(t, env.Admin, "sse", n/2, 60*time.Second)

	// Every client hangs up. Without the probe a long-poll would hold its
	// slot until watch.max_wait (60s) and a stream until a heartbeat write
	// failed; the bound is far below max_wait but does not assume an idle
	// machine: on a loaded 2-core CI runner, 500 goroutines' probes and
	// the scrapes themselves take seconds (issue 10, item 14 — the
	// product frees slots within a heartbeat, the old 3.5s bound measured
	// the machine). How fast it is, is logged, and measured by benchmarks.
	start := time.Now()
	cancel()
	wg.Wait()
	wtWaitGauge(t, env.Admin, "", 0, 20*time.Second)
	took := time.Since(start)
	t.Logf("%d disconnected watchers reaped in %v (watch.heartbeat %v)", n, took, beat)

	// The slots are free again: the limit admits a new watcher.
	got := make(chan wtAnswer, 1)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() {
		a, _ := wtLongPoll(ctx2, edgetest.Client, env.URL, order.ID, tok, etag)
		got <- a
	}()
	wtWaitGauge(t, env.Admin, "longpoll", 1, 10*time.Second)
	cancel2()
	<-got

	// HEAD of the event stream: headers only, and no slot is taken (it
	// used to stream a body the client never asked for and hold a slot
	// until a write failed: the watcher left behind under load).
	resp, _ := edgetest.Do(t, http.MethodHead, wtURL(env.URL, watch.EventsPath, order.ID, ""), nil, "token: "+tok)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("HEAD events: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	wtWaitGauge(t, env.Admin, "", 0, 20*time.Second)
}

func TestWatch_LimitsAnswer503WithAnEnvelope(t *testing.T) {
	env := wtStart(t, true, nil, func(c *config.Config) {
		c.Watch.MaxWatchers = 3
		c.Watch.MaxPerIdentity = 2
		c.Watch.MaxWait = config.Duration{Duration: 60 * time.Second}
	})
	users, orders := env.Fake.Seed(3, 1)
	tok := func(i int) string { return env.Fake.Token(users[i].ID, 48*time.Hour) }
	etag := func(i int) string {
		return wtGet(t, edgetest.DetailURL(env.URL, orders[i].ID), "token: "+tok(i)).etag()
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wait := func(i int) {
		e := etag(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			wtLongPoll(ctx, edgetest.Client, env.URL, orders[i].ID, tok(i), e)
		}()
	}
	want503 := func(what string, a wtAnswer) {
		t.Helper()
		if a.status != http.StatusServiceUnavailable || a.code != -1 || !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
			t.Fatalf("%s: %v, want 503 with a JSON envelope code -1", what, a)
		}
	}

	// User 0 reaches the per-identity cap (2).
	wait(0)
	wait(0)
	wtWaitGauge(t, env.Admin, "longpoll", 2, 10*time.Second)
	want503("third long-poll of one identity", wtGet(t, wtURL(env.URL, watch.WatchPath, orders[0].ID, "etag="+url.QueryEscape(etag(0))), "token: "+tok(0)))
	s, a := wtOpen(t, edgetest.Client, env.URL, orders[0].ID, tok(0), "")
	if s != nil {
		t.Fatal("an event stream beyond the per-identity cap was admitted")
	}
	want503("third watcher (SSE) of one identity", a)
	if r := edgetest.Metric(t, env.Admin, "anqi_edge_watch_rejected_total", `reason="identity"`); r != 2 {
		t.Errorf("watch_rejected_total{reason=identity} = %v, want 2", r)
	}
	// The cap is per identity: user 1 still gets in, filling max_watchers (3).
	wait(1)
	wtWaitGauge(t, env.Admin, "longpoll", 3, 10*time.Second)
	// Beyond max_watchers, for anyone.
	want503("long-poll beyond max_watchers", wtGet(t, wtURL(env.URL, watch.WatchPath, orders[2].ID, "etag="+url.QueryEscape(etag(2))), "token: "+tok(2)))
	if s, a := wtOpen(t, edgetest.Client, env.URL, orders[2].ID, tok(2), ""); s != nil {
		t.Fatal("an event stream beyond max_watchers was admitted")
	} else {
		want503("SSE beyond max_watchers", a)
	}
	if r := edgetest.Metric(t, env.Admin, "anqi_edge_watch_rejected_total", `reason="global"`); r != 2 {
		t.Errorf("watch_rejected_total{reason=global} = %v, want 2", r)
	}
	// A watcher that would be answered at once needs no slot.
	if a := wtGet(t, wtURL(env.URL, watch.WatchPath, orders[2].ID, ""), "token: "+tok(2)); a.status != http.StatusOK || a.code != 0 {
		t.Fatalf("long-poll without an etag at the limit: %v, want the detail", a)
	}
	if w := wtWatchers(t, env.Admin, ""); w != 3 {
		t.Errorf("watchers gauge %v, want 3", w)
	}
}

func TestWatch_ShutdownEndsLongPollsWith304AndStreamsWithAFinalEvent(t *testing.T) {
	env := wtStart(t, true, nil, func(c *config.Config) {
		c.Watch.MaxWait = config.Duration{Duration: 60 * time.Second}
	})
	_, order, tok := edgetest.SeedOne(env)
	etag := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok).etag()

	const polls = 5
	got := make(chan wtAnswer, polls)
	for range polls {
		go func() {
			a, err := wtLongPoll(context.Background(), edgetest.Client, env.URL, order.ID, tok, etag)
			if err != nil {
				a.body = []byte(err.Error())
			}
			got <- a
		}()
	}
	s, a := wtOpen(t, edgetest.Client, env.URL, order.ID, tok, "")
	if s == nil {
		t.Fatalf("events: %v", a)
	}
	if e, _, ok := s.nextEvent(5 * time.Second); !ok || e.event != "detail" {
		t.Fatalf("first event %+v", e)
	}
	wtWaitGauge(t, env.Admin, "longpoll", polls, 10*time.Second)
	wtWaitGauge(t, env.Admin, "sse", 1, 10*time.Second)

	start := time.Now()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- env.Edge.Shutdown(ctx)
	}()
	for i := range polls {
		select {
		case a := <-got:
			if a.status != http.StatusNotModified || a.etag() != etag {
				t.Errorf("long-poll %d at shutdown: %v, want 304 with ETag %s", i, a, etag)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("long-poll %d was not ended by Shutdown", i)
		}
	}
	rest, ended := s.ended(10 * time.Second)
	if !ended {
		t.Fatalf("the event stream did not end at Shutdown (got %+v)", rest)
	}
	var last wtEvent
	for _, e := range rest {
		if e.comment == "" {
			last = e
		}
	}
	if last.event != "shutdown" {
		t.Fatalf("stream ended with %+v (all: %+v), want a final shutdown event", last, rest)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the watchers ended")
	}
	// Watchers must not hold the drain up until server.shutdown_grace.
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Shutdown with watchers took %v", took)
	}
}

// Between Shutdown ending the watches and the listener closing, a new
// watcher is not refused with an error: a long-poll gets its 304 (or the
// changed detail), an event stream gets the current detail and the final
// shutdown event, so clients reconnect to another replica.
func TestWatch_WatchersArrivingDuringShutdownAreEndedCleanly(t *testing.T) {
	env := wtStart(t, true, nil, func(c *config.Config) {
		c.Watch.MaxWait = config.Duration{Duration: 60 * time.Second}
	})
	_, order, tok := edgetest.SeedOne(env)
	detail := wtGet(t, edgetest.DetailURL(env.URL, order.ID), "token: "+tok)
	env.Edge.Watch().Close()

	if a := wtGet(t, wtURL(env.URL, watch.WatchPath, order.ID, "etag="+url.QueryEscape(detail.etag())), "token: "+tok); a.status != http.StatusNotModified || a.etag() != detail.etag() {
		t.Errorf("long-poll with the current ETag during shutdown: %v, want 304 at once", a)
	}
	if a := wtGet(t, wtURL(env.URL, watch.WatchPath, order.ID, "etag=old"), "token: "+tok); a.status != http.StatusOK || string(a.body) != string(detail.body) {
		t.Errorf("long-poll with an old ETag during shutdown: %v, want the detail", a)
	}
	for _, last := range []string{"", detail.etag()} {
		s, a := wtOpen(t, edgetest.Client, env.URL, order.ID, tok, last)
		if s == nil {
			t.Fatalf("events (Last-Event-ID %q) during shutdown: %v, want a short stream", last, a)
		}
		got, ended := s.ended(5 * time.Second)
		if !ended {
			t.Fatalf("events (Last-Event-ID %q) during shutdown: stream did not end (got %+v)", last, got)
		}
		var want []wtEvent
		if last == "" {
			want = append(want, wtEvent{id: detail.etag(), event: "detail", data: string(detail.body)})
		}
		want = append(want, wtEvent{event: "shutdown", data: "{}"})
		if !slices.Equal(got, want) {
			t.Errorf("events (Last-Event-ID %q) during shutdown: %+v, want %+v", last, got, want)
		}
	}
	if w := wtWatchers(t, env.Admin, ""); w != 0 {
		t.Errorf("watchers gauge %v during shutdown, want 0", w)
	}
	if r := edgetest.Metric(t, env.Admin, "anqi_edge_watch_rejected_total"); r != 0 {
		t.Errorf("watch_rejected_total %v: shutdown is not a limit", r)
	}
}

// --- what is never subscribed ---------------------------------------------------

func TestWatch_BadIDIsAnsweredLocallyLikeDetail(t *testing.T) {
	env := wtStart(t, false, nil, nil)
	_, _, tok := edgetest.SeedOne(env)
	for _, q := range []string{"", "?id=", "?id=abc", "?id=0", "?id=-3", "?id=9223372036854775808", "?id=1&id=1", "?etag=x"} {
		detail := wtGet(t, env.URL+proxy.DetailPath+q, "token: "+tok)
		if detail.status != http.StatusOK || detail.code != -1 {
			t.Fatalf("detail%s: %v, want a local error", q, detail)
		}
		for _, path := range []string{watch.WatchPath, watch.EventsPath} {
			a := wtGet(t, env.URL+path+q, "token: "+tok)
			if a.status != detail.status || string(a.body) != string(detail.body) ||
				a.header.Get("Content-Type") != detail.header.Get("Content-Type") {
				t.Errorf("%s%s: %v, want the detail endpoint's %v", path, q, a, detail)
			}
		}
	}
	if n := edgetest.DetailCalls(env) + env.Fake.Calls(watch.WatchPath) + env.Fake.Calls(watch.EventsPath); n != 0 {
		t.Errorf("bad ids reached AnqiCMS %d times, want 0", n)
	}
	if w := wtWatchers(t, env.Admin, ""); w != 0 {
		t.Errorf("watchers gauge %v, want 0", w)
	}
}

func TestWatch_AnonymousIsForwardedAsADetailReadAndNotSubscribed(t *testing.T) {
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		env := wtStart(t, verify, nil, nil)
		_, order, _ := edgetest.SeedOne(env)
		headers := [][]string{{}, {"token: "}}
		if verify {
			// Verified mode also treats a token it cannot verify as anonymous.
			headers = append(headers, []string{"token: not-a-jwt"})
		}
		for _, h := range headers {
			for _, path := range []string{watch.WatchPath, watch.EventsPath} {
				calls0 := edgetest.DetailCalls(env)
				a := wtGet(t, wtURL(env.URL, path, order.ID, "etag=abc"), h...)
				if a.status != http.StatusOK || a.code != 1001 || a.header.Get("X-Cache") != "BYPASS" {
					t.Errorf("%s %v: %v, want AnqiCMS's 1001 forwarded (X-Cache BYPASS)", path, h, a)
				}
				if d := edgetest.DetailCalls(env) - calls0; d != 1 {
					t.Errorf("%s %v: %d detail calls reached AnqiCMS, want 1", path, h, d)
				}
			}
		}
		if n := env.Fake.Calls(watch.WatchPath) + env.Fake.Calls(watch.EventsPath); n != 0 {
			t.Errorf("AnqiCMS saw %d calls to watch paths it does not have", n)
		}
		if w := wtWatchers(t, env.Admin, ""); w != 0 {
			t.Errorf("watchers gauge %v, want 0", w)
		}
	})
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

// In fingerprint mode every token is its own cache identity, but the
// watcher cap counts the user: forty tokens of one user are still one user.
func TestWatch_PerIdentityCapCountsUsersNotTokensInFingerprintMode(t *testing.T) {
	env := wtStart(t, false, nil, func(c *config.Config) {
		c.Watch.MaxPerIdentity = 2
		c.Watch.MaxWait = config.Duration{Duration: 60 * time.Second}
	})
	users, orders := env.Fake.Seed(1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range 2 {
		// A distinct token each time (a later expiry), the same user.
		tok := env.Fake.Token(users[0].ID, 48*time.Hour+time.Duration(i)*time.Minute)
		e := wtGet(t, edgetest.DetailURL(env.URL, orders[0].ID), "token: "+tok).etag()
		wg.Add(1)
		go func() {
			defer wg.Done()
			wtLongPoll(ctx, edgetest.Client, env.URL, orders[0].ID, tok, e)
		}()
	}
	wtWaitGauge(t, env.Admin, "longpoll", 2, 10*time.Second)
	tok := env.Fake.Token(users[0].ID, 49*time.Hour)
	e := wtGet(t, edgetest.DetailURL(env.URL, orders[0].ID), "token: "+tok).etag()
	if a := wtGet(t, wtURL(env.URL, watch.WatchPath, orders[0].ID, "etag="+url.QueryEscape(e)), "token: "+tok); a.status != http.StatusServiceUnavailable {
		t.Fatalf("a third token of the same user: %v, want 503 (the cap counts the user)", a)
	}
}
