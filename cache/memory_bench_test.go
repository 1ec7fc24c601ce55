package cache

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"anqi-edge/anqicms/fake"
	"anqi-edge/internal/redistest"
)

// memoryOrders is how many orders the L1 memory benchmark holds at once.
const memoryOrders = 100_000

// realisticDetail is the detail answer the fake AnqiCMS gives for an order
// with a few messages (about 2.6 KB), exactly as anqi-edge would store it.
// The order id is returned so callers can vary it per entry.
func realisticDetail(tb testing.TB, messages int) (body, contentType []byte, orderID int64) {
	tb.Helper()
	fk := fake.New(fake.Options{})
	users, _ := fk.Seed(1, 0)
	u := users[0]
	o := fake.Order{UserID: u.ID, Title: "Custom banner for the spring fair",
		Content:    "Two banners, 3 m × 1 m, our logo left, the text \"Spring Fair 2026\" in the middle, white on dark green. Please send a sketch first.",
		Phone:      "13800001234",
		EventDate:  "2026-04-18",
		Images:     []string{"https://example.com/uploads/2026/03/logo-original.png", "https://example.com/uploads/2026/03/reference-banner.jpg"},
		OrderExtra: map[string]any{"size": "3m x 1m", "quantity": 2, "material": "PVC mesh", "delivery": "pick-up"},
		QuotePrice: "860.00", QuoteContent: "Two PVC mesh banners with eyelets, printed and hemmed, ready on the 15th.",
		Status: fake.StatusQuoted, AdminID: 1, Thumb: "https://example.com/uploads/2026/03/thumb-banner.jpg"}
	texts := []string{
		"Hello, could you make the two banners described above? We need them before the 18th.",
		"Of course. We will send a sketch tomorrow; do you have the logo as a vector file?",
		"Yes, attached. Please keep the green close to our brand colour (#1f4d3a).",
		"Sketch attached. The price for both, with eyelets every 50 cm, is 860 yuan.",
		"Looks good. One question: can the text be a little larger?",
		"Sure, we will increase it by 20% and send the final proof before printing.",
	}
	for i := range messages {
		who, kind := u.ID, "user"
		if i%2 == 1 {
			who, kind = 1, "admin"
		}
		o.Messages = append(o.Messages, fake.Message{SenderID: who, SenderType: kind,
			SenderName: map[string]string{"user": u.Name, "admin": "Studio"}[kind], Content: texts[i%len(texts)]})
	}
	stored := fk.AddOrder(o)
	req := httptest.NewRequest(http.MethodGet, "/api/communication/order/detail?id="+strconv.FormatInt(stored.ID, 10), nil)
	req.Header.Set("token", fk.Token(u.ID, time.Hour))
	rec := httptest.NewRecorder()
	fk.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !bytes.HasPrefix(rec.Body.Bytes(), []byte(`{"code":0,`)) {
		tb.Fatalf("fake detail: %d %.200s", rec.Code, rec.Body.Bytes())
	}
	return rec.Body.Bytes(), []byte(rec.Header().Get("Content-Type")), stored.ID
}

// bodyFor gives every order its own body (its id in place of the template's),
// so entries do not share bytes and compress like distinct orders do.
func bodyFor(dst, tmpl []byte, tmplID, order int64) []byte {
	old := []byte(`"id":` + strconv.FormatInt(tmplID, 10) + `,`)
	id := []byte(`"id":` + strconv.FormatInt(order, 10) + `,`)
	return append(dst[:0], bytes.Replace(tmpl, old, id, 1)...)
}

func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemory_L1BytesPerOrder fills L1 with memoryOrders realistic
// entries (built by NewEntry, so with the gzip copy production makes) and
// reports what one costs on the heap against the payload it holds.
//
//	go test -run x -bench Memory_L1 -benchtime 1x ./cache/
func BenchmarkMemory_L1BytesPerOrder(b *testing.B) {
	for _, msgs := range []int{0, 8} {
		tmpl, ct, tmplID := realisticDetail(b, msgs)
		b.Run(fmt.Sprintf("messages=%d", msgs), func(b *testing.B) {
			for b.Loop() {
				l1Memory(b, tmpl, ct, tmplID)
			}
		})
	}
}

