package anqicms

import "github.com/valyala/fasthttp"

// RequestToken returns the user token of a request as AnqiCMS finds it in
// the request anqi-edge forwards: header "token", or when that is absent or
// empty, cookie "token" (see RequestCookie). The slice is fasthttp's: valid
// until the request is released, or until its headers change.
func RequestToken(h *fasthttp.RequestHeader) []byte {
	if tok := h.Peek("token"); len(tok) > 0 {
		return tok
	}
	return RequestCookie(h, "token")
}

// maxCookies is net/http's limit (Go 1.24 on): a request with more cookies
// has none to AnqiCMS if it was built with such a Go.
const maxCookies = 3000

// RequestCookie returns the value of cookie name as AnqiCMS (Iris, on
// net/http) reads it from the request anqi-edge forwards, or nil.
//
// fasthttp's own cookie parser disagrees with net/http's on odd headers:
// for "Cookie: token; token=v" fasthttp's Cookie gives "v" where net/http
// gives "" (the first cookie named token has no value), so anqi-edge would
// have named a user AnqiCMS treats as anonymous. FuzzRequestToken found it.
//
// Reading a cookie has fasthttp parse the Cookie header, and from then on
// it forwards the cookies re-serialised from what it parsed: one line,
// "key=value" (or "value" alone) joined by "; ", values trimmed and
// unquoted. This runs net/http's readCookies over that line, without
// building it: parts trimmed, split at the first "=", the name trimmed, the
// first cookie of that name whose value (quotes stripped) holds only valid
// cookie bytes wins, and no cookies at all past 3,000. So call it before the
// request is copied for forwarding.
//
// Iris's GetCookie also URL-unescapes the value; a value with "%" or "+" is
// returned as it is, which no JWT contains, so such a token is anonymous
// here (the request bypasses the cache) whatever AnqiCMS makes of it.
func RequestCookie(h *fasthttp.RequestHeader, name string) []byte {
	n := 0
	for range h.Cookies() {
		n++
	}
	if n > maxCookies {
		return nil
	}
	for k, v := range h.Cookies() {
		var key, val []byte
		if len(k) > 0 {
			// "k=v": the part's trim reaches k's start and v's end; the
			// first "=" is the one after k (fasthttp split there).
			key, val = trimASCIISpace(k), trimRightASCIISpace(v)
		} else {
			// "v" alone: net/http splits it at its own first "=".
			part := trimASCIISpace(v)
			key, val = part, nil
			if i := indexByte(part, '='); i >= 0 {
				key, val = trimASCIISpace(part[:i]), part[i+1:]
			}
		}
		if string(key) != name {
			continue
		}
		if len(val) > 1 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		if validCookieValue(val) {
			if val == nil {
				val = []byte{}
			}
			return val
		}
	}
	return nil
}

// trimASCIISpace is textproto.TrimString for bytes.
func trimASCIISpace(b []byte) []byte {
	for len(b) > 0 && isASCIISpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isASCIISpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func trimRightASCIISpace(b []byte) []byte {
	for len(b) > 0 && isASCIISpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isASCIISpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// validCookieValue is net/http's validCookieValueByte over v.
func validCookieValue(v []byte) bool {
	for _, c := range v {
		if c < 0x20 || c >= 0x7f || c == '"' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}
