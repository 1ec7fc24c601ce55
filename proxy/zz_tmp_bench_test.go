package proxy

import (
	"bytes"
	"testing"
)

func BenchmarkTmpCookieToken(b *testing.B) {
	for _, verify := range []bool{false, true} {
		e := newBenchEdge(b, verify, nil)
		i := bytes.Index(e.raw, []byte("Cookie: lang=zh-cn\r\ntoken: "))
		tok := e.raw[i+len("Cookie: lang=zh-cn\r\ntoken: ") : len(e.raw)-4]
		raw := append(append(append([]byte{}, e.raw[:i]...), "If-None-Match: W/\"x\", \"y\"\r\nX-Host: Shop.Example.com:9\r\nCookie: lang=zh-cn; token="...), tok...)
		e.raw = append(raw, "\r\n\r\n"...)
		e.run(b, nil, "HIT")
	}
}
