package proxy_test

// Issue 4, race-free invalidation across replicas: write hooks, the purge
// API, the fill-versus-invalidation guard, pub/sub between replicas,
// queued invalidations while Redis is unreachable, and Redis Cluster. Every
// test runs real redis-server processes (internal/redistest) and real
// sockets; helpers are prefixed inv so they cannot collide with other test
// files of package proxy_test.

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/redistest"
	"anqi-edge/proxy"
)

// invDetail is what the tests look at in a detail answer.
type invDetail struct {
	status   int
	xcache   string
	code     int
	messages []string // contents, oldest first
	body     []byte
}

func (d invDetail) has(content string) bool {
	for _, m := range d.messages {
		if m == content {
			return true
		}
	}
	return false
}

// invGet reads order id through base with token; it returns an error
// instead of failing so reader goroutines can use it.
func invGet(base string, id int64, token string) (invDetail, error) {
	req, err := http.NewRequest(http.MethodGet, edgetest.DetailURL(base, id), nil)
	if err != nil {
		return invDetail{}, err
	}
	req.Header.Set("token", token)
	resp, err := edgetest.Client.Do(req)
	if err != nil {
		return invDetail{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return invDetail{}, err
	}
	d := invDetail{status: resp.StatusCode, xcache: resp.Header.Get("X-Cache"), body: body}
	var env struct {
		Code int `json:"code"`
		Data *struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return d, fmt.Errorf("detail %d: HTTP %d, not JSON: %q", id, resp.StatusCode, body)
	}
	d.code = env.Code
	if env.Data != nil {
		for _, m := range env.Data.Messages {
			d.messages = append(d.messages, m.Content)
		}
	}
	return d, nil
}

func invRead(t testing.TB, base string, id int64, token string) invDetail {
	t.Helper()
	d, err := invGet(base, id, token)
	if err != nil {
		t.Fatal(err)
	}
	if d.status != http.StatusOK || d.code != 0 {
		t.Fatalf("detail %d via %s: HTTP %d code %d: %s", id, base, d.status, d.code, d.body)
	}
	return d
}

// invWarm reads order id until base answers it as an L1 HIT.
func invWarm(t testing.TB, base string, id int64, token string) invDetail {
	t.Helper()
	for range 5 {
		if d := invRead(t, base, id, token); d.xcache == "HIT" {
			return d
		}
	}
	t.Fatalf("order %d via %s never became a HIT", id, base)
	return invDetail{}
}

// invStart seeds a fake with two users of two orders each (user 1 owns
// orders 1 and 2, user 2 owns 3 and 4) and starts one replica on redis.
func invStart(t testing.TB, redisAddrs []string, edit func(*config.Config)) (*edgetest.Env, string, string) {
	t.Helper()
	env := edgetest.Start(t, edgetest.Options{Redis: redisAddrs, Verify: true, Config: edit})
	env.Fake.Seed(2, 2)
	return env, env.Fake.Token(1, 24*time.Hour), env.Fake.Token(2, 24*time.Hour)
}

// invCluster starts a three-master cluster, or skips when its tools are
// missing outside CI (redistest decides).
func invCluster(t *testing.T) ([]string, func(*config.Config)) {
	t.Helper()
	c := redistest.StartCluster(t)
	return c.Addrs(), func(cfg *config.Config) { cfg.Redis.Cluster = true }
}

// --- read-your-writes -----------------------------------------------------

func TestInvalidate_SentMessageIsAlwaysInTheNextRead(t *testing.T) {
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, nil)
	edgetest.Subscribed(t, env.Admin)
	testReadYourWrites(t, env, tok, 1)
}

// invNoRedisErrors checks that no replica saw a Redis error (on a cluster:
// no CROSSSLOT, no MOVED left unhandled).
func invNoRedisErrors(t *testing.T, admins ...string) {
	t.Helper()
	for _, a := range admins {
		if n := edgetest.Metric(t, a, "anqi_edge_redis_errors_total"); n != 0 {
			t.Errorf("%s: anqi_edge_redis_errors_total = %v, want 0", a, n)
		}
	}
}

// Scale-out: the same guarantees on a three-master Redis Cluster, where
// every order's keys must share a slot and pub/sub must reach replicas
// connected to other masters.
func TestInvalidate_ClusterKeepsReadYourWritesAndReplicasInSync(t *testing.T) {
	addrs, edit := invCluster(t)
	t.Run("read-your-writes", func(t *testing.T) {
		env, tok, _ := invStart(t, addrs, edit)
		edgetest.Subscribed(t, env.Admin)
		testReadYourWrites(t, env, tok, 1)
		invNoRedisErrors(t, env.Admin)
	})
	t.Run("two replicas", func(t *testing.T) {
		env, tok, _ := invStart(t, addrs, edit)
		_, bURL, bAdmin := env.Replica(t, edit)
		edgetest.Subscribed(t, env.Admin, bAdmin)
		testTwoReplicas(t, env, bURL, bAdmin, tok)
		invNoRedisErrors(t, env.Admin, bAdmin)
		// PUBLISH on a cluster counts one node's subscribers only: the
		// writes did not wait for a count that means nothing.
		if n := edgetest.Metric(t, env.Admin, "anqi_edge_invalidation_confirm_total", `result="skipped"`); n == 0 {
			t.Error("writes on a cluster were not counted as skipped")
		}
		if n := edgetest.Metric(t, env.Admin, "anqi_edge_invalidation_confirm_total", `result="timeout"`); n != 0 {
			t.Errorf("writes on a cluster waited and timed out %v times", n)
		}
	})
}

