package anqicms

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"hash"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"
)

// fuzzNow is the clock of the identity fuzz targets; seeds put t, exp and
// nbf around it.
var fuzzNow = time.Unix(1_800_000_000, 0)

// fuzzToken builds a token from a fuzzed payload: form picks the header
// and signature, key the HMAC key (0 is the site's user-token key).
func fuzzToken(payload []byte, form, key uint8) (string, bool) {
	enc := base64.RawURLEncoding
	keys := [][]byte{[]byte(testSecret + "-user-token"), []byte("other-user-token"), []byte(testSecret)}
	type alg struct {
		header string
		mac    func() hash.Hash
	}
	algs := []alg{
		{`{"alg":"HS256","typ":"JWT"}`, sha256.New},
		{`{"alg":"HS384","typ":"JWT"}`, sha512.New384},
		{`{"alg":"HS512","typ":"JWT"}`, sha512.New},
		{`{"alg":"none","typ":"JWT"}`, nil},
		{`{"alg":"ES256","typ":"JWT"}`, sha256.New}, // an HMAC under another name
	}
	if int(form)%(len(algs)+1) == len(algs) {
		return string(payload), false // the payload is the whole token
	}
	a := algs[int(form)%len(algs)]
	in := enc.EncodeToString([]byte(a.header)) + "." + enc.EncodeToString(payload)
	if a.mac == nil {
		return in + ".", false
	}
	k := int(key) % len(keys)
	m := hmac.New(a.mac, keys[k])
	m.Write([]byte(in))
	return in + "." + enc.EncodeToString(m.Sum(nil)), k == 0 && a.header != algs[4].header
}

// acceptedAt is the reference: what AnqiCMS (golang-jwt with its default
// validation, then userId and t) makes of token at now. key nil reads the
// token without checking its signature (fingerprint mode).
func acceptedAt(token string, key []byte, now time.Time) (user string, ok bool) {
	claims := jwt.MapClaims{}
	var err error
	if key == nil {
		_, _, err = jwt.NewParser().ParseUnverified(token, claims)
		if err == nil {
			err = jwt.NewValidator(jwt.WithTimeFunc(func() time.Time { return now })).Validate(claims)
		}
	} else {
		_, err = jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return key, nil },
			jwt.WithValidMethods(hmacMethods), jwt.WithTimeFunc(func() time.Time { return now }))
	}
	if err != nil {
		return "", false
	}
	uid, _ := claims["userId"].(string)
	ts, _ := claims["t"].(string)
	t, err := strconv.ParseInt(ts, 10, 64)
	if uid == "" || err != nil || t < now.Unix() {
		return "", false
	}
	return uid, true
}

