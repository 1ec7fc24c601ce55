package anqicms

import (
	"encoding/json"
	"testing"

	"go.uber.org/goleak"
)

// Identifiers start otter clean-up goroutines; tests Close them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEnvelopeCode(t *testing.T) {
	cases := []struct {
		body string
		code int64
		ok   bool
	}{
		{`{"code":0,"msg":"","data":{"id":1}}`, 0, true},
		{`{"code":-1,"msg":"order not found"}`, -1, true},
		{"  \n{\"msg\":\"x\",\"code\": 1001}", 1001, true},
		{`{"code":1002,"data":null}`, 1002, true},
		{`{"msg":"no code"}`, 0, false},
		{`{"code":"0"}`, 0, false},
		{`{"code":1.5}`, 0, false},
		{`{"code":null}`, 0, false},
		{`{"code":0`, 0, false},
		{`[{"code":0}]`, 0, false},
		{`<html>502 Bad Gateway</html>`, 0, false},
		{``, 0, false},
	}
	for _, c := range cases {
		code, ok := EnvelopeCode([]byte(c.body))
		if code != c.code || ok != c.ok {
			t.Errorf("EnvelopeCode(%q) = %d, %v; want %d, %v", c.body, code, ok, c.code, c.ok)
		}
	}
}

func TestErrorBody(t *testing.T) {
	b := ErrorBody(`id "x" is <bad>`)
	var env struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal(b, &env); err != nil || env.Code != -1 || env.Msg != `id "x" is <bad>` {
		t.Fatalf("ErrorBody = %s (%v)", b, err)
	}
	if string(ErrorBody("upstream unavailable")) != `{"code":-1,"msg":"upstream unavailable"}` {
		t.Fatalf("envelope changed: %s", ErrorBody("upstream unavailable"))
	}
}

// AnqiCMS matches a site's host case-sensitively, so the key keeps the case.
func TestSiteHost_KeepsCaseAndStripsThePort(t *testing.T) {
	cases := []struct{ xhost, host, want string }{
		{"", "shop.example.com", "shop.example.com"},
		{"", "Shop.Example.COM:8080", "Shop.Example.COM"},
		{"B.example.com", "shop.example.com", "B.example.com"},
		{"B.example.com:443", "", "B.example.com"},
		{"", "[::1]:8080", "[::1]"},
		{"", "[::1]", "[::1]"},
		{"", "127.0.0.1:80", "127.0.0.1"},
		{"", "", ""},
	}
	for _, c := range cases {
		if got := string(SiteHost(nil, []byte(c.xhost), []byte(c.host))); got != c.want {
			t.Errorf("SiteHost(X-Host %q, Host %q) = %q, want %q", c.xhost, c.host, got, c.want)
		}
	}
	var buf [64]byte
	if got := string(SiteHost(append(buf[:0], "p:"...), nil, []byte("A.B"))); got != "p:A.B" {
		t.Errorf("SiteHost does not append to dst: %q", got)
	}
	xh, h := []byte("Shop.Example.com:9"), []byte("x")
	if a := testing.AllocsPerRun(100, func() { SiteHost(buf[:0], xh, h) }); a != 0 {
		t.Errorf("SiteHost into a stack buffer allocates %v times", a)
	}
}
