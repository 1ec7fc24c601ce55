package anqicms

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func readHeader(t *testing.T, lines ...string) *fasthttp.RequestHeader {
	t.Helper()
	var req fasthttp.Request
	raw := "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n"
	if err := req.Read(bufio.NewReaderSize(strings.NewReader(raw), 64<<10)); err != nil {
		t.Fatal(err)
	}
	return &req.Header
}

// The token is read as net/http reads it from what anqi-edge forwards, so
// anqi-edge never names a user AnqiCMS does not see.
func TestRequestToken_ReadsWhatAnqiCMSReads(t *testing.T) {
	for _, c := range []struct {
		lines []string
		want  string
	}{
		{[]string{"token: abc"}, "abc"},
		{[]string{"token: abc", "Cookie: token=def"}, "abc"},
		{[]string{"token:", "Cookie: token=def"}, "def"},
		{[]string{"Cookie: a=1; token=def; b=2"}, "def"},
		{[]string{"Cookie: token=def; token=ghi"}, "def"},
		{[]string{`Cookie: token="def"`}, "def"},
		{[]string{"Cookie: token = def"}, "def"},
		{[]string{"Cookie: token= def"}, "def"},           // forwarded as "token=def"
		{[]string{"Cookie: token; token=def"}, ""},        // net/http: the first token cookie is empty
		{[]string{"Cookie: Token=abc; token=def"}, "def"}, // names are case-sensitive
		{[]string{"Cookie: other=1"}, ""},
		{nil, ""},
	} {
		if got := string(RequestToken(readHeader(t, c.lines...))); got != c.want {
			t.Errorf("%q: %q, want %q", c.lines, got, c.want)
		}
	}
	many := "Cookie: token=def" + strings.Repeat(";a=1", maxCookies)
	if got := RequestToken(readHeader(t, many)); got != nil {
		t.Errorf("over %d cookies: %q, want none (net/http reads none)", maxCookies, got)
	}
}

func TestRequestToken_DoesNotAllocate(t *testing.T) {
	h := readHeader(t, "Cookie: lang=en; token=abcdef; x=1")
	RequestToken(h)
	if n := testing.AllocsPerRun(100, func() { RequestToken(h) }); n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}
