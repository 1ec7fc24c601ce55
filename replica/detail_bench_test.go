package replica_test

// Micro-benchmarks of the cached detail path through the real fasthttp
// handler (proxy.Server's handler: routing, request id, metrics, detail). Each
// iteration parses a raw HTTP request into a reused RequestCtx, as a
// fasthttp worker does for every request on a keep-alive connection, and
// calls the handler. Run:
//
//	go test -run x -bench . -benchmem ./replica/

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/redistest"
	"anqi-edge/proxy"
	"anqi-edge/replica"
)

// benchEdge is a fake AnqiCMS with one user and order, and a started
// replica in front of it.
type benchEdge struct {
	srv   *replica.Replica
	order int64
	raw   []byte // the detail request, as sent on the wire
}

func newBenchEdge(b *testing.B, verify bool, edit func(*config.Config)) *benchEdge {
	b.Helper()
	f := fake.New(fake.Options{TokenSecret: "bench-secret"})
	u, err := f.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	users, orders := f.Seed(1, 1)
	tok := f.Token(users[0].ID, 48*time.Hour)

	c := config.Default()
	c.Server.Listen, c.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	c.Upstream.URL = u
	c.Redis.Addrs = nil
	c.Log.Level = "error"
	if verify {
		c.Auth.TokenSecret = "bench-secret"
	}
	if edit != nil {
		edit(c)
	}
	if err := c.Validate(); err != nil {
		b.Fatal(err)
	}
	srv, err := replica.New(c, slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	raw := "GET " + proxy.DetailPath + "?id=" + strconv.FormatInt(orders[0].ID, 10) + " HTTP/1.1\r\n" +
		"Host: shop.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (bench)\r\n" +
		"Accept: application/json\r\n" +
		"Accept-Encoding: gzip, deflate, br\r\n" +
		"Accept-Language: zh-CN,zh;q=0.9\r\n" +
		"Cookie: lang=zh-cn\r\n" +
		"token: " + tok + "\r\n\r\n"
	return &benchEdge{srv: srv, order: orders[0].ID, raw: []byte(raw)}
}

// server returns a function that serves the request once through the
// public handler on a RequestCtx of its own (one per goroutine) and, when
// want is set, fails the benchmark unless the answer is a 200 with that
// X-Cache.
func (e *benchEdge) server(b *testing.B) func(want string) {
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}, nil)
	rd := bytes.NewReader(nil)
	br := bufio.NewReaderSize(rd, 4096)
	h := e.srv.Handler()
	return func(want string) {
		rd.Reset(e.raw)
		br.Reset(rd)
		ctx.Request.Reset()
		ctx.Response.Reset()
		if err := ctx.Request.Read(br); err != nil {
			b.Error(err)
			return
		}
		h(&ctx)
		if got := ctx.Response.Header.Peek("X-Cache"); want != "" && (ctx.Response.StatusCode() != fasthttp.StatusOK || string(got) != want) {
			b.Errorf("HTTP %d X-Cache %q, want 200 %s", ctx.Response.StatusCode(), got, want)
		}
	}
}

// run serves the request b.N times through the public handler, then once
// more to check its X-Cache.
func (e *benchEdge) run(b *testing.B, before func(), wantXCache string) {
	b.Helper()
	serve := e.server(b)
	// Warm up: the first answer fills the cache, pools get their buffers.
	for range 3 {
		serve("")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if before != nil {
			before()
		}
		serve("")
	}
	b.StopTimer()
	if before != nil {
		before()
	}
	serve(wantXCache)
}

func benchModes(b *testing.B, f func(b *testing.B, verify bool)) {
	for _, verify := range []bool{false, true} {
		name := "fingerprint"
		if verify {
			name = "verified"
		}
		b.Run(name, func(b *testing.B) { f(b, verify) })
	}
}

// BenchmarkDetail_L1Hit must report 0 allocs/op in both identity modes.
func BenchmarkDetail_L1Hit(b *testing.B) {
	benchModes(b, func(b *testing.B, verify bool) {
		e := newBenchEdge(b, verify, nil)
		e.run(b, nil, "HIT")
	})
}

// BenchmarkDetail_RedisHit: L1 off (cache.memory.max_bytes = 0), so every
// request reads the entry from Redis inside a flight.
func BenchmarkDetail_RedisHit(b *testing.B) {
	addr := redistest.Shared(b)
	benchModes(b, func(b *testing.B, verify bool) {
		e := newBenchEdge(b, verify, func(c *config.Config) {
			c.Cache.Memory.MaxBytes = 0
			c.Redis.Addrs = []string{addr}
			c.Redis.KeyPrefix = "bench" + strconv.FormatInt(time.Now().UnixNano(), 36)
		})
		e.run(b, nil, "HIT")
	})
}

// BenchmarkDetail_RedisHitConcurrent is BenchmarkDetail_RedisHit with 64
// requests in flight, as under a load test with 64 connections: the
// autopipeliner sends the lookups queued during one batch as the next, so
// allocations and syscalls per hit are shared by a batch.
func BenchmarkDetail_RedisHitConcurrent(b *testing.B) {
	addr := redistest.Shared(b)
	e := newBenchEdge(b, false, func(c *config.Config) {
		c.Cache.Memory.MaxBytes = 0
		c.Redis.Addrs = []string{addr}
		c.Redis.KeyPrefix = "bench" + strconv.FormatInt(time.Now().UnixNano(), 36)
	})
	e.server(b)("")      // the fill
	b.SetParallelism(32) // x GOMAXPROCS goroutines
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		serve := e.server(b)
		for pb.Next() {
			serve("HIT")
		}
	})
}

// BenchmarkDetail_Miss: L1 only, the order invalidated before every
// request, so each one is a call to the fake AnqiCMS over loopback.
func BenchmarkDetail_Miss(b *testing.B) {
	benchModes(b, func(b *testing.B, verify bool) {
		e := newBenchEdge(b, verify, nil)
		e.run(b, func() { e.srv.Tiers().L1().Invalidate(e.order) }, "MISS")
	})
}