func TestInvalidate_WithoutRedisWritesStillInvalidateL1(t *testing.T) {
	env, tok, _ := invStart(t, nil, nil)
	testReadYourWrites(t, env, tok, 1)

	// Purge drops the L1 entry too.
	invWarm(t, env.URL, 2, tok)
	edgetest.Purge(t, env.Admin, 2)
	if d := invRead(t, env.URL, 2, tok); d.xcache != "MISS" {
		t.Fatalf("read after purge without Redis: X-Cache %s, want MISS", d.xcache)
	}
	if _, b := edgetest.Get(t, env.Admin+"/readyz"); !strings.Contains(string(b), `"redis":"disabled"`) {
		t.Errorf("readyz without Redis should say redis disabled: %s", b)
	}
}

// testReadYourWrites sends 100 messages through the edge, each followed by a
// read that must contain it, while readers poll the same order and must
// never see its message count go down.
func testReadYourWrites(t *testing.T, env *edgetest.Env, tok string, order int64) {
	t.Helper()
	before := invWarm(t, env.URL, order, tok)
	base := len(before.messages)

	done := make(chan struct{})
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	var reads atomic.Int64
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := base
			deadline := time.Now().Add(60 * time.Second)
			for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
				select {
				case <-done:
					return
				default:
				}
				d, err := invGet(env.URL, order, tok)
				if err == nil && (d.status != http.StatusOK || d.code != 0) {
					err = fmt.Errorf("reader %d: HTTP %d code %d: %s", r, d.status, d.code, d.body)
				}
				if err == nil && len(d.messages) < last {
					err = fmt.Errorf("reader %d: message count went back from %d to %d (X-Cache %s)",
						r, last, len(d.messages), d.xcache)
				}
				if err != nil {
					errs <- err
					return
				}
				last = len(d.messages)
				reads.Add(1)
			}
		}()
	}
	for i := range 100 {
		content := fmt.Sprintf("ryw %d of %s", i, t.Name())
		if code := edgetest.Send(t, env.URL, order, tok, content); code != 0 {
			close(done)
			wg.Wait()
			t.Fatalf("round %d: send answered code %d", i, code)
		}
		d := invRead(t, env.URL, order, tok)
		if !d.has(content) || len(d.messages) != base+i+1 {
			close(done)
			wg.Wait()
			t.Fatalf("round %d: read after send (X-Cache %s) has %d messages, want %d including %q",
				i, d.xcache, len(d.messages), base+i+1, content)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("concurrent reads during 100 rounds: %d", reads.Load())
}

// --- the fill/invalidation race ---------------------------------------------

func TestInvalidate_FillHeldAcrossAnInvalidationIsNeverStored(t *testing.T) {
	for _, via := range []string{"message", "purge"} {
		t.Run(via, func(t *testing.T) {
			addr := redistest.Shared(t)
			env, tok, _ := invStart(t, []string{addr}, nil)
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { rdb.Close() })
			const order = 2
			old := len(invRead(t, env.URL, 1, tok).messages) // unrelated order, warms the connection

			hold := env.Fake.Hold(proxy.DetailPath)
			defer hold.Release()
			type result struct {
				d   invDetail
				err error
			}
			first := make(chan result, 1)
			go func() {
				d, err := invGet(env.URL, order, tok)
				first <- result{d, err}
			}()
			select {
			case <-hold.Started:
			case <-time.After(10 * time.Second):
				t.Fatal("the first read never reached the fake")
			}
			o, _ := env.Fake.Order(order)
			stale := len(o.Messages)
			_ = old

			content := "sent while a fill was in flight"
			switch via {
			case "message":
				if code := edgetest.Send(t, env.URL, order, tok, content); code != 0 {
					t.Fatalf("send answered code %d", code)
				}
			case "purge":
				env.Fake.AppendMessage(order, fake.Message{Content: content})
				edgetest.Purge(t, env.Admin, order)
			}
			hold.Release()
			var r result
			select {
			case r = <-first:
			case <-time.After(10 * time.Second):
				t.Fatal("the held read never answered")
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			// It asked before the change, so it may carry the old body...
			if len(r.d.messages) != stale || r.d.has(content) {
				t.Fatalf("held read: %d messages (has new: %v), want the %d it was computed with",
					len(r.d.messages), r.d.has(content), stale)
			}
			// ...but that body must not have been kept anywhere.
			prefix := env.Config.Redis.KeyPrefix + ":{o:" + strconv.Itoa(order) + "}:e:"
			keys, err := rdb.Keys(context.Background(), prefix+"*").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				v, _ := rdb.Get(context.Background(), k).Result()
				if !strings.Contains(v, content) {
					t.Errorf("Redis kept the stale fill under %s", k)
				}
			}
			if n := edgetest.Metric(t, env.Admin, "anqi_edge_cache_fills_total", `tier="redis"`, `result="dropped_generation"`); n != 1 {
				t.Errorf("redis dropped_generation fills = %v, want 1", n)
			}
			// What Redis refused is not offered to L1 at all.
			if n := edgetest.Metric(t, env.Admin, "anqi_edge_cache_fills_total", `tier="l1"`, `result="refused_by_redis"`); n != 1 {
				t.Errorf("l1 refused_by_redis fills = %v, want 1", n)
			}
			d := invRead(t, env.URL, order, tok)
			if d.xcache != "MISS" || !d.has(content) {
				t.Fatalf("read after the race: X-Cache %s, has new message %v; want a MISS with it", d.xcache, d.has(content))
			}
			if d := invRead(t, env.URL, order, tok); d.xcache != "HIT" || !d.has(content) {
				t.Fatalf("second read after the race: X-Cache %s, has new message %v; want a HIT with it", d.xcache, d.has(content))
			}
		})
	}
}

