package fake

import (
	"net/http"
	"net/url"
	"strings"
)

// How AnqiCMS's router (Iris) picks a route, as seen on a running AnqiCMS
// (shared/UPSTREAM.md): paths match exactly — no "//" folding, no "." or
// ".." resolution, no case folding, a trailing slash is another path — and
// percent-escapes are decoded before matching, except an escaped '/'
// ("%2F"), which stays part of its segment, so "/api%2Flogin" routes
// nowhere. Go's r.URL.Path decodes "%2F" to '/', which is why the fake
// does not route on it.

// routePath is the path the router matches for r; "" when it has a
// malformed escape (routed nowhere).
func routePath(r *http.Request) string {
	raw := r.RequestURI
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if !strings.HasPrefix(raw, "/") {
		// Absolute-form request target (proxies): the parsed URL's path.
		raw = r.URL.EscapedPath()
	}
	var b strings.Builder
	for {
		i := indexEscapedSlash(raw)
		part := raw
		if i >= 0 {
			part = raw[:i]
		}
		dec, err := url.PathUnescape(part)
		if err != nil {
			return ""
		}
		b.WriteString(dec)
		if i < 0 {
			return b.String()
		}
		b.WriteString(raw[i : i+3])
		raw = raw[i+3:]
	}
}

func indexEscapedSlash(s string) int {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && s[i+1] == '2' && (s[i+2] == 'F' || s[i+2] == 'f') {
			return i
		}
	}
	return -1
}

// langRedirect answers a request with ?lang= as AnqiCMS does on every
// route, the API included: 307 to the same URL without lang, with a lang
// cookie that selects the language from then on. It reports whether it
// answered.
func langRedirect(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	lang := q.Get("lang")
	if !q.Has("lang") {
		return false
	}
	q.Del("lang")
	u := r.URL.EscapedPath()
	if enc := q.Encode(); enc != "" {
		u += "?" + enc
	}
	http.SetCookie(w, &http.Cookie{Name: "lang", Value: lang, Path: "/"})
	http.Redirect(w, r, u, http.StatusTemporaryRedirect)
	return true
}
