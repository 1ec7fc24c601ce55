package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"

	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/proxy"
)

// The L1 hit the ceiling is held to allocates nothing either, through the
// whole public handler (routing, request id, identity, key, L1, writing
// the answer), in both identity modes. It lives in the bench module
// because CI runs this module without -race: under the race detector
// sync.Pool drops a quarter of what it is given, so pooled paths allocate
// by design there.
func TestL1Hit_ThroughTheWholeHandlerAllocatesNothing(t *testing.T) {
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		env := edgetest.Start(t, edgetest.Options{Verify: verify, Config: func(c *config.Config) { c.Redis.Addrs = nil }})
		_, order, tok := edgetest.SeedOne(env)
		raw := []byte("GET " + proxy.DetailPath + "?id=" + strconv.FormatInt(order.ID, 10) + " HTTP/1.1\r\n" +
			"Host: shop.example.com\r\nAccept-Encoding: gzip, deflate, br\r\nCookie: lang=zh-cn\r\ntoken: " + tok + "\r\n\r\n")
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}, nil)
		rd := bytes.NewReader(nil)
		br := bufio.NewReaderSize(rd, 4096)
		h := env.Edge.Handler()
		serve := func() {
			rd.Reset(raw)
			br.Reset(rd)
			ctx.Request.Reset()
			ctx.Response.Reset()
			if err := ctx.Request.Read(br); err != nil {
				t.Fatal(err)
			}
			h(&ctx)
		}
		for range 3 { // the fill, then buffers grown to size
			serve()
		}
		if allocs := testing.AllocsPerRun(500, serve); allocs != 0 {
			t.Errorf("%.1f allocations per L1 hit, want 0", allocs)
		}
		if got := string(ctx.Response.Header.Peek("X-Cache")); ctx.Response.StatusCode() != 200 || got != "HIT" {
			t.Errorf("last answer: HTTP %d X-Cache %q, want 200 HIT", ctx.Response.StatusCode(), got)
		}
	})
}

// BenchmarkL1Hit_VsCeiling is the work an L1 hit adds to the ceiling's,
// without the sockets: parse a wrk-like request, run the handler, write the
// answer. The difference between the two is anqi-edge's handler.
func BenchmarkL1Hit_VsCeiling(b *testing.B) {
	env := edgetest.Start(b, edgetest.Options{Verify: true, Config: func(c *config.Config) { c.Redis.Addrs = nil }})
	_, order, tok := edgetest.SeedOne(env)
	uri := proxy.DetailPath + "?id=" + strconv.FormatInt(order.ID, 10)
	raw := []byte("GET " + uri + " HTTP/1.1\r\nHost: 127.0.0.1:8080\r\ntoken: " + tok + "\r\n\r\n")
	run := func(b *testing.B, h fasthttp.RequestHandler) *fasthttp.RequestCtx {
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}, nil)
		rd := bytes.NewReader(nil)
		br := bufio.NewReaderSize(rd, 4096)
		bw := bufio.NewWriterSize(io.Discard, 4096)
		serve := func() {
			rd.Reset(raw)
			br.Reset(rd)
			ctx.Request.Reset()
			ctx.Response.Reset()
			if err := ctx.Request.Read(br); err != nil {
				b.Fatal(err)
			}
			h(&ctx)
			if err := ctx.Response.Write(bw); err != nil {
				b.Fatal(err)
			}
			bw.Flush()
		}
		for range 3 {
			serve()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			serve()
		}
		return &ctx
	}
	var hit *answer
	b.Run("anqi-edge", func(b *testing.B) {
		ctx := run(b, env.Edge.Handler())
		hit = &answer{status: ctx.Response.StatusCode(), body: append([]byte(nil), ctx.Response.Body()...)}
		for k, v := range ctx.Response.Header.All() {
			hit.headers = append(hit.headers, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
		}
	})
	b.Run("ceiling", func(b *testing.B) {
		run(b, handler(map[string]*answer{uri: hit}))
	})
}

// BenchmarkL1Hit_VsCeilingParallel is BenchmarkL1Hit_VsCeiling on every
// core at once, where state that every hit writes (counters, the cache's
// bookkeeping) is passed between cores.
func BenchmarkL1Hit_VsCeilingParallel(b *testing.B) {
	env := edgetest.Start(b, edgetest.Options{Verify: true, Config: func(c *config.Config) { c.Redis.Addrs = nil }})
	_, order, tok := edgetest.SeedOne(env)
	uri := proxy.DetailPath + "?id=" + strconv.FormatInt(order.ID, 10)
	raw := []byte("GET " + uri + " HTTP/1.1\r\nHost: 127.0.0.1:8080\r\ntoken: " + tok + "\r\n\r\n")
	run := func(b *testing.B, h fasthttp.RequestHandler) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var ctx fasthttp.RequestCtx
			ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}, nil)
			rd := bytes.NewReader(nil)
			br := bufio.NewReaderSize(rd, 4096)
			bw := bufio.NewWriterSize(io.Discard, 4096)
			for pb.Next() {
				rd.Reset(raw)
				br.Reset(rd)
				ctx.Request.Reset()
				ctx.Response.Reset()
				if err := ctx.Request.Read(br); err != nil {
					panic(err)
				}
				h(&ctx)
				if err := ctx.Response.Write(bw); err != nil {
					panic(err)
				}
				bw.Flush()
			}
		})
	}
	edge := env.Edge.Handler()
	var hit *answer
	{
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}, nil)
		for range 2 {
			ctx.Request.Reset()
			ctx.Response.Reset()
			if err := ctx.Request.Read(bufio.NewReader(bytes.NewReader(raw))); err != nil {
				b.Fatal(err)
			}
			edge(&ctx)
		}
		hit = &answer{status: ctx.Response.StatusCode(), body: append([]byte(nil), ctx.Response.Body()...)}
		for k, v := range ctx.Response.Header.All() {
			hit.headers = append(hit.headers, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
		}
	}
	b.Run("anqi-edge", func(b *testing.B) { run(b, edge) })
	b.Run("ceiling", func(b *testing.B) { run(b, handler(map[string]*answer{uri: hit})) })
}
