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

// replay serves one raw HTTP/1.1 request to a handler again and again on
// one reused RequestCtx, as fasthttp's connection loop does minus the
// socket: parse, handle and, with write, serialise the answer.
type replay struct {
	ctx fasthttp.RequestCtx
	raw []byte
	h   fasthttp.RequestHandler
	rd  *bytes.Reader
	br  *bufio.Reader
	bw  *bufio.Writer // nil: the answer is not written
}

func newReplay(h fasthttp.RequestHandler, raw []byte, write bool) *replay {
	r := &replay{raw: raw, h: h, rd: bytes.NewReader(nil)}
	r.ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}, nil)
	r.br = bufio.NewReaderSize(r.rd, 4096)
	if write {
		r.bw = bufio.NewWriterSize(io.Discard, 4096)
	}
	return r
}

func (r *replay) serve() error {
	r.rd.Reset(r.raw)
	r.br.Reset(r.rd)
	r.ctx.Request.Reset()
	r.ctx.Response.Reset()
	if err := r.ctx.Request.Read(r.br); err != nil {
		return err
	}
	r.h(&r.ctx)
	if r.bw == nil {
		return nil
	}
	if err := r.ctx.Response.Write(r.bw); err != nil {
		return err
	}
	return r.bw.Flush()
}

// answer is the last answer, recorded for the ceiling to replay.
func (r *replay) answer() *answer {
	resp := &r.ctx.Response
	a := &answer{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...)}
	for k, v := range resp.Header.All() {
		a.headers = append(a.headers, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
	}
	return a
}

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
		r := newReplay(env.Edge.Handler(), []byte("GET "+proxy.DetailPath+"?id="+strconv.FormatInt(order.ID, 10)+" HTTP/1.1\r\n"+
			"Host: shop.example.com\r\nAccept-Encoding: gzip, deflate, br\r\nCookie: lang=zh-cn\r\ntoken: "+tok+"\r\n\r\n"), false)
		serve := func() {
			if err := r.serve(); err != nil {
				t.Fatal(err)
			}
		}
		for range 3 { // the fill, then buffers grown to size
			serve()
		}
		if allocs := testing.AllocsPerRun(500, serve); allocs != 0 {
			t.Errorf("%.1f allocations per L1 hit, want 0", allocs)
		}
		if got := string(r.ctx.Response.Header.Peek("X-Cache")); r.ctx.Response.StatusCode() != 200 || got != "HIT" {
			t.Errorf("last answer: HTTP %d X-Cache %q, want 200 HIT", r.ctx.Response.StatusCode(), got)
		}
	})
}

// hotHit starts anqi-edge with L1 only, warms one order and returns its
// wrk-like request (Host and token only), anqi-edge's handler and the
// hit's answer for the ceiling to replay.
func hotHit(b *testing.B) (raw []byte, edge fasthttp.RequestHandler, uri string, hit *answer) {
	env := edgetest.Start(b, edgetest.Options{Verify: true, Config: func(c *config.Config) { c.Redis.Addrs = nil }})
	_, order, tok := edgetest.SeedOne(env)
	uri = proxy.DetailPath + "?id=" + strconv.FormatInt(order.ID, 10)
	raw = []byte("GET " + uri + " HTTP/1.1\r\nHost: 127.0.0.1:8080\r\ntoken: " + tok + "\r\n\r\n")
	edge = env.Edge.Handler()
	r := newReplay(edge, raw, false)
	for range 2 { // the fill, then the hit
		if err := r.serve(); err != nil {
			b.Fatal(err)
		}
	}
	return raw, edge, uri, r.answer()
}

// BenchmarkL1Hit_VsCeiling is the work an L1 hit adds to the ceiling's,
// without the sockets: parse a wrk-like request, run the handler, write the
// answer. The difference between the two is anqi-edge's handler.
func BenchmarkL1Hit_VsCeiling(b *testing.B) {
	raw, edge, uri, hit := hotHit(b)
	run := func(b *testing.B, h fasthttp.RequestHandler) {
		r := newReplay(h, raw, true)
		for range 3 {
			if err := r.serve(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := r.serve(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("anqi-edge", func(b *testing.B) { run(b, edge) })
	b.Run("ceiling", func(b *testing.B) { run(b, handler(map[string]*answer{uri: hit})) })
}

// BenchmarkL1Hit_VsCeilingParallel is BenchmarkL1Hit_VsCeiling on every
// core at once, where state that every hit writes (counters, the cache's
// bookkeeping) is passed between cores.
func BenchmarkL1Hit_VsCeilingParallel(b *testing.B) {
	raw, edge, uri, hit := hotHit(b)
	run := func(b *testing.B, h fasthttp.RequestHandler) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := newReplay(h, raw, true)
			for pb.Next() {
				if err := r.serve(); err != nil {
					panic(err)
				}
			}
		})
	}
	b.Run("anqi-edge", func(b *testing.B) { run(b, edge) })
	b.Run("ceiling", func(b *testing.B) { run(b, handler(map[string]*answer{uri: hit})) })
}