func l1Memory(b *testing.B, tmpl, ct []byte, tmplID int64) {
	b.StopTimer()
	parts := KeyParts{Site: []byte("shop.example.com"), Identity: 1}
	var buf []byte
	before := heapAfterGC()
	l1, err := NewL1(4<<30, 5*time.Second, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	defer l1.Close()
	var payload int64
	now := time.Now()
	b.StartTimer()
	for i := range int64(memoryOrders) {
		order := 1_000_000 + i
		buf = bodyFor(buf, tmpl, tmplID, order)
		parts.ID = strconv.AppendInt(parts.ID[:0], order%5000, 10)
		e := NewEntry(buf, ct, false, now)
		payload += int64(len(e.Body) + len(e.Gzip))
		k := MakeKey(order, parts)
		if !l1.Set(k, e, l1.Gen(order), now.UnixNano()) {
			b.Fatal("L1 refused a store")
		}
	}
	b.StopTimer()
	buf = nil
	after := heapAfterGC()
	weight, n := l1.Size()
	if n < memoryOrders*99/100 {
		b.Fatalf("L1 holds %d of %d entries: the bound evicted some", n, memoryOrders)
	}
	perEntry := float64(after-before) / float64(n)
	perPayload := float64(payload) / float64(memoryOrders)
	b.ReportMetric(perEntry, "heap-B/entry")
	b.ReportMetric(perPayload, "payload-B/entry")
	b.ReportMetric(100*(perEntry-perPayload)/perPayload, "overhead-%")
	b.ReportMetric(float64(weight)/float64(n), "weigher-B/entry")
	b.ReportMetric(float64(len(tmpl)), "body-B")
	runtime.KeepAlive(l1)
	b.StartTimer()
}

// BenchmarkMemory_RedisBytesPerOrder stores one realistic entry through
// Redis.Fill and reports Redis's MEMORY USAGE of the entry key (and of the
// order's generation and index keys) against the payload.
//
//	ANQI_EDGE_TEST_REDIS=127.0.0.1:6390 go test -run x -bench Memory_Redis -benchtime 1x ./cache/
func BenchmarkMemory_RedisBytesPerOrder(b *testing.B) {
	addr := redistest.Shared(b)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	for _, msgs := range []int{0, 8} {
		tmpl, ct, tmplID := realisticDetail(b, msgs)
		b.Run(fmt.Sprintf("messages=%d", msgs), func(b *testing.B) {
			prefix := redistest.Prefix(b)
			r := NewRedis(RedisOptions{Client: c, Prefix: prefix})
			e := NewEntry(tmpl, ct, false, time.Now())
			k := MakeKey(tmplID, KeyParts{Site: []byte("shop.example.com"), Identity: 1, ID: []byte("42")})
			var entryBytes, orderBytes int64
			for b.Loop() {
				_, gen, err := r.Get(ctx, k)
				if err != nil {
					b.Fatal(err)
				}
				ok, err := r.Fill(ctx, k, e, gen, time.Minute)
				if err != nil || !ok {
					b.Fatalf("fill: %v %v", ok, err)
				}
				epoch, _ := unpackGen(gen)
				entryBytes = memoryUsage(b, c, r.entryKey(k, epoch))
				tag := r.tag(k.Order)
				orderBytes = entryBytes + memoryUsage(b, c, tag+":g") + memoryUsage(b, c, tag+":i")
			}
			payload := float64(len(e.Body) + len(e.Gzip))
			b.ReportMetric(float64(entryBytes), "entry-key-B")
			b.ReportMetric(payload, "payload-B")
			b.ReportMetric(100*(float64(entryBytes)-payload)/payload, "overhead-%")
			b.ReportMetric(float64(orderBytes), "order-keys-B")
			b.ReportMetric(100*(float64(orderBytes)-payload)/payload, "order-overhead-%")
			keys, _ := c.Keys(ctx, prefix+"*").Result()
			if len(keys) > 0 {
				c.Del(ctx, keys...)
			}
		})
	}
}

// memoryUsage is MEMORY USAGE key SAMPLES 0 (0 when the key is missing;
// a generation counter that was never bumped does not exist).
func memoryUsage(b *testing.B, c *redis.Client, key string) int64 {
	n, err := c.MemoryUsage(context.Background(), key, 0).Result()
	if err == redis.Nil {
		return 0
	}
	if err != nil {
		b.Fatalf("MEMORY USAGE %s: %v", key, err)
	}
	return n
}
