package fake

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// The fake routes exactly as AnqiCMS was seen to (shared/UPSTREAM.md):
// exact paths, percent-encoded letters decoded, %2F not.
func TestRouter_MatchesPathsAsAnqiCMSDoes(t *testing.T) {
	for target, want := range map[string]string{
		"/api/login":                  "/api/login",
		"/api/%6Cogin":                "/api/login",
		"/api/%6cogin?x=1":            "/api/login",
		"/api%2Flogin":                "/api%2Flogin",
		"/api%2flogin":                "/api%2flogin",
		"/api/login/":                 "/api/login/",
		"//api/login":                 "//api/login",
		"/api/./login":                "/api/./login",
		"/x/../api/login":             "/x/../api/login",
		"/API/login":                  "/API/login",
		"/api/%zzlogin":               "",
		"/api/communication/order%2F": "/api/communication/order%2F",
	} {
		r := &http.Request{Method: http.MethodGet, RequestURI: target, URL: &url.URL{}}
		if got := routePath(r); got != want {
			t.Errorf("routePath(%q) = %q, want %q", target, got, want)
		}
	}
}

func TestRouter_LangQueryIs307WithALangCookieOnEveryRoute(t *testing.T) {
	s := New(Options{})
	for _, target := range []string{"/api/communication/order/detail?id=1&lang=en", "/api/login?lang=zh-cn"} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, target, nil)
		s.ServeHTTP(w, r)
		if w.Code != http.StatusTemporaryRedirect || w.Header().Get("Set-Cookie") == "" || w.Header().Get("Location") == "" {
			t.Errorf("%s: HTTP %d Set-Cookie %q Location %q, want 307 with a lang cookie", target, w.Code,
				w.Header().Get("Set-Cookie"), w.Header().Get("Location"))
		}
	}
}