// --- two replicas ---------------------------------------------------------

func TestInvalidate_ReplicasSeeEachOthersChanges(t *testing.T) {
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, nil)
	_, bURL, bAdmin := env.Replica(t, nil)
	edgetest.Subscribed(t, env.Admin, bAdmin)
	testTwoReplicas(t, env, bURL, bAdmin, tok)
	invNoRedisErrors(t, env.Admin, bAdmin)
}

func testTwoReplicas(t *testing.T, env *edgetest.Env, bURL, bAdmin, tok string) {
	t.Helper()
	const order = 1
	// A message sent through A shows on B's next read, 100ms later, although
	// B had the order as an L1 HIT.
	for i := range 5 {
		invWarm(t, bURL, order, tok)
		content := fmt.Sprintf("through A, round %d", i)
		if code := edgetest.Send(t, env.URL, order, tok, content); code != 0 {
			t.Fatalf("send answered code %d", code)
		}
		time.Sleep(100 * time.Millisecond)
		if d := invRead(t, bURL, order, tok); !d.has(content) {
			t.Fatalf("round %d: B's read 100ms after the send (X-Cache %s) lacks %q", i, d.xcache, content)
		}
	}
	// B's own message comes back to it over pub/sub and is ignored there:
	// one change, one refill per replica.
	bPubsub := edgetest.Metric(t, bAdmin, "anqi_edge_invalidations_total", `source="pubsub"`)
	aPubsub := edgetest.Metric(t, env.Admin, "anqi_edge_invalidations_total", `source="pubsub"`)
	invWarm(t, bURL, order, tok)
	if code := edgetest.Send(t, bURL, order, tok, "through B"); code != 0 {
		t.Fatalf("send answered code %d", code)
	}
	edgetest.Eventually(t, "A hears B's invalidation", func() bool {
		return edgetest.Metric(t, env.Admin, "anqi_edge_invalidations_total", `source="pubsub"`) > aPubsub
	})
	if n := edgetest.Metric(t, bAdmin, "anqi_edge_invalidations_total", `source="pubsub"`); n != bPubsub {
		t.Errorf("B applied its own pub/sub message: pubsub invalidations %v -> %v", bPubsub, n)
	}
	if d := invRead(t, bURL, order, tok); d.xcache != "MISS" || !d.has("through B") {
		t.Errorf("B after its own send: X-Cache %s, has message %v", d.xcache, d.has("through B"))
	}
	if d := invRead(t, bURL, order, tok); d.xcache != "HIT" {
		t.Errorf("B refilled twice for one change: X-Cache %s on the second read", d.xcache)
	}

	// A purge on B drops A's L1 copy.
	old := invWarm(t, env.URL, order, tok)
	edgetest.Purge(t, bAdmin, order)
	time.Sleep(100 * time.Millisecond)
	if d := invRead(t, env.URL, order, tok); d.xcache == "HIT" {
		t.Fatalf("A's read 100ms after a purge on B is still a HIT (of %d messages)", len(old.messages))
	}
}

// Read-your-writes across replicas: a write through A is answered only
// once B has dropped its copy, so the writer's next read through B shows
// it. Many rounds, so a race between B's pub/sub handling and A's answer
// would show.
func TestInvalidate_WriteThroughOneReplicaIsInTheNextReadThroughAnother(t *testing.T) {
	// The largest bound: a slow machine should confirm, not time out.
	edit := func(c *config.Config) { c.Cache.InvalidateConfirmTimeout = config.Duration{Duration: time.Second} }
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, edit)
	b, bURL, bAdmin := env.Replica(t, edit)
	edgetest.Subscribed(t, env.Admin, bAdmin)
	const order, rounds = 1, 200
	heard := b.Metrics().Invalidations.WithLabelValues("pubsub")
	confirmed := env.Edge.Metrics().InvalidationConfirms.WithLabelValues("confirmed")
	for i := range rounds {
		invWarm(t, bURL, order, tok)
		heardBefore, confirmedBefore := testutil.ToFloat64(heard), testutil.ToFloat64(confirmed)
		content := fmt.Sprintf("through A, round %d", i)
		if code := edgetest.Send(t, env.URL, order, tok, content); code != 0 {
			t.Fatalf("round %d: send answered code %d", i, code)
		}
		if testutil.ToFloat64(confirmed) == confirmedBefore {
			// Timed out (a badly overloaded machine): no promise to check.
			t.Logf("round %d: not confirmed within the bound", i)
			continue
		}
		if testutil.ToFloat64(heard) == heardBefore {
			t.Fatalf("round %d: A answered the write before B applied its invalidation", i)
		}
		if d := invRead(t, bURL, order, tok); !d.has(content) {
			t.Fatalf("round %d: B's read right after the write through A (X-Cache %s) lacks %q", i, d.xcache, content)
		}
	}
	if n := testutil.ToFloat64(confirmed); n == 0 {
		t.Fatalf("no write of %d was confirmed", rounds)
	}
	invNoRedisErrors(t, env.Admin, bAdmin)
}