func FuzzIdentify(f *testing.F) {
	now := strconv.FormatInt(fuzzNow.Unix(), 10)
	later := strconv.FormatInt(fuzzNow.Unix()+7200, 10)
	for _, p := range []string{
		`{"userId":"42","t":"` + later + `"}`,
		`{"userId":"42","t":"` + now + `"}`,
		`{"userId":"42","t":"` + later + `","exp":` + strconv.FormatInt(fuzzNow.Unix()+3600, 10) + `}`,
		`{"userId":"42","t":"` + later + `","exp":` + now + `}`,
		`{"userId":"42","t":"` + later + `","exp":0}`,
		`{"userId":"42","t":"` + later + `","exp":1e300}`,
		`{"userId":"42","t":"` + later + `","exp":-1e300}`,
		`{"userId":"42","t":"` + later + `","nbf":` + later + `}`,
		`{"userId":"42","t":"` + later + `","nbf":"soon"}`,
		`{"userId":"42","t":"` + later + `","iat":` + later + `}`,
		`{"userId":42,"t":"` + later + `"}`,
		`{"userId":"42","userid":"43","t":"` + later + `"}`,
		`{"userId":"42","t":"` + later + `","userId":"43"}`,
		`{"userId":"","t":"` + later + `"}`,
		`{"userId":"42","t":` + later + `}`,
		`{"userId":"42","t":"+` + later + `"}`,
		`[]`, `null`, `{`, ``,
	} {
		for form := range uint8(6) {
			f.Add([]byte(p), form, uint8(0))
		}
		f.Add([]byte(p), uint8(0), uint8(1))
		f.Add([]byte(p), uint8(0), uint8(2))
	}
	f.Add([]byte("a.b.c"), uint8(5), uint8(0))
	f.Add([]byte("...."), uint8(5), uint8(0))
	f.Fuzz(func(t *testing.T, payload []byte, form, key uint8) {
		token, signed := fuzzToken(payload, form, key)
		verified, err := NewIdentifier(testSecret, nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		defer verified.Close()
		fp, err := NewIdentifier("", nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		defer fp.Close()
		sum := sha256.Sum256([]byte(token))
		// Twice through the same identifiers: judged, then memoised, at
		// moments on both sides of t, exp and nbf.
		for _, at := range []time.Time{fuzzNow, fuzzNow.Add(time.Hour), fuzzNow, fuzzNow.Add(3 * time.Hour)} {
			id := verified.Identify(site, []byte(token), at)
			uid, ok := acceptedAt(token, []byte(testSecret+"-user-token"), at)
			switch {
			case id.Kind == User && (!signed || !ok):
				t.Fatalf("verified mode: %+v for a token AnqiCMS rejects at %d (signed with the secret: %v): %q", id, at.Unix(), signed, token)
			case id.Kind != User && ok:
				t.Fatalf("verified mode: %+v for a token AnqiCMS accepts at %d: %q", id, at.Unix(), token)
			case id.Kind == User && (string(id.ID) != uid || string(id.User) != uid):
				t.Fatalf("verified mode: %+v, want user %q", id, uid)
			case id.Kind == Fingerprint:
				t.Fatalf("verified mode gave a fingerprint: %+v", id)
			}
			id = fp.Identify(site, []byte(token), at)
			uid, ok = acceptedAt(token, nil, at)
			switch {
			case (id.Kind != Anonymous) != ok:
				t.Fatalf("fingerprint mode: %+v at %d, but AnqiCMS would read the claims as accepted=%v: %q", id, at.Unix(), ok, token)
			case ok && (id.Kind != Fingerprint || string(id.ID) != string(sum[:]) || string(id.User) != uid):
				t.Fatalf("fingerprint mode: %+v, want sha256 of the token and user %q", id, uid)
			}
		}
	})
}

// anqicmsToken reads a request's token as AnqiCMS (Iris on net/http) does:
// header token, else cookie token, which Iris's GetCookie unescapes. raw is
// the request as anqi-edge forwards it: fasthttp re-serialises the Cookie
// header from the cookies it parsed.
func anqicmsToken(raw string) (string, bool) {
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		return "", false
	}
	if tok := r.Header.Get("token"); tok != "" {
		return tok, true
	}
	c, err := r.Cookie("token")
	if err != nil {
		return "", true
	}
	v, _ := url.QueryUnescape(c.Value)
	return v, true
}

// FuzzRequestToken checks that where anqi-edge and AnqiCMS read different
// tokens from one request (AnqiCMS reading it as anqi-edge forwards it),
// anqi-edge's never names a user AnqiCMS does not see: it is anonymous, or
// the same identity.
func FuzzRequestToken(f *testing.F) {
	good := string(signFor(f, "42"))
	other := string(signFor(f, "43"))
	for _, c := range [][2]string{
		{good, ""}, {"", "token=" + good}, {"", "token=" + good + "; token=" + other},
		{"", "a=1; token=" + good}, {"", `token="` + good + `"`}, {"", "token =" + other + "; token=" + good},
		{"", " token= " + good}, {"", "Token=" + other + "; token=" + good}, {"", "token=" + good + "%2E"},
		{"", "token=" + other + "\\; token=" + good}, {"", "tok\"en=" + other + "; token=" + good},
		{"", "token=" + other + "\x7f; token=" + good}, {"", "token=" + other + ",token=" + good},
		{" ", "token=" + good},
	} {
		f.Add(c[0], c[1])
	}
	x, err := NewIdentifier(testSecret, nil, 64)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(x.Close)
	f.Fuzz(func(t *testing.T, header, cookie string) {
		raw := "GET /api/communication/order/detail?id=1 HTTP/1.1\r\nHost: shop.example.com\r\n"
		if header != "" {
			raw += "token: " + header + "\r\n"
		}
		if cookie != "" {
			raw += "Cookie: " + cookie + "\r\n"
		}
		raw += "\r\n"
		var req fasthttp.Request
		if req.Read(bufio.NewReader(strings.NewReader(raw))) != nil {
			return
		}
		// As on the detail path: the token is read, then the request is
		// copied for forwarding.
		ours := RequestToken(&req.Header)
		var fwd fasthttp.Request
		req.Header.CopyTo(&fwd.Header)
		theirs, ok := anqicmsToken(fwd.Header.String())
		if !ok {
			return // AnqiCMS's server refuses the request
		}
		if string(ours) == theirs {
			return
		}
		a := x.Identify(site, ours, fuzzNow)
		b := x.Identify(site, []byte(theirs), fuzzNow)
		if a.Kind != Anonymous && (a.Kind != b.Kind || string(a.ID) != string(b.ID)) {
			t.Fatalf("anqi-edge reads token %q (%c %s), AnqiCMS %q (%c %s)", ours, a.Kind, a.ID, theirs, b.Kind, b.ID)
		}
	})
}

func signFor(f *testing.F, user string) []byte {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"userId": user, "t": strconv.FormatInt(fuzzNow.Unix()+7200, 10),
	}).SignedString([]byte(testSecret + "-user-token"))
	if err != nil {
		f.Fatal(err)
	}
	return []byte(s)
}
