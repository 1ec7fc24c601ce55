package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const body = `{"code":0,"msg":"","data":{"id":7,"title":"an order"}}`

// edgeLike answers like anqi-edge: a MISS, then HITs, header names in
// anqi-edge's spelling (ETag, not Etag).
func edgeLike(t *testing.T) *httptest.Server {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("token") != "T" {
			http.Error(w, "no token", http.StatusForbidden)
			return
		}
		h := w.Header()
		h["Content-Type"] = []string{"application/json; charset=utf-8"}
		h["ETag"] = []string{`"e1"`}
		h["Cache-Control"] = []string{"private"}
		h["Age"] = []string{"0"}
		h["X-Cache"] = []string{map[bool]string{true: "MISS", false: "HIT"}[n.Add(1) == 1]}
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// headerLines is a response's header lines without Date, sorted.
func headerLines(resp *fasthttp.Response) []string {
	var out []string
	for k, v := range resp.Header.All() {
		if !strings.EqualFold(string(k), "Date") {
			out = append(out, string(k)+": "+string(v))
		}
	}
	slices.Sort(out)
	return out
}

func TestCeiling_ReplaysTheHitsBytesAndHeaders(t *testing.T) {
	origin := edgeLike(t)
	a, uri, err := capture(origin.URL+"/api/communication/order/detail?id=7", "T")
	if err != nil {
		t.Fatal(err)
	}
	if uri != "/api/communication/order/detail?id=7" {
		t.Errorf("request URI %q", uri)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(map[string]*answer{uri: a}, timeouts{read: time.Minute, write: time.Minute, idle: time.Minute})
	go srv.Serve(ln)
	defer srv.Shutdown()

	get := func(u string, c *fasthttp.Client) *fasthttp.Response {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		req.SetRequestURI(u)
		req.Header.Set("token", "T")
		if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	raw := &fasthttp.Client{DisableHeaderNamesNormalizing: true}
	want := get(origin.URL+uri, raw) // a HIT now (the capture made the MISS)
	got := get("http://"+ln.Addr().String()+uri, raw)
	if got.StatusCode() != 200 || !bytes.Equal(got.Body(), []byte(body)) {
		t.Errorf("ceiling answered %d %q, want 200 %q", got.StatusCode(), got.Body(), body)
	}
	if w, g := headerLines(want), headerLines(got); !slices.Equal(w, g) {
		t.Errorf("headers differ from the origin's hit:\nceiling: %q\norigin:  %q", g, w)
	}
	if miss := get("http://"+ln.Addr().String()+"/api/communication/order/detail?id=8", raw); miss.StatusCode() != 404 {
		t.Errorf("an unrecorded URI answered %d, want 404", miss.StatusCode())
	}
}

func TestCeiling_RefusesAnOriginThatDoesNotServeAHit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Cache", "MISS")
		w.Write([]byte(body))
	}))
	defer srv.Close()
	if _, _, err := capture(srv.URL+"/x", ""); err == nil || !strings.Contains(err.Error(), "HIT") {
		t.Errorf("capture of a never-hit origin: err = %v, want one naming HIT", err)
	}
}

// The ceiling's hot path allocates nothing, like anqi-edge's L1 hit.
func TestCeiling_AnswerAllocatesNothing(t *testing.T) {
	a := &answer{status: 200, body: []byte(body), headers: [][2][]byte{
		{[]byte("Content-Type"), []byte("application/json")}, {[]byte("X-Cache"), []byte("HIT")}, {[]byte("ETag"), []byte(`"e1"`)}}}
	h := handler(map[string]*answer{"/d?id=7": a})
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/d?id=7")
	h(&ctx) // warm the header slices
	allocs := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		h(&ctx)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per answer, want 0", allocs)
	}
	if string(ctx.Response.Body()) != body || string(ctx.Response.Header.Peek("X-Cache")) != "HIT" {
		t.Errorf("answer %q X-Cache %q", ctx.Response.Body(), ctx.Response.Header.Peek("X-Cache"))
	}
}
