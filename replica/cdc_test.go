package replica_test

// Changes made behind the proxy (the admin panel writing to AnqiCMS's
// database) reach the cache through the binlog: end to end over real
// sockets, with a real MariaDB (binlog on), real Redis, the fake AnqiCMS
// keeping its orders in that database, and anqi-edge replicas with [cdc].

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/mariadbtest"
	"anqi-edge/internal/redistest"
	"anqi-edge/proxy"
	"anqi-edge/watch"
)

// cdcEnv is a MariaDB with the fake's tables, the fake on it, and one
// replica reading the binlog.
type cdcEnv struct {
	*edgetest.Env
	db    *mariadbtest.Server
	order fake.Order
	token string
}

func cdcConfig(db *mariadbtest.Server) func(*config.Config) {
	return func(c *config.Config) {
		c.CDC.Addr = db.Addr()
		c.CDC.User, c.CDC.Password = "cdc", "pw"
		c.CDC.Tables = []config.CDCTable{
			{Name: "communication_orders", OrderColumn: "id"},
			{Name: "communication_messages", OrderColumn: "comm_order_id"},
		}
		// Long enough that only an invalidation can show a change.
		c.Cache.TTL = config.Duration{Duration: time.Hour}
		c.Cache.Memory.TTL = config.Duration{Duration: time.Hour}
	}
}

func startCDC(t *testing.T) *cdcEnv {
	t.Helper()
	db := mariadbtest.Start(t)
	db.Exec(t, "CREATE DATABASE anqicms")
	db.ReplicationUser(t, "cdc", "pw", "anqicms")
	env := edgetest.Start(t, edgetest.Options{
		Redis:  []string{redistest.Shared(t)},
		Verify: true,
		FakeDB: db.Open(t, "root", "", "anqicms"),
		Config: cdcConfig(db),
	})
	_, o, tok := edgetest.SeedOne(env)
	e := &cdcEnv{Env: env, db: db, order: o, token: tok}
	edgetest.Eventually(t, "the binlog reader streaming", func() bool { return e.cdcState(t, env.Admin) == "streaming" })
	return e
}

func (e *cdcEnv) cdcState(t *testing.T, admin string) string {
	_, b := edgetest.Get(t, admin+"/readyz")
	var r struct {
		CDC struct {
			State string `json:"state"`
		} `json:"cdc"`
	}
	json.Unmarshal(b, &r)
	return r.CDC.State
}