// A subscriber that never acks (a replica from before acks, during a
// rolling upgrade; a redis-cli SUBSCRIBE left open) costs each write its
// bound, and nothing else. The bound is reloadable; 0 = no wait at all.
func TestInvalidate_SubscriberThatNeverAcksDelaysTheWriteByItsBoundOnly(t *testing.T) {
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, func(c *config.Config) {
		c.Cache.InvalidateConfirmTimeout = config.Duration{}
	})
	_, bURL, bAdmin := env.Replica(t, nil)
	edgetest.Subscribed(t, env.Admin, bAdmin)
	raw := redis.NewClient(&redis.Options{Addr: redistest.Shared(t)})
	t.Cleanup(func() { raw.Close() })
	ps := raw.Subscribe(context.Background(), env.Config.Redis.Channel)
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatalf("raw subscriber: %v", err)
	}
	confirms := func(result string) float64 {
		return edgetest.Metric(t, env.Admin, "anqi_edge_invalidation_confirm_total", `result="`+result+`"`)
	}
	write := func(content string) {
		t.Helper()
		invWarm(t, bURL, 1, tok)
		if code := edgetest.Send(t, env.URL, 1, tok, content); code != 0 {
			t.Fatalf("send answered code %d", code)
		}
		if d := invRead(t, env.URL, 1, tok); !d.has(content) {
			t.Errorf("the writer's own replica answers without %q (X-Cache %s)", content, d.xcache)
		}
		edgetest.Eventually(t, "the write to show through B", func() bool {
			return invRead(t, bURL, 1, tok).has(content)
		})
	}

	write("no wait configured")
	if n := confirms("skipped"); n != 1 {
		t.Errorf("with invalidate_confirm_timeout 0: skipped = %v, want 1", n)
	}

	next := *env.Config
	next.Cache.InvalidateConfirmTimeout = config.Duration{Duration: 50 * time.Millisecond}
	if restart, err := env.Edge.Reload(&next); err != nil || len(restart) != 0 {
		t.Fatalf("reload: restart needed for %v, err %v", restart, err)
	}
	write("past a silent subscriber")
	if n := confirms("timeout"); n != 1 {
		t.Errorf("confirm timeouts = %v, want 1 (confirmed %v)", n, confirms("confirmed"))
	}
}

// --- the subscription -----------------------------------------------------

func TestInvalidate_BrokenSubscriptionClearsL1OnReconnect(t *testing.T) {
	srv := redistest.Start(t)
	env, tok, _ := invStart(t, []string{srv.Addr()}, nil)
	edgetest.Subscribed(t, env.Admin)
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_pubsub_up"); n != 1 {
		t.Fatalf("anqi_edge_pubsub_up = %v while subscribed, want 1", n)
	}
	const order = 2
	invWarm(t, env.URL, order, tok)
	clears := edgetest.Metric(t, env.Admin, "anqi_edge_l1_clears_total")

	srv.Kill()
	edgetest.Eventually(t, "readyz to report the subscription down", func() bool {
		r := edgetest.Readyz(t, env.Admin)
		return !r.Redis.Subscribed && r.Redis.Ping != "ok"
	})
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_pubsub_up"); n != 0 {
		t.Fatalf("anqi_edge_pubsub_up = %v with Redis down, want 0", n)
	}
	// A change nobody tells this replica about (the admin panel; any
	// invalidation published while the subscription was down).
	env.Fake.AppendMessage(order, fake.Message{Content: "missed while unsubscribed"})

	srv.Restart(t)
	edgetest.Subscribed(t, env.Admin)
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_pubsub_up"); n != 1 {
		t.Fatalf("anqi_edge_pubsub_up = %v after reconnect, want 1", n)
	}
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_l1_clears_total"); n <= clears {
		t.Fatalf("anqi_edge_l1_clears_total stayed at %v after the subscription came back", n)
	}
	d := invRead(t, env.URL, order, tok)
	if d.xcache == "HIT" || !d.has("missed while unsubscribed") {
		t.Fatalf("first read after reconnect: X-Cache %s, has the missed change %v", d.xcache, d.has("missed while unsubscribed"))
	}
	for range 3 {
		if d := invRead(t, env.URL, order, tok); !d.has("missed while unsubscribed") {
			t.Fatalf("stale read after reconnect (X-Cache %s)", d.xcache)
		}
	}
}

// --- Redis unreachable: queued invalidations --------------------------------

