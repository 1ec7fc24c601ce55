package static_test

import (
	"testing"

	"github.com/valyala/fasthttp"

	"anqi-edge/static"
)

// BenchmarkServe_APIPathIsDeclined is the cost static files add to every
// forwarded request: the path checks and one stat that finds nothing.
func BenchmarkServe_APIPathIsDeclined(b *testing.B) {
	h, err := static.New(static.Options{Root: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/api/communication/orders?current=1")
	ctx.Request.Header.SetMethod("GET")
	b.ReportAllocs()
	for b.Loop() {
		if h.Serve(&ctx) {
			b.Fatal("served")
		}
	}
}