// reply is the admin panel answering the customer: a write to the
// database only, never through anqi-edge.
func (e *cdcEnv) reply(t *testing.T, text string) time.Time {
	t.Helper()
	resp, err := http.Post(e.FakeURL+fake.AdminReplyPath, "application/json",
		strings.NewReader(`{"comm_order_id":`+strconv.FormatInt(e.order.ID, 10)+`,"content":"`+text+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin reply: HTTP %d", resp.StatusCode)
	}
	return time.Now() // the fake answers once its INSERT committed
}

// read returns the detail body and X-Cache through base.
func (e *cdcEnv) read(t *testing.T, base string) (string, string) {
	t.Helper()
	resp, b := edgetest.Get(t, edgetest.DetailURL(base, e.order.ID), "token: "+e.token)
	return string(b), resp.Header.Get("X-Cache")
}

func TestCDC_AdminReplyBehindTheProxyIsInTheNextRead(t *testing.T) {
	e := startCDC(t)
	e.read(t, e.URL)
	if _, x := e.read(t, e.URL); x != "HIT" {
		t.Fatalf("warm read: X-Cache %s, want HIT", x)
	}
	committed := e.reply(t, "Your cake is ready")
	var seen time.Time
	edgetest.Eventually(t, "the admin reply in a read", func() bool {
		body, _ := e.read(t, e.URL)
		seen = time.Now()
		return strings.Contains(body, "Your cake is ready")
	})
	// The 100ms claim is measured in bench/ (timing does not belong in a
	// test on a busy machine); here the change must show, and the time is
	// logged.
	t.Logf("commit → first read that shows it: %v", seen.Sub(committed).Round(time.Millisecond))
	if n := edgetest.Metric(t, e.Admin, "anqi_edge_invalidations_total", "source=cdc"); n < 1 {
		t.Errorf("invalidations{source=cdc} = %v, want ≥ 1", n)
	}
	if n := edgetest.Metric(t, e.Admin, "anqi_edge_cdc_events_total"); n < 1 {
		t.Errorf("anqi_edge_cdc_events_total = %v, want ≥ 1", n)
	}
}

func TestCDC_TwoReplicasEachRefillOncePerChangePlusTheSettleGuard(t *testing.T) {
	e := startCDC(t)
	_, b, bAdmin := e.Replica(t, cdcConfig(e.db))
	edgetest.Subscribed(t, e.Admin, bAdmin)
	for _, base := range []string{e.URL, b} {
		e.read(t, base)
	}
	before := e.Fake.Calls(proxy.DetailPath)
	e.reply(t, "one change")
	// Both replicas keep reading past the settle guard (500ms).
	deadline := time.Now().Add(3 * time.Second)
	for _, base := range []string{e.URL, b} {
		edgetest.Eventually(t, "the change on "+base, func() bool {
			body, _ := e.read(t, base)
			return strings.Contains(body, "one change")
		})
	}
	for time.Now().Before(deadline) {
		e.read(t, e.URL)
		e.read(t, b)
		time.Sleep(20 * time.Millisecond)
	}
	// One identity, two replicas sharing Redis: the change costs at most
	// one upstream call per replica, and the settle guard one more each.
	if n := e.Fake.Calls(proxy.DetailPath) - before; n < 1 || n > 4 {
		t.Fatalf("%d upstream detail calls for one change on two replicas, want 1 to 4", n)
	}
	// Exactly one replica reads the stream (the lease).
	if n := edgetest.Metric(t, e.Admin, "anqi_edge_cdc_leader") + edgetest.Metric(t, bAdmin, "anqi_edge_cdc_leader"); n != 1 {
		t.Fatalf("%v replicas lead the binlog stream, want 1", n)
	}
}

func TestCDC_WatchersAreWokenByAnAdminReply(t *testing.T) {
	e := startCDC(t)
	etag := func() string {
		resp, _ := edgetest.Get(t, edgetest.DetailURL(e.URL, e.order.ID), "token: "+e.token)
		return resp.Header.Get("ETag")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// SSE first: its first event is the current detail.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		e.URL+watch.EventsPath+"?id="+strconv.FormatInt(e.order.ID, 10), nil)
	req.Header.Set("token", e.token)
	sse, err := edgetest.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sse.Body.Close()
	events := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(sse.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var data strings.Builder
		for sc.Scan() {
			line := sc.Text()
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				data.WriteString(d)
			} else if line == "" && data.Len() > 0 {
				events <- data.String()
				data.Reset()
			}
		}
		close(events)
	}()
	<-events // the current detail

	// Then a long-poll on the same ETag.
	polled := make(chan string, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
			e.URL+watch.WatchPath+"?id="+strconv.FormatInt(e.order.ID, 10)+"&etag="+strings.Trim(etag, `"`), nil)
		req.Header.Set("token", e.token)
		resp, err := edgetest.Client.Do(req)
		if err != nil {
			polled <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		polled <- strconv.Itoa(resp.StatusCode) + " " + string(b)
	}()
	edgetest.Eventually(t, "both watchers subscribed", func() bool {
		return edgetest.Metric(t, e.Admin, "anqi_edge_watchers") == 2
	})
	e.reply(t, "Quote attached")
	select {
	case got := <-polled:
		if !strings.HasPrefix(got, "200 ") || !strings.Contains(got, "Quote attached") {
			t.Fatalf("long-poll after the admin reply: %.200s", got)
		}
	case <-ctx.Done():
		t.Fatal("the long-poll was never woken by the admin reply")
	}
	select {
	case ev := <-events:
		if !strings.Contains(ev, "Quote attached") {
			t.Fatalf("SSE event after the admin reply: %.200s", ev)
		}
	case <-ctx.Done():
		t.Fatal("the SSE stream was never woken by the admin reply")
	}
}