func TestInvalidate_MessageSentWhileRedisIsDownIsNotLost(t *testing.T) {
	// killed: Redis dies and comes back empty. partitioned: only A loses
	// Redis (a gate between them) and Redis keeps the old entry B filled,
	// which A's queued invalidation must drop when it reconnects.
	for _, mode := range []string{"killed", "partitioned"} {
		t.Run(mode, func(t *testing.T) {
			var down, up func()
			var env *edgetest.Env
			var tok, bURL, bAdmin string
			if mode == "killed" {
				srv := redistest.Start(t)
				env, tok, _ = invStart(t, []string{srv.Addr()}, nil)
				_, bURL, bAdmin = env.Replica(t, nil)
				down, up = srv.Kill, func() { srv.Restart(t) }
			} else {
				addr := redistest.Shared(t)
				gate := redistest.StartGate(t, addr)
				var prefix, channel string
				env, tok, _ = invStart(t, []string{gate.Addr()}, func(c *config.Config) {
					prefix, channel = c.Redis.KeyPrefix, c.Redis.Channel
				})
				_, bURL, bAdmin = env.Replica(t, func(c *config.Config) {
					c.Redis.Addrs = []string{addr}
					c.Redis.KeyPrefix, c.Redis.Channel = prefix, channel
				})
				down, up = func() { gate.SetDown(true) }, func() { gate.SetDown(false) }
			}
			edgetest.Subscribed(t, env.Admin, bAdmin)
			const order = 1
			invWarm(t, env.URL, order, tok)
			invWarm(t, bURL, order, tok) // B has it in L1, and it is in Redis

			down()
			content := "sent while Redis was down"
			if code := edgetest.Send(t, env.URL, order, tok, content); code != 0 {
				t.Fatalf("send with Redis down answered code %d", code)
			}
			if d := invRead(t, env.URL, order, tok); !d.has(content) {
				t.Fatalf("the sender's replica does not show its own write with Redis down (X-Cache %s)", d.xcache)
			}
			if r := edgetest.Readyz(t, env.Admin); r.Redis.Pending != 1 {
				t.Errorf("pending invalidations with Redis down = %d, want 1", r.Redis.Pending)
			}

			up()
			edgetest.Eventually(t, "A to apply its queued invalidation", func() bool {
				r := edgetest.Readyz(t, env.Admin)
				return r.Redis.Pending == 0 && r.Redis.Subscribed
			})
			edgetest.Subscribed(t, bAdmin)
			if mode == "partitioned" {
				// B was connected throughout; it hears of the change from A's
				// drain, asynchronously.
				edgetest.Eventually(t, "B to hear A's drained invalidation", func() bool {
					return edgetest.Metric(t, bAdmin, "anqi_edge_invalidations_total", `source="pubsub"`) >= 1
				})
			}
			for _, u := range []string{env.URL, bURL} {
				for range 3 {
					if d := invRead(t, u, order, tok); !d.has(content) {
						t.Fatalf("%s served the pre-message body after Redis came back (X-Cache %s)", u, d.xcache)
					}
				}
			}
		})
	}
}

func TestInvalidate_QueueOverflowWhileRedisIsDownBumpsTheEpoch(t *testing.T) {
	addr := redistest.Shared(t)
	gate := redistest.StartGate(t, addr)
	// A reaches Redis through the gate, B directly: only A loses Redis, and
	// the entries from before the outage survive it.
	var prefix, channel string
	env, tok, tok2 := invStart(t, []string{gate.Addr()}, func(c *config.Config) {
		c.Redis.InvalidationQueue = 2
		prefix, channel = c.Redis.KeyPrefix, c.Redis.Channel
	})
	_, bURL, bAdmin := env.Replica(t, func(c *config.Config) {
		c.Redis.Addrs = []string{addr}
		c.Redis.KeyPrefix, c.Redis.Channel = prefix, channel
	})
	edgetest.Subscribed(t, env.Admin, bAdmin)
	tokens := map[int64]string{1: tok, 2: tok, 3: tok2, 4: tok2}
	for o := int64(1); o <= 4; o++ {
		invWarm(t, env.URL, o, tokens[o])
		invWarm(t, bURL, o, tokens[o])
	}

	// Epochs start at Redis's clock and only move up: remember the one
	// the entries were filled under.
	before := edgetest.Readyz(t, env.Admin).Redis.Epoch
	gate.SetDown(true)
	for o := int64(1); o <= 3; o++ {
		env.Fake.AppendMessage(o, fake.Message{Content: "changed during the outage"})
		edgetest.Purge(t, env.Admin, o)
		if d := invRead(t, env.URL, o, tokens[o]); !d.has("changed during the outage") {
			t.Fatalf("order %d: A does not show the change right after its own purge (X-Cache %s)", o, d.xcache)
		}
	}
	// Order 4 changes too; nobody purges it. Only the epoch can hide the old
	// entry that B filled into Redis.
	env.Fake.AppendMessage(4, fake.Message{Content: "changed during the outage"})

	gate.SetDown(false)
	edgetest.Eventually(t, "A to bump the epoch and read Redis again", func() bool {
		r := edgetest.Readyz(t, env.Admin)
		return r.Redis.Epoch > before && r.Redis.Pending == 0 && r.Redis.Subscribed
	})
	edgetest.Eventually(t, "B to move to the new epoch", func() bool {
		return edgetest.Metric(t, bAdmin, "anqi_edge_redis_key_epoch") > float64(before)
	})
	epoch := edgetest.Metric(t, env.Admin, "anqi_edge_redis_key_epoch")
	if epoch <= float64(before) {
		t.Fatalf("anqi_edge_redis_key_epoch on A = %v, want above %d", epoch, before)
	}
	// The old entries are still in Redis, under the old epoch...
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	old, err := rdb.Keys(context.Background(), prefix+":{o:4}:e:"+strconv.FormatInt(before, 10)+":*").Result()
	if err != nil || len(old) == 0 {
		t.Fatalf("expected order 4's entry of epoch %d to survive in Redis: %v %v", before, old, err)
	}
	// ...and unreachable from every replica.
	for _, u := range []string{env.URL, bURL} {
		for o := int64(1); o <= 4; o++ {
			if d := invRead(t, u, o, tokens[o]); !d.has("changed during the outage") {
				t.Errorf("%s order %d: served a body from before the epoch bump (X-Cache %s)", u, o, d.xcache)
			}
		}
	}
}

