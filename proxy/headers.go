package proxy

import (
	"bytes"
	"strings"
)

// Header hygiene, in one place (as Caddy's reverseproxy keeps it).

// hopByHop headers are meaningful only for one connection and are never
// forwarded, in either direction (RFC 9110 §7.6.1), plus the legacy
// Proxy-Connection. Headers that a request's or answer's Connection header
// names are hop-by-hop too.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// perRequest answer headers belong to the one request whose upstream call
// produced them: AnqiCMS's login cookie, a renewed token. A flight hands
// them to its leader only; a stored entry never keeps them.
var perRequest = []string{"Set-Cookie", "Update-Token"}

// framing headers are written by fasthttp for each answer it sends.
var framing = []string{"Content-Length", "Content-Type", "Date", "Server"}

// notShared is what a flight's non-stored answer drops before handing its
// headers to every waiter.
var notShared = func() map[string]bool {
	m := map[string]bool{}
	for _, l := range [][]string{hopByHop, perRequest, framing} {
		for _, h := range l {
			m[h] = true
		}
	}
	return m
}()

// headers is what request and response headers share for stripHop.
type headers interface {
	Peek(key string) []byte
	Del(key string)
}

// stripHop removes hop-by-hop headers, including those the Connection
// header names, from a request or response header. It runs on every copy
// that crosses anqi-edge, in both directions.
func stripHop(h headers) {
	if c := h.Peek("Connection"); len(c) > 0 {
		for _, name := range strings.Split(string(c), ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// namesOtherHeaders reports whether a Connection header value names any
// header (beyond the close and keep-alive options), i.e. whether stripHop
// will remove headers from the request AnqiCMS receives. The detail path
// bypasses the cache for such requests: its key must be made of exactly
// the headers AnqiCMS sees, and a client could otherwise strip X-Host or
// its token upstream while the key still used them.
func namesOtherHeaders(conn []byte) bool {
	for len(conn) > 0 {
		var tok []byte
		tok, conn, _ = bytes.Cut(conn, []byte{','})
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 && !bytes.EqualFold(tok, []byte("close")) && !bytes.EqualFold(tok, []byte("keep-alive")) {
			return true
		}
	}
	return false
}
