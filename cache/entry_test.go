package cache

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"anqi-edge/internal/redistest"
)

func gunzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func orderBody(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"code":0,"msg":"","data":{"id":1,"messages":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"content":"message number %d"}`, i, i)
	}
	b.WriteString(`]}}`)
	return []byte(b.String())
}

func TestEntry_CopiesTheCallersBuffers(t *testing.T) {
	body := orderBody(40)
	ct := []byte("application/json; charset=utf-8")
	want := bytes.Clone(body)
	e := NewEntry(body, ct, false, time.Now())
	// fasthttp reuses these buffers for the next request.
	for i := range body {
		body[i] = 'X'
	}
	copy(ct, "XXXXXXXXXXXX")
	if !bytes.Equal(e.Body, want) || string(e.ContentType) != "application/json; charset=utf-8" {
		t.Fatal("entry shares memory with the buffers it was built from")
	}
	if !bytes.Equal(gunzipBytes(t, e.Gzip), want) {
		t.Fatal("gzip variant was built from the reused buffer")
	}
}

func TestEntry_ETagIsAStrongHashOfTheBody(t *testing.T) {
	a := NewEntry([]byte(`{"code":0,"data":1}`), nil, false, time.Unix(1, 0))
	b := NewEntry([]byte(`{"code":0,"data":1}`), nil, false, time.Unix(2, 0))
	c := NewEntry([]byte(`{"code":0,"data":2}`), nil, false, time.Unix(1, 0))
	if !bytes.Equal(a.ETag, b.ETag) {
		t.Error("same body, different ETag: replicas and refills must agree")
	}
	if bytes.Equal(a.ETag, c.ETag) {
		t.Error("different bodies share an ETag")
	}
	if len(a.ETag) < 3 || a.ETag[0] != '"' || a.ETag[len(a.ETag)-1] != '"' || bytes.HasPrefix(a.ETag, []byte("W/")) {
		t.Errorf("ETag %s is not a quoted strong tag", a.ETag)
	}
}

func TestEntry_GzipVariantOnlyWhenItPaysOff(t *testing.T) {
	big := orderBody(30)
	e := NewEntry(big, nil, false, time.Now())
	if e.Gzip == nil || len(e.Gzip) >= len(big) {
		t.Fatalf("compressible %d-byte body: gzip %d bytes", len(big), len(e.Gzip))
	}
	if !bytes.Equal(gunzipBytes(t, e.Gzip), big) {
		t.Fatal("gzip variant does not decode to the body")
	}
	if NewEntry([]byte(`{"code":0}`), nil, false, time.Now()).Gzip != nil {
		t.Error("tiny body got a gzip variant")
	}
	noise := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(r.Uint32())
	}
	if NewEntry(noise, nil, false, time.Now()).Gzip != nil {
		t.Error("incompressible body got a gzip variant larger than itself")
	}
	if e := NewEntry(nil, nil, false, time.Now()); e.Body == nil || len(e.Body) != 0 {
		t.Error("empty body must be stored as an empty, non-nil slice")
	}
}

// Below one TCP segment a gzip copy saves the client nothing and costs every
// tier its bytes; the fields of one entry share an allocation, and none may
// grow into another.
func TestEntry_SmallBodyHasNoGzipCopyAndNoFieldKeepsSpareCapacity(t *testing.T) {
	small := orderBody(20) // compressible, but under gzipMinBody
	if len(small) >= gzipMinBody {
		t.Fatalf("test body is %d bytes, want < %d", len(small), gzipMinBody)
	}
	if e := NewEntry(small, nil, false, time.Now()); e.Gzip != nil {
		t.Errorf("%d-byte body got a %d-byte gzip copy", len(small), len(e.Gzip))
	}
	big := orderBody(40)
	e := NewEntry(big, []byte("application/json; charset=utf-8"), false, time.Now())
	if e.Gzip == nil {
		t.Fatalf("%d-byte body got no gzip copy", len(big))
	}
	// A growing buffer doubles; an exact copy is only rounded up to its
	// allocation size class (at most 1/8 over, plus the 16-byte classes).
	for _, f := range [][]byte{e.ETag, e.Body, e.Gzip} {
		if cap(f) > len(f)+len(f)/8+16 {
			t.Fatalf("field of %d bytes keeps capacity %d: memory L1 holds for nothing", len(f), cap(f))
		}
	}
}

// Fills run concurrently and share pooled compressors.
func TestEntry_ConcurrentFillsGetTheirOwnGzip(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				body := orderBody(30 + g + i%7)
				e := NewEntry(body, nil, false, time.Now())
				zr, err := gzip.NewReader(bytes.NewReader(e.Gzip))
				if err != nil {
					errs <- err.Error()
					return
				}
				got, err := io.ReadAll(zr)
				if err != nil || !bytes.Equal(got, body) {
					errs <- fmt.Sprintf("goroutine %d fill %d: gzip variant decodes to another body (%v)", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestEntry_CodecRoundTripsEveryField(t *testing.T) {
	for _, e := range []*Entry{
		NewEntry(orderBody(20), []byte("application/json; charset=utf-8"), false, time.Unix(1_700_000_000, 123)),
		NewEntry([]byte(`{"code":1002,"msg":"no access"}`), []byte("application/json"), true, time.Unix(5, 0)),
		NewEntry(nil, nil, false, time.Unix(0, 0)),
	} {
		e.Gen = 42
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Body, e.Body) || !bytes.Equal(got.Gzip, e.Gzip) || (got.Gzip == nil) != (e.Gzip == nil) ||
			!bytes.Equal(got.ContentType, e.ContentType) || !bytes.Equal(got.ETag, e.ETag) ||
			got.StoredAt != e.StoredAt || got.Negative != e.Negative || got.Gen != e.Gen {
			t.Fatalf("round trip changed the entry:\n got %+v\nwant %+v", got, e)
		}
		if got.Body == nil {
			t.Fatal("decoded body is nil")
		}
	}
}

func TestEntry_MalformedEncodingsAreErrorsNotPanics(t *testing.T) {
	e := NewEntry(orderBody(20), []byte("application/json"), false, time.Unix(1, 0))
	good, _ := e.MarshalBinary()
	for n := range len(good) {
		if _, err := UnmarshalEntry(good[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(good))
		}
	}
	bad := bytes.Clone(good)
	bad[0] = 99
	if _, err := UnmarshalEntry(bad); err == nil {
		t.Fatal("unknown codec version accepted")
	}
	// A length prefix far beyond the buffer.
	huge := append(bytes.Clone(good[:18]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
	if _, err := UnmarshalEntry(huge); err == nil {
		t.Fatal("huge length accepted")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		b := bytes.Clone(good[:r.IntN(len(good))])
		for range 1 + r.IntN(4) {
			if len(b) > 0 {
				b[r.IntN(len(b))] = byte(r.Uint32())
			}
		}
		UnmarshalEntry(b) // must not panic
	}
}

func FuzzUnmarshalEntry(f *testing.F) {
	good, _ := NewEntry(orderBody(3), []byte("application/json"), false, time.Unix(1, 0)).MarshalBinary()
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := UnmarshalEntry(b)
		if err != nil {
			return
		}
		again, _ := e.MarshalBinary()
		if _, err := UnmarshalEntry(again); err != nil {
			t.Fatalf("re-encoding a decoded entry is not decodable: %v", err)
		}
	})
}

func TestMakeKey_EveryPartCountsAndNoTwoTuplesCollide(t *testing.T) {
	base := KeyParts{Site: []byte("shop.example.com"), SiteID: []byte("2"), Lang: []byte("en"), Identity: 'u', ID: []byte("42")}
	k := MakeKey(7, base)
	if MakeKey(7, base) != k {
		t.Fatal("same parts, different key")
	}
	variants := map[string]KeyParts{
		"site":     {Site: []byte("b.example.com"), SiteID: base.SiteID, Lang: base.Lang, Identity: 'u', ID: base.ID},
		"site_id":  {Site: base.Site, Lang: base.Lang, Identity: 'u', ID: base.ID},
		"lang":     {Site: base.Site, SiteID: base.SiteID, Identity: 'u', ID: base.ID},
		"kind":     {Site: base.Site, SiteID: base.SiteID, Lang: base.Lang, Identity: 'f', ID: base.ID},
		"identity": {Site: base.Site, SiteID: base.SiteID, Lang: base.Lang, Identity: 'u', ID: []byte("43")},
		// Shifting bytes between adjacent parts must not collide.
		"shift site/site_id": {Site: []byte("shop.example.com2"), Lang: base.Lang, Identity: 'u', ID: base.ID},
		"shift lang/id":      {Site: base.Site, SiteID: base.SiteID, Lang: []byte("en4"), Identity: 'u', ID: []byte("2")},
	}
	seen := map[Key]string{k: "base"}
	for name, p := range variants {
		v := MakeKey(7, p)
		if prev, dup := seen[v]; dup {
			t.Errorf("%s collides with %s", name, prev)
		}
		seen[v] = name
	}
	if MakeKey(8, base) == k {
		t.Error("order is not part of the key")
	}
	if a := testing.AllocsPerRun(100, func() { MakeKey(7, base) }); a != 0 {
		t.Errorf("MakeKey allocates %v times; it runs on every cache hit", a)
	}
}

// TestRedisEntry_StoredBytesComeBackExactlyWithTheirTTL fills an entry
// through the Redis tier and reads it back: the codec survives Redis, the
// key expires with the ttl the detail path asked for, and a fill whose
// generation is unknown (Redis was skipped when the flight started) writes
// nothing.
func TestRedisEntry_StoredBytesComeBackExactlyWithTheirTTL(t *testing.T) {
	addr := redistest.Shared(t)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	prefix := "t" + strings.NewReplacer(":", "", "/", "_").Replace(redistest.Prefix(t))
	r := NewRedis(RedisOptions{Client: c, Prefix: prefix, Channel: "inv:" + prefix, ReplicaID: "A", Log: discardLog})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	k := MakeKey(77, KeyParts{Site: []byte("shop.example.com"), Identity: 'u', ID: []byte("5")})
	e := NewEntry(orderBody(25), []byte("application/json; charset=utf-8"), false, time.Unix(1_700_000_000, 999))
	got, gen, err := r.Get(ctx, k)
	if err != nil || got != nil {
		t.Fatalf("cold Get: %v %v", got, err)
	}
	if ok, err := r.Fill(ctx, k, e, NoGen, time.Minute); ok || err != nil {
		t.Fatalf("Fill with NoGen: stored=%v err=%v, want nothing written", ok, err)
	}
	if got, _, _ := r.Get(ctx, k); got != nil {
		t.Fatal("a NoGen fill was stored")
	}
	if ok, err := r.Fill(ctx, k, e, gen, 90*time.Second); !ok || err != nil {
		t.Fatalf("Fill: stored=%v err=%v", ok, err)
	}
	got, _, err = r.Get(ctx, k)
	if err != nil || got == nil {
		t.Fatalf("Get after Fill: %v %v", got, err)
	}
	if !bytes.Equal(got.Body, e.Body) || !bytes.Equal(got.Gzip, e.Gzip) || !bytes.Equal(got.ETag, e.ETag) ||
		!bytes.Equal(got.ContentType, e.ContentType) || got.StoredAt != e.StoredAt {
		t.Fatal("entry read from Redis differs from the one filled")
	}
	keys, err := c.Keys(ctx, prefix+":*:e:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("entry keys %v %v", keys, err)
	}
	ttl, err := c.PTTL(ctx, keys[0]).Result()
	if err != nil || ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("entry TTL %v (%v), want the 90s asked for", ttl, err)
	}
	// Another identity of the same order is another entry.
	if other, _, _ := r.Get(ctx, MakeKey(77, KeyParts{Site: []byte("shop.example.com"), Identity: 'u', ID: []byte("6")})); other != nil {
		t.Fatal("user 6 read user 5's entry")
	}
}

// Two users whose key parts fall in the same remembered-digest slot take
// turns at it: each must still get the digest of its own parts, never the
// other's (a shared key would show one user the other's order).
func TestMakeKey_UsersSharingADigestSlotKeepTheirOwnKeys(t *testing.T) {
	parts := func(user int) KeyParts {
		return KeyParts{Site: []byte("shop.example.com"), Identity: 1, ID: []byte(fmt.Sprint(user))}
	}
	want := func(p KeyParts) [32]byte { return sha256.Sum256(encodeParts(nil, p)) }
	a := parts(1)
	slot := keyDigestSlot(encodeParts(nil, a))
	b := KeyParts{}
	for u := 2; ; u++ {
		if keyDigestSlot(encodeParts(nil, parts(u))) == slot {
			b = parts(u)
			break
		}
	}
	for i := range 6 { // a, b, a, b, ...: every call finds the other's digest in the slot
		p := a
		if i%2 == 1 {
			p = b
		}
		if k := MakeKey(7, p); k.Sum != want(p) || k.Order != 7 {
			t.Fatalf("call %d: user %s got %x, want %x", i, p.ID, k.Sum, want(p))
		}
		if k := MakeKey(8, p); k.Sum != want(p) || k.Order != 8 {
			t.Fatalf("call %d again: user %s got %x, want %x", i, p.ID, k.Sum, want(p))
		}
	}
}