func TestInvalidate_QueueOverflowAcrossARedisRestartBumpsTheEpoch(t *testing.T) {
	srv := redistest.Start(t)
	env, tok, tok2 := invStart(t, []string{srv.Addr()}, func(c *config.Config) { c.Redis.InvalidationQueue = 2 })
	_, bURL, bAdmin := env.Replica(t, nil)
	edgetest.Subscribed(t, env.Admin, bAdmin)
	tokens := map[int64]string{1: tok, 2: tok, 3: tok2}
	for o := int64(1); o <= 3; o++ {
		invWarm(t, bURL, o, tokens[o])
	}
	srv.Kill()
	for o := int64(1); o <= 3; o++ {
		if code := edgetest.Send(t, env.URL, o, tokens[o], "sent during the outage"); code != 0 {
			t.Fatalf("order %d: send with Redis down answered code %d", o, code)
		}
	}
	srv.Restart(t)
	edgetest.Eventually(t, "A to bump the epoch", func() bool {
		r := edgetest.Readyz(t, env.Admin)
		return r.Redis.Epoch >= 1 && r.Redis.Pending == 0
	})
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_redis_key_epoch"); n < 1 {
		t.Fatalf("anqi_edge_redis_key_epoch = %v, want >= 1", n)
	}
	edgetest.Subscribed(t, bAdmin)
	for _, u := range []string{env.URL, bURL} {
		for o := int64(1); o <= 3; o++ {
			if d := invRead(t, u, o, tokens[o]); !d.has("sent during the outage") {
				t.Errorf("%s order %d: pre-outage body after Redis came back (X-Cache %s)", u, o, d.xcache)
			}
		}
	}
}

// --- write hooks: what invalidates and what does not ----------------------

// invPost posts body with contentType through base and returns the status
// and the envelope code (-2 when the answer is not an envelope).
func invPost(t testing.TB, url, contentType, body, token string) (int, int) {
	t.Helper()
	resp, b := edgetest.Do(t, http.MethodPost, url, strings.NewReader(body),
		"Content-Type: "+contentType, "token: "+token)
	var env struct {
		Code *int `json:"code"`
	}
	if json.Unmarshal(b, &env) != nil || env.Code == nil {
		return resp.StatusCode, -2
	}
	return resp.StatusCode, *env.Code
}

func TestInvalidate_EveryBuiltInWriteInvalidatesItsOrder(t *testing.T) {
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, nil)
	title := func(d invDetail) string {
		var env struct {
			Data struct {
				Title  string `json:"title"`
				Status int    `json:"status"`
			} `json:"data"`
		}
		json.Unmarshal(d.body, &env)
		return env.Data.Title + "/" + strconv.Itoa(env.Data.Status)
	}
	invWarm(t, env.URL, 2, tok)
	// update, with the id as a JSON string (AnqiCMS clients send both).
	if st, code := invPost(t, env.URL+"/api/communication/order/update", "application/json",
		`{"id":"2","title":"renamed"}`, tok); st != 200 || code != 0 {
		t.Fatalf("update: HTTP %d code %d", st, code)
	}
	if d := invRead(t, env.URL, 2, tok); !strings.HasPrefix(title(d), "renamed/") {
		t.Fatalf("read after update (X-Cache %s): %s", d.xcache, title(d))
	}
	invWarm(t, env.URL, 2, tok)
	if st, code := invPost(t, env.URL+"/api/communication/order/accept", "application/json",
		`{"id":2}`, tok); st != 200 || code != 0 {
		t.Fatalf("accept: HTTP %d code %d", st, code)
	}
	if d := invRead(t, env.URL, 2, tok); title(d) != "renamed/3" {
		t.Fatalf("read after accept (X-Cache %s): %s, want status 3", d.xcache, title(d))
	}
	if n := edgetest.Metric(t, env.Admin, "anqi_edge_invalidations_total", `source="write"`); n != 2 {
		t.Errorf("write invalidations = %v, want 2", n)
	}
}

// invGzipUpstream is AnqiCMS behind a compressing layer (Iris's compression
// middleware, or nginx with gzip on): answers are gzipped for clients that
// accept it.
func invGzipUpstream(t *testing.T, target string) string {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(rec.Body.Bytes())
		zw.Close()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(rec.Code)
		w.Write(buf.Bytes())
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestInvalidate_CompressedWriteAnswerStillInvalidates(t *testing.T) {
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, nil)
	gz := invGzipUpstream(t, env.FakeURL)
	_, edge, _ := env.Replica(t, func(c *config.Config) { c.Upstream.URL = gz })
	invWarm(t, edge, 1, tok)
	resp, b := edgetest.Do(t, http.MethodPost, edge+edgetest.SendPath,
		strings.NewReader(`{"comm_order_id":1,"content":"sent by a browser"}`),
		"Content-Type: application/json", "Accept-Encoding: gzip, deflate, br", "token: "+tok)
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("the write answer should come back as AnqiCMS sent it (gzip), got %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.HasPrefix(plain, []byte(`{"code":0`)) {
		t.Fatalf("write answer: %s", plain)
	}
	if d := invRead(t, edge, 1, tok); !d.has("sent by a browser") {
		t.Fatalf("a write whose answer was gzipped did not invalidate (X-Cache %s)", d.xcache)
	}
}

func TestInvalidate_WriteThatTimesOutStillInvalidates(t *testing.T) {
	// AnqiCMS stores the message, then answers too late: the client gets a
	// 504, but the order did change, and the next read must show it.
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, func(c *config.Config) {
		c.Upstream.Timeout = config.Duration{Duration: 300 * time.Millisecond}
	})
	invWarm(t, env.URL, 1, tok)
	env.Fake.SetLatency(edgetest.SendPath, 2*time.Second)
	resp, b := edgetest.Do(t, http.MethodPost, env.URL+edgetest.SendPath,
		strings.NewReader(`{"comm_order_id":1,"content":"stored, answered late"}`), "Content-Type: application/json", "token: "+tok)
	env.Fake.SetLatency(edgetest.SendPath, 0)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("late write answer: HTTP %d %s, want 504", resp.StatusCode, b)
	}
	if d := invRead(t, env.URL, 1, tok); !d.has("stored, answered late") {
		t.Fatalf("read after a write with an unknown outcome serves the old body (X-Cache %s)", d.xcache)
	}
}

// formSendPath is an admin-side route an operator might hook with a form
// rule; AnqiCMS's own API routes bind JSON only, so formUpstream plays it.
const formSendPath = "/system/api/form/message/send"

// startFormUpstream starts a fake (the test's token secret) behind
// formUpstream; both stop at cleanup.
func startFormUpstream(t *testing.T) (*fake.Server, string) {
	t.Helper()
	f := fake.New(fake.Options{TokenSecret: edgetest.Secret})
	fakeURL, err := f.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, formUpstream(t, f, fakeURL)
}

// formUpstream is the fake behind a layer that serves formSendPath: a form
// body appending a message to comm_order_id's order.
func formUpstream(t *testing.T, f *fake.Server, target string) string {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != formSendPath {
			rp.ServeHTTP(w, r)
			return
		}
		id, err := strconv.ParseInt(r.PostFormValue("comm_order_id"), 10, 64)
		if err != nil {
			w.Write([]byte(`{"code":-1,"msg":"bad id"}`))
			return
		}
		f.AppendMessage(id, fake.Message{Content: r.PostFormValue("content")})
		w.Write([]byte(`{"code":0,"msg":""}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestInvalidate_ConfiguredFormAndQueryRulesInvalidate(t *testing.T) {
	f, front := startFormUpstream(t)
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, func(c *config.Config) {
		c.Upstream.URL = front
		c.Invalidate = []config.InvalidateRule{
			{Method: "POST", Path: formSendPath, ID: "form:comm_order_id"},
			{Method: "POST", Path: "/api/communication/order/update", ID: "query:id"},
		}
	})
	f.Seed(2, 2)
	invWarm(t, env.URL, 1, tok)
	if st, code := invPost(t, env.URL+formSendPath, "application/x-www-form-urlencoded",
		"comm_order_id=1&content=via+a+form", tok); st != 200 || code != 0 {
		t.Fatalf("form send: HTTP %d code %d", st, code)
	}
	if d := invRead(t, env.URL, 1, tok); !d.has("via a form") {
		t.Fatalf("read after a form send (X-Cache %s) lacks the message", d.xcache)
	}
	invWarm(t, env.URL, 1, tok)
	if st, code := invPost(t, env.URL+"/api/communication/order/update?id=1", "application/json",
		`{"id":1,"content":"changed via query rule"}`, tok); st != 200 || code != 0 {
		t.Fatalf("update: HTTP %d code %d", st, code)
	}
	if d := invRead(t, env.URL, 1, tok); d.xcache != "MISS" || !strings.Contains(string(d.body), "changed via query rule") {
		t.Fatalf("read after a query-rule update: X-Cache %s", d.xcache)
	}
	// The built-in JSON rule is replaced, not added to: a JSON send is
	// forwarded but cannot be read by the form rule.
	invWarm(t, env.URL, 1, tok)
	if code := edgetest.Send(t, env.URL, 1, tok, "json, unseen by the form rule"); code != 0 {
		t.Fatalf("json send: code %d", code)
	}
	if d := invRead(t, env.URL, 1, tok); d.xcache != "HIT" {
		t.Fatalf("a JSON send invalidated although only a form rule is configured: X-Cache %s", d.xcache)
	}
}

func TestInvalidate_FailedWritesLeaveTheEntry(t *testing.T) {
	env, tok1, tok2 := invStart(t, []string{redistest.Shared(t)}, nil)
	const order = 3 // user 2's
	warm := func() { invWarm(t, env.URL, order, tok2) }
	survives := func(what string) {
		t.Helper()
		if d := invRead(t, env.URL, order, tok2); d.xcache != "HIT" {
			t.Fatalf("%s: the entry was dropped (X-Cache %s)", what, d.xcache)
		}
	}
	warm()

	// Someone else's order: AnqiCMS answers 1002 on HTTP 200.
	if code := edgetest.Send(t, env.URL, order, tok1, "not mine"); code != 1002 {
		t.Fatalf("send to another user's order: code %d, want 1002", code)
	}
	survives("a 1002 answer")

	// An order that does not exist.
	if code := edgetest.Send(t, env.URL, 99999, tok2, "nowhere"); code == 0 {
		t.Fatal("send to a missing order answered code 0")
	}

	// AnqiCMS fails with a 5xx.
	env.Fake.FailNext(edgetest.SendPath, http.StatusInternalServerError, `{"code":-1,"msg":"db down"}`)
	resp, b := edgetest.Do(t, http.MethodPost, env.URL+edgetest.SendPath,
		strings.NewReader(`{"comm_order_id":3,"content":"during a 500"}`), "Content-Type: application/json", "token: "+tok2)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("a 5xx write came back as HTTP %d %s", resp.StatusCode, b)
	}
	survives("an upstream 500")

	// A 200 that is code 0 but not JSON-enveloped in the usual way does not
	// count either: only HTTP 200 + code 0.
	env.Fake.FailNext(edgetest.SendPath, http.StatusOK, `not json at all`)
	if st, code := invPost(t, env.URL+edgetest.SendPath, "application/json", `{"comm_order_id":3,"content":"x"}`, tok2); st != 200 || code != -2 {
		t.Fatalf("non-JSON answer: HTTP %d code %d", st, code)
	}
	survives("a non-JSON answer")

	if n := edgetest.Metric(t, env.Admin, "anqi_edge_invalidations_total", `source="write"`); n != 0 {
		t.Errorf("failed writes invalidated %v times", n)
	}

	// A body whose order id the rule cannot read is refused before it
	// reaches AnqiCMS, with AnqiCMS's kind of answer (AnqiCMS would refuse
	// it too), and counted: it can leave no stale order behind.
	before := env.Fake.Calls(edgetest.SendPath)
	for i, body := range []string{`comm_order_id=3 (not json)`, `{"content":"no id"}`, `{"comm_order_id":0,"content":"x"}`, `{"comm_order_id":"abc","content":"x"}`} {
		st, code := invPost(t, env.URL+edgetest.SendPath, "application/json", body, tok2)
		if st != 200 || code != -1 {
			t.Fatalf("%s: HTTP %d code %d, want a -1 envelope", body, st, code)
		}
		if n := edgetest.Metric(t, env.Admin, "anqi_edge_write_hook_errors_total"); n != float64(1+i) {
			t.Errorf("%s: anqi_edge_write_hook_errors_total = %v, want %d", body, n, 1+i)
		}
	}
	if n := env.Fake.Calls(edgetest.SendPath) - before; n != 0 {
		t.Fatalf("%d writes whose order id could not be read reached AnqiCMS", n)
	}
	survives("unparsable writes")
}

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
		// AnqiCMS decodes the body as JSON whatever its Content-Type, so a
		// JSON body labelled as a form is a valid write.
		{"json body labelled as a form", "application/x-www-form-urlencoded", `{"id":2,"title":"json-as-form"}`, "json-as-form"},
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
	// A real form body on a JSON route is one AnqiCMS refuses: anqi-edge
	// refuses it before forwarding, and the order is unchanged.
	if st, code := invPost(t, env.URL+"/api/communication/order/update", "application/x-www-form-urlencoded", "id=2&title=from-a-form", tok); st != 200 || code != -1 {
		t.Fatalf("form body on a json rule: HTTP %d code %d, want a -1 envelope", st, code)
	}
	if got := title(); got != "cased" {
		t.Fatalf("after a refused form write the title is %q, want it unchanged", got)
	}
}

// Writes AnqiCMS applies however they are spelled: each one invalidates the
// order it changed (issue 10, item 4), or every order it could have.
func TestInvalidate_EverySpellingOfAWriteAnqiCMSAppliesInvalidatesItsOrder(t *testing.T) {
	f, front := startFormUpstream(t)
	env, tok, _ := invStart(t, []string{redistest.Shared(t)}, func(c *config.Config) {
		c.Upstream.URL = front
		c.Invalidate = append(config.BuiltinRules(),
			config.InvalidateRule{Method: "POST", Path: formSendPath, ID: "form:comm_order_id"})
	})
	f.Seed(2, 2) // user 1 owns orders 1 and 2

	mp := func(ctype string, ids ...string) (string, string) {
		var b strings.Builder
		mw := multipart.NewWriter(&b)
		for _, id := range ids {
			mw.WriteField("comm_order_id", id)
		}
		mw.WriteField("content", "multipart")
		mw.Close()
		return strings.Replace(mw.FormDataContentType(), "multipart/form-data", ctype, 1), b.String()
	}
	mpType, mpBody := mp("Multipart/Form-Data", "2", "1")
	cases := []struct {
		name, path, ctype, body, marker string
		order                           int64
	}{
		{"id as a JSON string with a unicode escape", edgetest.SendPath, "application/json",
			`{"comm_order_id":"\u0031","content":"escaped id"}`, "escaped id", 1},
		{"JSON labelled as a form", edgetest.SendPath, "application/x-www-form-urlencoded",
			`{"comm_order_id":1,"content":"json as form"}`, "json as form", 1},
		{"JSON labelled with a type that starts like a form", edgetest.SendPath, "application/x-www-form-urlencodedx",
			`{"comm_order_id":1,"content":"form-ish type"}`, "form-ish type", 1},
		{"JSON with an upper-case form type", edgetest.SendPath, "APPLICATION/X-WWW-FORM-URLENCODED",
			`{"comm_order_id":1,"content":"upper json"}`, "upper json", 1},
		{"update with an escaped id", "/api/communication/order/update", "application/json",
			`{"id":"\u0032","content":"escaped update"}`, "escaped update", 2},
		{"form rule, upper-case form type", formSendPath, "APPLICATION/X-WWW-FORM-URLENCODED",
			"comm_order_id=1&content=upper+form", "upper form", 1},
		// The id twice: the upstream applies the first (order 2); the hook
		// cannot know which one AnqiCMS takes and drops both.
		{"form rule, multipart with the id twice", formSendPath, mpType, mpBody, "multipart", 2},
	}
	for _, c := range cases {
		invWarm(t, env.URL, 1, tok)
		invWarm(t, env.URL, 2, tok)
		if st, code := invPost(t, env.URL+c.path, c.ctype, c.body, tok); st != 200 || code != 0 {
			t.Fatalf("%s: HTTP %d code %d, want the write applied", c.name, st, code)
		}
		d := invRead(t, env.URL, c.order, tok)
		if !strings.Contains(string(d.body), c.marker) {
			t.Fatalf("%s: order %d's next read (X-Cache %s) lacks %q: the write was not invalidated", c.name, c.order, d.xcache, c.marker)
		}
	}
	// Both orders the multipart write named were dropped.
	if d := invRead(t, env.URL, 1, tok); d.xcache == "HIT" {
		t.Fatal("order 1, also named by the multipart write, was still a HIT")
	}
}
