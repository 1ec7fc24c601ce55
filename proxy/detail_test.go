package proxy_test

// Issue 3, the cached order detail, end to end: a fake AnqiCMS and real
// anqi-edge replicas over real sockets (internal/edgetest), with real
// redis-server processes where Redis is involved. Helpers are prefixed dt so
// they cannot collide with other test files of package proxy_test.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
	"anqi-edge/internal/redistest"
	"anqi-edge/proxy"
)

// dtAnswer is a detail answer as a client sees it.
type dtAnswer struct {
	status int
	header http.Header
	body   []byte // as received (possibly gzip)
	code   int
	msg    string
	order  int64 // data.id when code == 0
	user   int64 // data.user_id when code == 0
	texts  []string
}

func (a dtAnswer) xcache() string { return a.header.Get("X-Cache") }

func (a dtAnswer) String() string {
	return fmt.Sprintf("HTTP %d X-Cache=%q code=%d msg=%q order=%d user=%d", a.status, a.xcache(), a.code, a.msg, a.order, a.user)
}

type dtEnvelope struct {
	Code int             `json:"code"`
	Msg  string          `json:"msg"`
	Data json.RawMessage `json:"data"`
}

type dtOrder struct {
	ID       int64 `json:"id"`
	UserID   int64 `json:"user_id"`
	Messages []struct {
		Content string `json:"content"`
	} `json:"messages"`
}

// dtNotEnvelope is dtAnswer.code for a body that is not a JSON envelope.
const dtNotEnvelope = -999

// dtDo sends a request and parses the envelope; it never calls t, so worker
// goroutines can use it. headers are "Name: value"; "Host: x" sets the Host.
func dtDo(method, u string, headers ...string) (dtAnswer, error) {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return dtAnswer{}, err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Add(k, v)
	}
	resp, err := edgetest.Client.Do(req)
	if err != nil {
		return dtAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return dtAnswer{}, err
	}
	a := dtAnswer{status: resp.StatusCode, header: resp.Header, body: body}
	plain := body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		if plain, err = dtGunzip(body); err != nil {
			return a, err
		}
	}
	if method == http.MethodHead || resp.StatusCode == http.StatusNotModified || len(plain) == 0 {
		return a, nil
	}
	var env dtEnvelope
	if err := json.Unmarshal(plain, &env); err != nil {
		a.code = dtNotEnvelope
		return a, nil
	}
	a.code, a.msg = env.Code, env.Msg
	if env.Code == 0 && len(env.Data) > 0 && string(env.Data) != "null" {
		var o dtOrder
		if err := json.Unmarshal(env.Data, &o); err != nil {
			return a, fmt.Errorf("%s %s: data is not an order: %v", method, u, err)
		}
		a.order, a.user = o.ID, o.UserID
		for _, m := range o.Messages {
			a.texts = append(a.texts, m.Content)
		}
	}
	return a, nil
}

func dtGet(t testing.TB, u string, headers ...string) dtAnswer {
	t.Helper()
	a, err := dtDo(http.MethodGet, u, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func dtGunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// dtStart starts a fake and one replica with deterministic freshness (no
// jitter), then applies edit.
func dtStart(t testing.TB, verify bool, redisAddrs []string, edit func(*config.Config)) *edgetest.Env {
	t.Helper()
	return edgetest.Start(t, edgetest.Options{Redis: redisAddrs, Verify: verify, Config: dtConfig(edit)})
}

func dtConfig(edit func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		c.Cache.Jitter = 0
		if edit != nil {
			edit(c)
		}
	}
}

// dtSign makes a user token like AnqiCMS's, with any method and key.
func dtSign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dtClaims(user int64, ttl time.Duration) jwt.MapClaims {
	return jwt.MapClaims{"userId": strconv.FormatInt(user, 10), "t": strconv.FormatInt(time.Now().Add(ttl).Unix(), 10)}
}

// --- bad input ---------------------------------------------------------

func TestDetail_BadIDIsAnsweredLocallyWithAnEnvelope(t *testing.T) {
	env := dtStart(t, false, nil, nil)
	_, _, tok := edgetest.SeedOne(env)
	base := env.URL + proxy.DetailPath
	cases := []struct {
		name, query, msg string
	}{
		{"missing", "", "required"},
		{"missing, other params", "?foo=1&site_id=1", "required"},
		{"no value", "?id", "empty"},
		{"empty", "?id=", "empty"},
		{"non-numeric", "?id=abc", "integer"},
		{"trailing junk", "?id=1a", "integer"},
		{"hex", "?id=0x10", "integer"},
		{"exponent", "?id=1e3", "integer"},
		{"space", "?id=%201", "integer"},
		{"raw plus is a space", "?id=+1", "integer"},
		{"sign only", "?id=-", "integer"},
		{"fullwidth digit", "?id=%EF%BC%91", "integer"},
		{"zero", "?id=0", "positive"},
		{"zeros", "?id=000", "positive"},
		{"negative zero", "?id=-0", "positive"},
		{"negative", "?id=-1", "positive"},
		{"negative overflow", "?id=-99999999999999999999", "positive"},
		{"fractional", "?id=1.5", "integer"},
		{"fractional zero", "?id=1.0", "integer"},
		{"int64 max + 1", "?id=9223372036854775808", "range"},
		{"overflowing", "?id=99999999999999999999999", "range"},
		{"repeated, same", "?id=1&id=1", "once"},
		{"repeated, different", "?id=1&id=2", "once"},
		{"repeated, one empty", "?id=&id=1", "once"},
		{"absurdly long", "?id=" + strings.Repeat("1", 2000), "long"},
	}
	before := edgetest.DetailCalls(env)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				a, err := dtDo(method, base+c.query, "token: "+tok)
				if err != nil {
					t.Fatal(err)
				}
				if a.status != http.StatusOK {
					t.Fatalf("%s: HTTP %d, want 200 (AnqiCMS answers errors with 200)", method, a.status)
				}
				if method == http.MethodHead {
					if len(a.body) != 0 {
						t.Errorf("HEAD got a body: %q", a.body)
					}
					continue
				}
				if a.code != -1 || !strings.Contains(a.msg, c.msg) {
					t.Errorf("%s: got %s, want code -1 and a msg mentioning %q", method, a, c.msg)
				}
				if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q, want JSON", ct)
				}
			}
		})
	}
	// A header too large for the listener's buffer never reaches routing;
	// it is still answered by anqi-edge with an envelope, not forwarded.
	a, err := dtDo(http.MethodGet, base+"?id="+strings.Repeat("9", 16<<10), "token: "+tok)
	if err != nil {
		t.Fatal(err)
	}
	if a.code != -1 {
		t.Errorf("16 KiB id: got %s, want a code -1 envelope", a)
	}
	t.Logf("16 KiB id (beyond the 4 KiB header buffer): %s", a)
	if got := edgetest.DetailCalls(env); got != before {
		t.Fatalf("bad ids reached AnqiCMS: detail calls %d -> %d", before, got)
	}
}

func TestDetail_LeadingZerosAndPlusSignShareTheCanonicalEntry(t *testing.T) {
	env := dtStart(t, false, nil, nil)
	_, o, tok := edgetest.SeedOne(env)
	id := strconv.FormatInt(o.ID, 10)
	first := dtGet(t, env.URL+proxy.DetailPath+"?id="+id, "token: "+tok)
	if first.code != 0 || first.xcache() != "MISS" {
		t.Fatalf("first read: %s", first)
	}
	for _, q := range []string{"0" + id, "000" + id, "%2B" + id, "%2B0" + id} {
		a := dtGet(t, env.URL+proxy.DetailPath+"?id="+q, "token: "+tok)
		if a.xcache() != "HIT" || !bytes.Equal(a.body, first.body) {
			t.Errorf("id=%s: %s, want a HIT on the entry of id=%s with the same body", q, a, id)
		}
	}
	if n := edgetest.DetailCalls(env); n != 1 {
		t.Fatalf("AnqiCMS saw %d detail calls, want 1", n)
	}
}

func TestDetail_OnlyGetAndHeadAreCached(t *testing.T) {
	env := dtStart(t, false, nil, nil)
	_, o, tok := edgetest.SeedOne(env)
	u := edgetest.DetailURL(env.URL, o.ID)
	for i, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodPost} {
		before := edgetest.DetailCalls(env)
		a, err := dtDo(method, u, "token: "+tok)
		if err != nil {
			t.Fatal(err)
		}
		if a.xcache() != "BYPASS" {
			t.Errorf("%s #%d: X-Cache %q, want BYPASS", method, i, a.xcache())
		}
		// The fake, like AnqiCMS's router, answers a wrong method with 404:
		// anqi-edge forwarded the request instead of answering from cache.
		if a.status != http.StatusNotFound {
			t.Errorf("%s: HTTP %d, want AnqiCMS's 404 passed through", method, a.status)
		}
		if got := edgetest.DetailCalls(env); got != before+1 {
			t.Errorf("%s: AnqiCMS detail calls %d -> %d, want one forwarded call", method, before, got)
		}
	}
	if a := dtGet(t, u, "token: "+tok); a.xcache() != "MISS" {
		t.Fatalf("GET after writes: %s, want MISS (nothing was stored by other methods)", a)
	}
	h, err := dtDo(http.MethodHead, u, "token: "+tok)
	if err != nil {
		t.Fatal(err)
	}
	if h.status != http.StatusOK || h.xcache() != "HIT" || len(h.body) != 0 {
		t.Fatalf("HEAD: HTTP %d X-Cache %q body %d bytes, want 200 HIT without body", h.status, h.xcache(), len(h.body))
	}
}

// --- key and identity -----------------------------------------------------

func TestDetail_KeyIsSiteOrderAndIdentity(t *testing.T) {
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		env := dtStart(t, verify, nil, nil)
		users, orders := env.Fake.Seed(1, 2)
		tok := env.Fake.Token(users[0].ID, 48*time.Hour)
		tok2 := env.Fake.Token(users[0].ID, 72*time.Hour) // same user, another token
		u := edgetest.DetailURL(env.URL, orders[0].ID)
		steps := []struct {
			name    string
			url     string
			headers []string
			want    string
		}{
			{"first", u, []string{"Host: shop.example.com", "token: " + tok}, "MISS"},
			{"same", u, []string{"Host: shop.example.com", "token: " + tok}, "HIT"},
			{"host port", u, []string{"Host: shop.example.com:8443", "token: " + tok}, "HIT"},
			// AnqiCMS matches a site's host case-sensitively: another
			// spelling is another site to it (site 1), so another key.
			{"host case", u, []string{"Host: SHOP.Example.COM", "token: " + tok}, "MISS"},
			{"X-Host wins over Host", u, []string{"Host: elsewhere.test", "X-Host: shop.example.com", "token: " + tok}, "HIT"},
			{"X-Host port", u, []string{"Host: x.test", "X-Host: shop.example.com:9000", "token: " + tok}, "HIT"},
			{"token in cookie", u, []string{"Host: shop.example.com", "Cookie: token=" + tok}, "HIT"},
			{"empty token header falls back to cookie", u, []string{"Host: shop.example.com", "token:", "Cookie: token=" + tok}, "HIT"},
			{"other host", u, []string{"Host: other.example.com", "token: " + tok}, "MISS"},
			{"site_id", u + "&site_id=1", []string{"Host: shop.example.com", "token: " + tok}, "MISS"},
			{"site_id again", u + "&site_id=1", []string{"Host: shop.example.com", "token: " + tok}, "HIT"},
			{"lang cookie", u, []string{"Host: shop.example.com", "Cookie: lang=en", "token: " + tok}, "MISS"},
			{"lang cookie again", u, []string{"Host: shop.example.com", "Cookie: lang=en; token=" + tok}, "HIT"},
			{"other lang", u, []string{"Host: shop.example.com", "Cookie: lang=zh-cn", "token: " + tok}, "MISS"},
			{"Accept-Language is not in the key", u, []string{"Host: shop.example.com", "Accept-Language: en-US", "token: " + tok}, "HIT"},
			{"other order", edgetest.DetailURL(env.URL, orders[1].ID), []string{"Host: shop.example.com", "token: " + tok}, "MISS"},
			{"another token of the same user", u, []string{"Host: shop.example.com", "token: " + tok2},
				map[bool]string{true: "HIT", false: "MISS"}[verify]},
		}
		for _, s := range steps {
			a := dtGet(t, s.url, s.headers...)
			if a.code != 0 || a.user != users[0].ID {
				t.Fatalf("%s: %s, want the user's own order", s.name, a)
			}
			if a.xcache() != s.want {
				t.Errorf("%s: X-Cache %q, want %s", s.name, a.xcache(), s.want)
			}
		}
	})
}

func TestDetail_AnonymousAndInvalidTokensBypassAndAreNeverStored(t *testing.T) {
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		env := dtStart(t, verify, nil, nil)
		user, o, good := edgetest.SeedOne(env)
		key := []byte(edgetest.Secret + "-user-token")
		unsigned, err := jwt.NewWithClaims(jwt.SigningMethodNone, dtClaims(user.ID, 48*time.Hour)).
			SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		// In fingerprint mode anqi-edge cannot check a signature: a
		// well-formed forgery is forwarded under its own fingerprint, and the
		// not-logged-in answer is not stored. Everything else is recognised
		// as anonymous locally in both modes.
		recognisable := map[bool]string{true: "BYPASS", false: "MISS"}[verify]
		cases := []struct {
			name    string
			headers []string
			want    string
		}{
			{"no token", nil, "BYPASS"},
			{"empty token header", []string{"token:"}, "BYPASS"},
			{"empty token cookie", []string{"Cookie: token="}, "BYPASS"},
			{"garbage", []string{"token: not-a-jwt"}, "BYPASS"},
			{"garbage cookie", []string{"Cookie: token=abc.def.ghi"}, "BYPASS"},
			{"no t claim", []string{"token: " + dtSign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"userId": "1"})}, "BYPASS"},
			{"expired", []string{"token: " + env.Fake.Token(user.ID, -time.Minute)}, "BYPASS"},
			{"wrong secret", []string{"token: " + dtSign(t, jwt.SigningMethodHS256, []byte("nope-user-token"), dtClaims(user.ID, 48*time.Hour))}, recognisable},
			{"alg none", []string{"token: " + unsigned}, recognisable},
		}
		for _, c := range cases {
			before := edgetest.DetailCalls(env)
			for i := range 2 {
				a := dtGet(t, edgetest.DetailURL(env.URL, o.ID), c.headers...)
				if a.status != http.StatusOK || a.code != 1001 {
					t.Errorf("%s #%d: %s, want AnqiCMS's 1001 not-logged-in", c.name, i, a)
				}
				if a.xcache() != c.want {
					t.Errorf("%s #%d: X-Cache %q, want %s", c.name, i, a.xcache(), c.want)
				}
			}
			if got := edgetest.DetailCalls(env); got != before+2 {
				t.Errorf("%s: AnqiCMS detail calls %d -> %d, want both requests forwarded (nothing stored)", c.name, before, got)
			}
		}
		// The valid token's entry was never polluted by any of the above.
		if a := dtGet(t, edgetest.DetailURL(env.URL, o.ID), "token: "+good); a.code != 0 || a.xcache() != "MISS" {
			t.Fatalf("owner after anonymous reads: %s, want MISS with code 0", a)
		}
	})
}

func TestDetail_NearExpiryTokenBypassesAndReceivesUpdateToken(t *testing.T) {
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		env := dtStart(t, verify, nil, nil)
		user, o, _ := edgetest.SeedOne(env)
		u := edgetest.DetailURL(env.URL, o.ID)
		near := env.Fake.Token(user.ID, 30*time.Minute) // inside the 1h renew window
		for _, hdr := range []string{"token: " + near, "Cookie: token=" + near, "token: " + near} {
			before := edgetest.DetailCalls(env)
			a := dtGet(t, u, hdr)
			if a.code != 0 || a.user != user.ID || a.xcache() != "BYPASS" {
				t.Fatalf("%s: %s, want the order, BYPASS", hdr[:6], a)
			}
			if a.header.Get("Update-Token") == "" {
				t.Fatalf("%s: no Update-Token; AnqiCMS's renewal must reach the client", hdr[:6])
			}
			if got := edgetest.DetailCalls(env); got != before+1 {
				t.Fatalf("detail calls %d -> %d, want the request forwarded", before, got)
			}
		}
		// The renewed token is outside the window: cached, and no renewal.
		renewed := dtGet(t, u, "token: "+near).header.Get("Update-Token")
		for i, want := range []string{"MISS", "HIT"} {
			a := dtGet(t, u, "token: "+renewed)
			if a.code != 0 || a.xcache() != want || a.header.Get("Update-Token") != "" {
				t.Fatalf("renewed token #%d: %s Update-Token=%q, want %s and no renewal", i, a, a.header.Get("Update-Token"), want)
			}
		}
	})
}

// --- security: the randomized cross-user test -------------------------------

// dtReq is one request of the randomized cross-user run.
type dtReq struct {
	base     string // replica
	user     *dtUser
	token    string
	order    fake.Order
	headers  []string
	query    string
	site     int // the site AnqiCMS will pick
	wantOK   bool
	wantCode int // when !wantOK and the request is anonymous
}

type dtUser struct {
	fake.User
	tokens []string
}

// TestDetail_NeverServesAnotherUsersOrder fires thousands of concurrent
// requests from many users, on two replicas sharing Redis, half of them for
// orders that are not the requester's (other users of the same site, users
// of another site, other sites through X-Host, Host and site_id), and checks
// every answer: an order is only ever served to its owner, and owners always
// get their order.
func TestDetail_NeverServesAnotherUsersOrder(t *testing.T) {
	redisAddr := redistest.Shared(t)
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		fo := &fake.Options{SiteHosts: map[string]int{
			"shop.example.com": 1, "www.shop.example.com": 1,
			"b.example.com": 2, "b2.example.com": 2,
		}}
		env := edgetest.Start(t, edgetest.Options{
			Redis: []string{redisAddr}, Verify: verify, FakeOptions: fo, Config: dtConfig(nil),
		})
		// Replica 2 keeps L1 copies only briefly, so it reads Redis often.
		_, url2, _ := env.Replica(t, dtConfig(func(c *config.Config) { c.Cache.Memory.TTL = config.Duration{Duration: 50 * time.Millisecond} }))

		seeded, orders := env.Fake.Seed(24, 3) // site 1
		var users []*dtUser
		for _, u := range seeded {
			users = append(users, &dtUser{User: u})
		}
		for i := range 8 { // site 2: users sharing another site
			u := fake.User{ID: int64(1000 + i), Name: fmt.Sprintf("b%d", i), SiteID: 2}
			env.Fake.AddUser(u)
			users = append(users, &dtUser{User: u})
			for k := range 3 {
				orders = append(orders, env.Fake.AddOrder(fake.Order{
					UserID: u.ID, SiteID: 2, Title: fmt.Sprintf("b-order %d/%d", i, k),
					Messages: []fake.Message{{SenderType: "user", Content: fmt.Sprintf("from %s", u.Name)}},
				}))
			}
		}
		if len(users) < 30 {
			t.Fatalf("only %d users", len(users))
		}
		for i, u := range users {
			u.tokens = append(u.tokens, env.Fake.Token(u.ID, 48*time.Hour))
			if i%3 == 0 { // a second device: another token of the same user
				u.tokens = append(u.tokens, env.Fake.Token(u.ID, 72*time.Hour))
			}
		}
		byUser := map[int64][]fake.Order{}
		for _, o := range orders {
			byUser[o.UserID] = append(byUser[o.UserID], o)
		}
		// AnqiCMS matches hosts case-sensitively, port stripped: another
		// case of site 2's host is site 1 (the fallback) to it.
		hostsOf := map[int][]string{
			1: {"shop.example.com", "SHOP.example.com:8080", "www.shop.example.com", "unknown.example.net", "B.Example.Com:443"},
			2: {"b.example.com", "b.example.com:443", "b2.example.com"},
		}

		const n = 2000
		rnd := rand.New(rand.NewPCG(7, map[bool]uint64{true: 1, false: 2}[verify]))
		reqs := make([]dtReq, n)
		for i := range reqs {
			r := &reqs[i]
			r.base = env.URL
			if i%2 == 1 {
				r.base = url2
			}
			r.user = users[rnd.IntN(len(users))]
			r.token = r.user.tokens[rnd.IntN(len(r.user.tokens))]
			if rnd.IntN(2) == 0 {
				mine := byUser[r.user.ID]
				r.order = mine[rnd.IntN(len(mine))]
			} else {
				r.order = orders[rnd.IntN(len(orders))]
			}
			site := r.user.SiteID
			if rnd.IntN(8) == 0 { // try another site's host
				site = 3 - site
			}
			hosts := hostsOf[site]
			host := hosts[rnd.IntN(len(hosts))]
			r.site = site
			switch rnd.IntN(4) {
			case 0:
				r.headers = append(r.headers, "Host: "+host)
			case 1:
				r.headers = append(r.headers, "Host: random-"+strconv.Itoa(rnd.IntN(3))+".test", "X-Host: "+host)
			case 2:
				r.headers = append(r.headers, "X-Host: "+host)
			case 3:
				// site_id overrides the host on /api, whatever the host says.
				r.headers = append(r.headers, "Host: "+hostsOf[3-site][0])
				r.query = "&site_id=" + strconv.Itoa(site)
			}
			switch rnd.IntN(10) {
			case 0:
				// anonymous: AnqiCMS answers not-logged-in
				r.token = ""
				r.wantCode = 1001
			case 1, 2:
				r.headers = append(r.headers, "Cookie: token="+r.token)
			default:
				r.headers = append(r.headers, "token: "+r.token)
			}
			if rnd.IntN(5) == 0 {
				r.headers = append(r.headers, "Cookie: lang=en")
			}
			r.wantOK = r.token != "" && r.order.UserID == r.user.ID && r.order.SiteID == r.site && r.user.SiteID == r.site
		}

		var (
			mu       sync.Mutex
			failures []string
			xcache   = map[string]int{}
			owned    atomic.Int64
		)
		fail := func(format string, args ...any) {
			mu.Lock()
			if len(failures) < 20 {
				failures = append(failures, fmt.Sprintf(format, args...))
			}
			mu.Unlock()
		}
		work := make(chan int)
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					r := &reqs[i]
					a, err := dtDo(http.MethodGet, edgetest.DetailURL(r.base, r.order.ID)+r.query, r.headers...)
					if err != nil {
						fail("request %d: %v", i, err)
						continue
					}
					mu.Lock()
					xcache[a.xcache()]++
					mu.Unlock()
					who := fmt.Sprintf("request %d (user %d site %d, order %d of user %d site %d, %q%s)",
						i, r.user.ID, r.user.SiteID, r.order.ID, r.order.UserID, r.order.SiteID, r.headers, r.query)
					switch {
					case a.status != http.StatusOK:
						fail("%s: %s", who, a)
					case a.code == 0 && (r.token == "" || a.user != r.user.ID || a.order != r.order.ID):
						fail("LEAK %s: got order %d of user %d (%s)", who, a.order, a.user, a)
					case r.wantOK && a.code != 0:
						fail("%s: owner did not get the order: %s", who, a)
					case !r.wantOK && a.code == 0:
						fail("%s: served an order AnqiCMS would refuse: %s", who, a)
					case r.wantCode != 0 && a.code != r.wantCode:
						fail("%s: %s, want code %d", who, a, r.wantCode)
					}
					if r.wantOK {
						owned.Add(1)
					}
				}
			}()
		}
		for i := range reqs {
			work <- i
		}
		close(work)
		wg.Wait()
		for _, f := range failures {
			t.Error(f)
		}
		t.Logf("%d requests, %d for the requester's own order; X-Cache %v", n, owned.Load(), xcache)
		if xcache["HIT"] == 0 || owned.Load() < n/4 {
			t.Fatalf("the run did not exercise the cache: X-Cache %v, %d owned", xcache, owned.Load())
		}
	})
}

// --- collapsing -------------------------------------------------------------

func TestDetail_ColdKeyStormMakesOneUpstreamCall(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps with the other waiting tests
	env := dtStart(t, true, []string{redistest.Shared(t)}, nil)
	_, o, tok := edgetest.SeedOne(env)
	env.Fake.SetLatency(proxy.DetailPath, 200*time.Millisecond)
	const n = 500
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		answers = make([]dtAnswer, n)
		errs    = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i], errs[i] = dtDo(http.MethodGet, edgetest.DetailURL(env.URL, o.ID), "token: "+tok)
		}()
	}
	close(start)
	wg.Wait()
	results := map[string]int{}
	for i, a := range answers {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if a.status != http.StatusOK || a.code != 0 || !bytes.Equal(a.body, answers[0].body) {
			t.Fatalf("request %d: %s, want code 0 and the same body as the others", i, a)
		}
		results[a.xcache()]++
	}
	if got := edgetest.DetailCalls(env); got != 1 {
		t.Fatalf("AnqiCMS saw %d detail calls for %d concurrent cold requests, want exactly 1 (X-Cache %v)", got, n, results)
	}
	if c := edgetest.Metric(t, env.Admin, "anqi_edge_singleflight_collapsed_total"); c < 1 {
		t.Errorf("singleflight_collapsed_total = %v after a storm", c)
	}
	t.Logf("X-Cache of %d concurrent cold requests: %v", n, results)
}

// --- the response ----------------------------------------------------------

func TestDetail_CachedAnswerIsByteEqualToAnqiCMS(t *testing.T) {
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		env := dtStart(t, verify, []string{redistest.Shared(t)}, nil)
		_, o, tok := edgetest.SeedOne(env)
		// A few messages make the body big enough for a gzip copy
		// (bodies under one TCP segment get none, see cache.NewEntry).
		for i := range 4 {
			env.Fake.AppendMessage(o.ID, fake.Message{Content: fmt.Sprintf("Reply %d: the proof is attached, please check the colours and the text size.", i)})
		}
		u := edgetest.DetailURL(env.URL, o.ID)
		direct, err := dtDo(http.MethodGet, edgetest.DetailURL(env.FakeURL, o.ID), "token: "+tok)
		if err != nil || direct.code != 0 {
			t.Fatalf("direct read from the fake: %s %v", direct, err)
		}
		if len(direct.body) < 1024 {
			t.Fatalf("order body is %d bytes; too small to get a gzip variant", len(direct.body))
		}

		var etag string
		for i, want := range []string{"MISS", "HIT", "HIT"} {
			a := dtGet(t, u, "token: "+tok)
			if a.xcache() != want || !bytes.Equal(a.body, direct.body) {
				t.Fatalf("read %d: X-Cache %q, body equal %v; want %s with AnqiCMS's exact bytes", i, a.xcache(), bytes.Equal(a.body, direct.body), want)
			}
			if age, err := strconv.Atoi(a.header.Get("Age")); err != nil || age < 0 {
				t.Errorf("read %d: Age %q, want a non-negative integer", i, a.header.Get("Age"))
			}
			if ct := a.header.Get("Content-Type"); ct != direct.header.Get("Content-Type") {
				t.Errorf("read %d: Content-Type %q, AnqiCMS said %q", i, ct, direct.header.Get("Content-Type"))
			}
			if a.header.Get("Content-Encoding") != "" {
				t.Errorf("read %d: Content-Encoding %q without Accept-Encoding", i, a.header.Get("Content-Encoding"))
			}
			tag := a.header.Get("ETag")
			if len(tag) < 3 || tag[0] != '"' || tag[len(tag)-1] != '"' {
				t.Fatalf("read %d: ETag %q, want a quoted strong tag", i, tag)
			}
			if etag != "" && tag != etag {
				t.Errorf("read %d: ETag changed from %s to %s for the same entry", i, etag, tag)
			}
			etag = tag
		}

		for _, c := range []struct {
			inm    string
			status int
		}{
			{etag, http.StatusNotModified},
			{"W/" + etag, http.StatusNotModified},
			{`"nope", ` + etag, http.StatusNotModified},
			{"*", http.StatusNotModified},
			{`"nope"`, http.StatusOK},
			{`W/"nope"`, http.StatusOK},
		} {
			a := dtGet(t, u, "token: "+tok, "If-None-Match: "+c.inm)
			if a.status != c.status {
				t.Errorf("If-None-Match %s: HTTP %d, want %d", c.inm, a.status, c.status)
			}
			if c.status == http.StatusNotModified {
				if len(a.body) != 0 || a.header.Get("ETag") != etag || a.xcache() != "HIT" {
					t.Errorf("If-None-Match %s: 304 with %d body bytes, ETag %q, X-Cache %q", c.inm, len(a.body), a.header.Get("ETag"), a.xcache())
				}
			} else if !bytes.Equal(a.body, direct.body) {
				t.Errorf("If-None-Match %s: body differs from AnqiCMS's", c.inm)
			}
		}

		for _, c := range []struct {
			ae   string
			gzip bool
		}{
			{"gzip", true},
			{"br, gzip, deflate", true},
			{"GZIP;q=0.5", true},
			{"gzip;q=0", false},
			{"identity", false},
			{"deflate", false},
		} {
			a := dtGet(t, u, "token: "+tok, "Accept-Encoding: "+c.ae)
			if got := a.header.Get("Content-Encoding") == "gzip"; got != c.gzip {
				t.Errorf("Accept-Encoding %q: Content-Encoding %q", c.ae, a.header.Get("Content-Encoding"))
				continue
			}
			plain := a.body
			if c.gzip {
				if bytes.Equal(a.body, direct.body) {
					t.Errorf("Accept-Encoding %q: labelled gzip but not compressed", c.ae)
				}
				if plain, err = dtGunzip(a.body); err != nil {
					t.Fatalf("Accept-Encoding %q: %v", c.ae, err)
				}
			}
			if !bytes.Equal(plain, direct.body) {
				t.Errorf("Accept-Encoding %q: decoded body differs from AnqiCMS's", c.ae)
			}
			if !strings.Contains(a.header.Get("Vary"), "Accept-Encoding") {
				t.Errorf("Accept-Encoding %q: Vary %q", c.ae, a.header.Get("Vary"))
			}
		}

		h, err := dtDo(http.MethodHead, u, "token: "+tok)
		if err != nil {
			t.Fatal(err)
		}
		if h.status != http.StatusOK || len(h.body) != 0 || h.xcache() != "HIT" || h.header.Get("ETag") != etag || h.header.Get("Age") == "" {
			t.Fatalf("HEAD: HTTP %d, %d body bytes, X-Cache %q, ETag %q, Age %q; want 200, headers, no body",
				h.status, len(h.body), h.xcache(), h.header.Get("ETag"), h.header.Get("Age"))
		}
		// HEAD on a cold key is AnqiCMS's to answer: it does not route
		// HEAD (404), and anqi-edge does not turn it into a GET.
		_, o2, _ := edgetest.SeedOne(env)
		tok2 := env.Fake.Token(o2.UserID, 48*time.Hour)
		direct2, err := dtDo(http.MethodHead, env.FakeURL+proxy.DetailPath+"?id="+strconv.FormatInt(o2.ID, 10), "token: "+tok2)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := dtDo(http.MethodHead, edgetest.DetailURL(env.URL, o2.ID), "token: "+tok2)
		if err != nil || h2.status != direct2.status || h2.xcache() != "BYPASS" || len(h2.body) != 0 {
			t.Fatalf("cold HEAD: %s, %d body bytes, %v; want AnqiCMS's HTTP %d, BYPASS", h2, len(h2.body), err, direct2.status)
		}
		if a := dtGet(t, edgetest.DetailURL(env.URL, o2.ID), "token: "+tok2); a.xcache() != "MISS" || a.code != 0 || a.order != o2.ID {
			t.Fatalf("GET after a cold HEAD: %s, want a MISS with the order (HEAD filled nothing)", a)
		}
	})
}

func TestDetail_ErrorAnswersAreNotCached(t *testing.T) {
	env := dtStart(t, true, nil, nil)
	users, orders := env.Fake.Seed(2, 1)
	tok := env.Fake.Token(users[0].ID, 48*time.Hour)
	for _, c := range []struct {
		id   int64
		code int
	}{{orders[1].ID, 1002}, {99999, -1}} {
		before := edgetest.DetailCalls(env)
		for range 2 {
			a := dtGet(t, edgetest.DetailURL(env.URL, c.id), "token: "+tok)
			if a.code != c.code || a.xcache() != "MISS" {
				t.Fatalf("order %d: %s, want code %d, MISS", c.id, a, c.code)
			}
		}
		if got := edgetest.DetailCalls(env); got != before+2 {
			t.Fatalf("order %d: calls %d -> %d, an error answer was served from cache", c.id, before, got)
		}
	}
}

// dtHeaderAdder sits between anqi-edge and the fake and adds a unique
// Set-Cookie to every detail answer, as a login-ish AnqiCMS route would.
func dtHeaderAdder(t *testing.T, upstream string) string {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.URL.Path == proxy.DetailPath {
			r.Header.Add("Set-Cookie", "sess="+strconv.FormatInt(n.Add(1), 10)+"; Path=/")
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestDetail_PerRequestHeadersAreNeverReplayed(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps with the other waiting tests
	edgetest.Modes(t, func(t *testing.T, verify bool) {
		env := dtStart(t, verify, []string{redistest.Shared(t)}, nil)
		// This replica caches tokens with 30 minutes left (renew window 1m),
		// so AnqiCMS's Update-Token for them lands on a cacheable answer.
		_, edge, _ := env.Replica(t, dtConfig(func(c *config.Config) {
			c.Upstream.URL = dtHeaderAdder(t, env.FakeURL)
			c.Auth.RenewWindow = config.Duration{Duration: time.Minute}
		}))
		user, o, long := edgetest.SeedOne(env)
		near := env.Fake.Token(user.ID, 30*time.Minute)
		u := edgetest.DetailURL(edge, o.ID)
		env.Fake.SetLatency(proxy.DetailPath, 200*time.Millisecond)

		const n = 20
		answers := make([]dtAnswer, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				answers[i], errs[i] = dtDo(http.MethodGet, u, "token: "+near)
			}()
		}
		close(start)
		wg.Wait()
		env.Fake.SetLatency(proxy.DetailPath, 0)
		leaders := 0
		for i, a := range answers {
			if errs[i] != nil || a.code != 0 {
				t.Fatalf("request %d: %s %v", i, a, errs[i])
			}
			cookie, renew := a.header.Get("Set-Cookie"), a.header.Get("Update-Token")
			if (cookie != "") != (renew != "") {
				t.Errorf("request %d: Set-Cookie %q but Update-Token %q: both come from the same upstream answer", i, cookie, renew)
			}
			if cookie != "" {
				leaders++
				if a.xcache() != "MISS" {
					t.Errorf("request %d: per-request headers on a %s answer", i, a.xcache())
				}
			}
		}
		if leaders != 1 {
			t.Fatalf("%d of %d collapsed requests got AnqiCMS's Set-Cookie/Update-Token, want exactly the leader", leaders, n)
		}
		later := []struct {
			name, token, want string
		}{
			{"same token", near, "HIT"},
			{"another token of the same user", long, map[bool]string{true: "HIT", false: "MISS"}[verify]},
			{"another token of the same user, again", long, "HIT"},
		}
		for _, l := range later {
			a := dtGet(t, u, "token: "+l.token)
			if a.code != 0 || a.xcache() != l.want {
				t.Fatalf("%s: %s, want %s", l.name, a, l.want)
			}
			renew, cookie := a.header.Get("Update-Token"), a.header.Get("Set-Cookie")
			if a.xcache() == "HIT" && (renew != "" || cookie != "") {
				t.Errorf("%s: cached answer carries Update-Token %q / Set-Cookie %q of another request", l.name, renew, cookie)
			}
			if l.token == long && renew != "" {
				t.Errorf("%s: Update-Token %q meant for the near-expiry token", l.name, renew)
			}
		}
	})
}

// --- faults ------------------------------------------------------------------

// TestDetail_RedisKilledMidLoadServesEveryRequestAndRecovers kills the Redis
// server under concurrent load, restarts it on the same port, and checks
// that no request failed and that Redis hits resume without restarting
// anqi-edge. L1 is off so every request consults Redis.
func TestDetail_RedisKilledMidLoadServesEveryRequestAndRecovers(t *testing.T) {
	rs := redistest.Start(t)
	env := dtStart(t, true, []string{rs.Addr()}, func(c *config.Config) {
		c.Cache.Memory.MaxBytes = 0
		c.Redis.BreakerCooldown = config.Duration{Duration: 200 * time.Millisecond}
	})
	users, orders := env.Fake.Seed(4, 2)
	tokens := map[int64]string{}
	for _, u := range users {
		tokens[u.ID] = env.Fake.Token(u.ID, 48*time.Hour)
	}
	for _, o := range orders {
		dtGet(t, edgetest.DetailURL(env.URL, o.ID), "token: "+tokens[o.UserID])
	}
	edgetest.Exported(t, env.Admin, "anqi_edge_cache_lookups_total", "anqi_edge_redis_breaker_state")
	if h := edgetest.Metric(t, env.Admin, "anqi_edge_cache_lookups_total", "tier=redis", "result=hit"); h != 0 {
		t.Fatalf("redis hits before the warm-up reads: %v", h)
	}
	hits0 := edgetest.Metric(t, env.Admin, "anqi_edge_cache_lookups_total", "tier=redis", "result=hit")

	var (
		stop     atomic.Bool
		total    atomic.Int64
		bad      atomic.Int64
		mu       sync.Mutex
		firstBad []string
		wg       sync.WaitGroup
	)
	const maxRequests = 20000
	deadline := time.Now().Add(20 * time.Second)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && total.Add(1) <= maxRequests && time.Now().Before(deadline); i++ {
				o := orders[(w+i)%len(orders)]
				a, err := dtDo(http.MethodGet, edgetest.DetailURL(env.URL, o.ID), "token: "+tokens[o.UserID])
				if err == nil && a.status == http.StatusOK && a.code == 0 && a.order == o.ID {
					continue
				}
				bad.Add(1)
				mu.Lock()
				if len(firstBad) < 5 {
					firstBad = append(firstBad, fmt.Sprintf("%s %v", a, err))
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	rs.Kill()
	// Wait until anqi-edge has noticed (breaker open), bounded.
	sawOpen := false
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if edgetest.Metric(t, env.Admin, "anqi_edge_redis_breaker_state") == 1 {
			sawOpen = true
			break
		}
	}
	var rd struct {
		Redis struct {
			Breaker string `json:"breaker"`
			Ping    string `json:"ping"`
		} `json:"redis"`
	}
	_, body := edgetest.Get(t, env.Admin+"/readyz")
	if err := json.Unmarshal(body, &rd); err != nil {
		t.Fatalf("readyz: %v: %s", err, body)
	}
	time.Sleep(300 * time.Millisecond)
	rs.Restart(t)
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d requests across the kill and restart; breaker seen open: %v; readyz during the outage: %+v", total.Load(), sawOpen, rd.Redis)
	if bad.Load() != 0 {
		t.Fatalf("%d requests failed across the Redis kill, e.g. %q", bad.Load(), firstBad)
	}
	if !sawOpen || rd.Redis.Ping == "ok" {
		t.Errorf("Redis outage not visible: breaker open %v, readyz redis %+v", sawOpen, rd.Redis)
	}

	// Redis hits come back without restarting anqi-edge (the restarted
	// server is empty: one read fills, the next hits).
	o := orders[0]
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		dtGet(t, edgetest.DetailURL(env.URL, o.ID), "token: "+tokens[o.UserID])
		a := dtGet(t, edgetest.DetailURL(env.URL, o.ID), "token: "+tokens[o.UserID])
		if edgetest.Metric(t, env.Admin, "anqi_edge_cache_lookups_total", "tier=redis", "result=hit") > hits0 && a.xcache() == "HIT" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("no Redis hit within 10s of the restart; last read %s", a)
		}
	}
	_, body = edgetest.Get(t, env.Admin+"/readyz")
	if err := json.Unmarshal(body, &rd); err != nil || rd.Redis.Breaker != "closed" || rd.Redis.Ping != "ok" {
		t.Fatalf("readyz after recovery: %s", body)
	}
}

func TestDetail_UpstreamDownServesStaleOrAnEnvelope(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps with the other waiting tests
	for _, withRedis := range []bool{false, true} {
		t.Run(map[bool]string{false: "l1", true: "redis"}[withRedis], func(t *testing.T) {
			t.Parallel()
			var addrs []string
			if withRedis {
				addrs = []string{redistest.Shared(t)}
			}
			env := dtStart(t, false, addrs, func(c *config.Config) {
				c.Cache.TTL = config.Duration{Duration: 200 * time.Millisecond}
				c.Cache.StaleWhileRevalidate = config.Duration{}
				c.Cache.StaleIfError = config.Duration{Duration: time.Minute}
				c.Cache.Memory.TTL = config.Duration{Duration: 100 * time.Millisecond}
				c.Upstream.Timeout = config.Duration{Duration: time.Second}
			})
			users, orders := env.Fake.Seed(1, 3)
			tok := env.Fake.Token(users[0].ID, 48*time.Hour)
			cached := dtGet(t, edgetest.DetailURL(env.URL, orders[0].ID), "token: "+tok)
			if cached.xcache() != "MISS" || cached.code != 0 {
				t.Fatalf("fill: %s", cached)
			}
			time.Sleep(300 * time.Millisecond) // past ttl

			// Upstream times out (upstream.timeout is 1s).
			env.Fake.SetLatency(proxy.DetailPath, 5*time.Second)
			a := dtGet(t, edgetest.DetailURL(env.URL, orders[0].ID), "token: "+tok)
			if a.status != http.StatusOK || a.xcache() != "STALE" || !bytes.Equal(a.body, cached.body) {
				t.Errorf("cached order, upstream timing out: %s, want the stale copy", a)
			}
			a = dtGet(t, edgetest.DetailURL(env.URL, orders[1].ID), "token: "+tok)
			if a.status != http.StatusGatewayTimeout || a.code != -1 || a.msg != "upstream unavailable" {
				t.Errorf("uncached order, upstream timing out: %s, want 504 with the envelope", a)
			}

			// Upstream gone.
			env.Fake.SetLatency(proxy.DetailPath, 0)
			env.Fake.Close()
			for i := range 3 {
				a = dtGet(t, edgetest.DetailURL(env.URL, orders[0].ID), "token: "+tok)
				if a.status != http.StatusOK || a.xcache() != "STALE" || !bytes.Equal(a.body, cached.body) {
					t.Errorf("cached order #%d, upstream down: %s, want the stale copy", i, a)
				}
				if age, _ := strconv.Atoi(a.header.Get("Age")); a.header.Get("Age") == "" || age < 0 {
					t.Errorf("stale answer Age %q", a.header.Get("Age"))
				}
			}
			a = dtGet(t, edgetest.DetailURL(env.URL, orders[2].ID), "token: "+tok)
			if a.status != http.StatusBadGateway || a.code != -1 || a.msg != "upstream unavailable" {
				t.Errorf("uncached order, upstream down: %s, want 502 with the envelope", a)
			}
		})
	}
}

func TestDetail_StaleWhileRevalidateRefreshesOnceInTheBackground(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps with the other waiting tests
	for _, withRedis := range []bool{false, true} {
		t.Run(map[bool]string{false: "l1", true: "redis-without-l1"}[withRedis], func(t *testing.T) {
			t.Parallel()
			var addrs []string
			if withRedis {
				addrs = []string{redistest.Shared(t)}
			}
			env := dtStart(t, true, addrs, func(c *config.Config) {
				c.Cache.TTL = config.Duration{Duration: 300 * time.Millisecond}
				c.Cache.StaleWhileRevalidate = config.Duration{Duration: time.Minute}
				c.Cache.Memory.TTL = config.Duration{Duration: time.Minute}
				if withRedis {
					c.Cache.Memory.MaxBytes = 0
				}
			})
			_, o, tok := edgetest.SeedOne(env)
			u := edgetest.DetailURL(env.URL, o.ID)
			if a := dtGet(t, u, "token: "+tok); a.xcache() != "MISS" {
				t.Fatalf("fill: %s", a)
			}
			env.Fake.AppendMessage(o.ID, fake.Message{Content: "changed behind anqi-edge's back"})
			time.Sleep(400 * time.Millisecond) // past ttl, well within swr
			before := edgetest.DetailCalls(env)

			const n = 20
			answers := make([]dtAnswer, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					answers[i], errs[i] = dtDo(http.MethodGet, u, "token: "+tok)
				}()
			}
			wg.Wait()
			stale := 0
			for i, a := range answers {
				if errs[i] != nil || a.code != 0 {
					t.Fatalf("request %d: %s %v", i, a, errs[i])
				}
				changed := len(a.texts) > 0 && a.texts[len(a.texts)-1] == "changed behind anqi-edge's back"
				switch {
				case a.xcache() == "STALE" && !changed:
					stale++
				case a.xcache() == "HIT" && changed:
				default:
					t.Errorf("request %d: %s with new data %v; want STALE old data or HIT new data", i, a, changed)
				}
			}
			if stale == 0 {
				t.Fatalf("no STALE answer past ttl within stale_while_revalidate")
			}
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				a := dtGet(t, u, "token: "+tok)
				if a.xcache() == "HIT" {
					if a.texts[len(a.texts)-1] != "changed behind anqi-edge's back" {
						t.Fatalf("HIT after the refresh serves old data: %v", a.texts)
					}
					break
				}
				if a.xcache() != "STALE" || time.Now().After(end) {
					t.Fatalf("waiting for the background refresh: %s", a)
				}
			}
			if got := edgetest.DetailCalls(env) - before; got != 1 {
				t.Fatalf("%d upstream calls for the revalidation, want exactly 1 background refresh", got)
			}
		})
	}
}

func TestDetail_SlowUpstreamAnswersEveryWaiterByItsDeadline(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps with the other waiting tests
	env := dtStart(t, true, nil, func(c *config.Config) {
		c.Upstream.Timeout = config.Duration{Duration: 300 * time.Millisecond}
	})
	_, o, tok := edgetest.SeedOne(env)
	env.Fake.SetLatency(proxy.DetailPath, 5*time.Second)
	const n = 20
	var wg sync.WaitGroup
	answers := make([]dtAnswer, n)
	took := make([]time.Duration, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			answers[i], errs[i] = dtDo(http.MethodGet, edgetest.DetailURL(env.URL, o.ID), "token: "+tok)
			took[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if errs[i] != nil || a.status != http.StatusGatewayTimeout || a.code != -1 {
			t.Errorf("request %d: %s %v, want 504 with the envelope", i, a, errs[i])
		}
		// upstream.timeout is 300ms; 4s is a bound with room for a loaded CI
		// machine, far below the fake's 5s latency.
		if took[i] > 4*time.Second {
			t.Errorf("request %d answered after %v", i, took[i])
		}
	}
}

// The stuck-leader and panicking-loader cases are unit tests of the load
// story now: cache/tiers_test.go (TestTiers_StuckLeaderDoesNotHangFollowers
// OrTheKey, TestTiers_PanicInALoaderReachesNoOtherCaller).

// --- observability -------------------------------------------------------------

func TestDetail_MetricsAndReadyzShowCacheState(t *testing.T) {
	env := dtStart(t, false, []string{redistest.Shared(t)}, nil)
	_, o, tok := edgetest.SeedOne(env)
	u := edgetest.DetailURL(env.URL, o.ID)
	// Replica 2 on the same Redis: its first read is a Redis hit.
	_, url2, admin2 := env.Replica(t, dtConfig(nil))
	env.Fake.SetLatency(proxy.DetailPath, 200*time.Millisecond)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dtDo(http.MethodGet, u, "token: "+tok)
		}()
	}
	wg.Wait()
	env.Fake.SetLatency(proxy.DetailPath, 0)
	dtGet(t, u, "token: "+tok)
	if a := dtGet(t, edgetest.DetailURL(url2, o.ID), "token: "+tok); a.xcache() != "HIT" {
		t.Fatalf("replica 2 reading replica 1's entry: %s, want a Redis HIT", a)
	}
	dtGet(t, u)

	checks := []struct {
		admin, name string
		labels      []string
		min         float64
	}{
		{env.Admin, "anqi_edge_cache_lookups_total", []string{"tier=l1", "result=hit"}, 1},
		{env.Admin, "anqi_edge_cache_lookups_total", []string{"tier=l1", "result=miss"}, 1},
		{env.Admin, "anqi_edge_cache_lookups_total", []string{"tier=redis", "result=miss"}, 1},
		{admin2, "anqi_edge_cache_lookups_total", []string{"tier=redis", "result=hit"}, 1},
		{env.Admin, "anqi_edge_detail_results_total", []string{"cache=HIT"}, 1},
		{env.Admin, "anqi_edge_detail_results_total", []string{"cache=MISS"}, 1},
		{env.Admin, "anqi_edge_detail_results_total", []string{"cache=BYPASS"}, 1},
		{env.Admin, "anqi_edge_singleflight_collapsed_total", nil, 1},
		{env.Admin, "anqi_edge_l1_bytes", nil, 1},
		{env.Admin, "anqi_edge_l1_entries", nil, 1},
		{env.Admin, "anqi_edge_cache_fills_total", []string{"tier=redis", "result=stored"}, 1},
		{env.Admin, "anqi_edge_upstream_requests_total", []string{"route=detail"}, 1},
		{env.Admin, "anqi_edge_requests_total", []string{"route=detail", "code=200"}, 12},
		{env.Admin, "anqi_edge_redis_breaker_state", nil, 0},
	}
	for _, c := range checks {
		edgetest.Exported(t, c.admin, c.name)
		if v := edgetest.Metric(t, c.admin, c.name, c.labels...); v < c.min {
			t.Errorf("%s%v = %v, want >= %v", c.name, c.labels, v, c.min)
		}
	}
	if v := edgetest.Metric(t, env.Admin, "anqi_edge_redis_breaker_state"); v != 0 {
		t.Errorf("redis_breaker_state = %v with Redis up, want 0 (closed)", v)
	}

	var rd struct {
		Status string `json:"status"`
		Redis  struct {
			Breaker    string `json:"breaker"`
			Subscribed bool   `json:"subscribed"`
			Ping       string `json:"ping"`
		} `json:"redis"`
		Upstream struct {
			Reachable bool `json:"reachable"`
		} `json:"upstream"`
		L1 struct {
			Bytes   int64 `json:"bytes"`
			Entries int64 `json:"entries"`
		} `json:"l1"`
	}
	resp, body := edgetest.Get(t, env.Admin+"/readyz")
	if err := json.Unmarshal(body, &rd); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: HTTP %d %s %v", resp.StatusCode, body, err)
	}
	if rd.Status != "ready" || rd.Redis.Breaker != "closed" || rd.Redis.Ping != "ok" || !rd.Upstream.Reachable ||
		rd.L1.Bytes <= 0 || rd.L1.Entries <= 0 {
		t.Errorf("readyz does not show the cache state: %s", body)
	}
}

// rewritingUpstream is the fake behind a layer that answers the detail of
// order 1 with a redirect and passes everything else on.
func rewritingUpstream(t *testing.T, target string) string {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/communication/order/detail" && r.URL.Query().Get("id") == "1" {
			w.Header().Set("Location", "/api/communication/order/detail?id=1&lang=en")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestDetail_AnswersThatAreNotStoredKeepTheirHeaders(t *testing.T) {
	base := edgetest.Start(t, edgetest.Options{Verify: true})
	base.Fake.Seed(1, 1)
	tok := base.Fake.Token(1, 24*3600e9)
	up := rewritingUpstream(t, base.FakeURL)
	_, edge, _ := base.Replica(t, func(c *config.Config) { c.Upstream.URL = up })
	noRedirect := &http.Client{Transport: edgetest.Client.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, edgetest.DetailURL(edge, 1), nil)
	req.Header.Set("token", tok)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") == "" {
		t.Fatalf("got HTTP %d Location %q, want AnqiCMS's 307 with its Location", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestDetail_AnswerOverMaxBodyIsStreamedThroughNotStored(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true, Config: func(c *config.Config) {
		c.Upstream.MaxBody = 256 // smaller than any order detail
	}})
	env.Fake.Seed(1, 1)
	tok := env.Fake.Token(1, 24*3600e9)
	_, direct := edgetest.Get(t, edgetest.DetailURL(env.FakeURL, 1), "token: "+tok)
	for i := range 2 {
		resp, body := edgetest.Get(t, edgetest.DetailURL(env.URL, 1), "token: "+tok)
		if resp.StatusCode != 200 || string(body) != string(direct) {
			t.Fatalf("read %d: HTTP %d, body differs from AnqiCMS's (%d vs %d bytes)", i, resp.StatusCode, len(body), len(direct))
		}
		if x := resp.Header.Get("X-Cache"); x != "BYPASS" {
			t.Fatalf("read %d: X-Cache %q, want BYPASS (too large to store)", i, x)
		}
	}
	if n := env.Fake.Calls("/api/communication/order/detail"); n < 3 {
		t.Fatalf("upstream saw %d detail calls, want every read to go upstream (nothing stored)", n)
	}
	if !strings.Contains(string(direct), `"code":0`) {
		t.Fatalf("direct answer is not a code 0 detail: %.80s", direct)
	}
}

// AnqiCMS matches a site's host case-sensitively: SITE2.EXAMPLE.TEST is
// site 1 to it. A cached answer for one spelling is never served for the
// other, and each gets what AnqiCMS gives it (issue 10, item 17).
func TestDetail_HostIsKeyedAsAnqiCMSMatchesIt(t *testing.T) {
	env := edgetest.Start(t, edgetest.Options{Verify: true, FakeOptions: &fake.Options{
		SiteHosts: map[string]int{"site2.example.test": 2},
	}})
	env.Fake.AddUser(fake.User{ID: 1, Name: "alice", SiteID: 2})
	o2 := env.Fake.AddOrder(fake.Order{UserID: 1, SiteID: 2, Title: "site two"})
	tok := env.Fake.Token(1, 48*time.Hour)
	url := edgetest.DetailURL(env.URL, o2.ID)
	if a := dtGet(t, url, "Host: site2.example.test", "token: "+tok); a.code != 0 {
		t.Fatalf("site 2's order on its own host: %s", a)
	}
	dtGet(t, url, "Host: site2.example.test", "token: "+tok) // now a HIT
	direct, err := dtDo(http.MethodGet, env.FakeURL+proxy.DetailPath+"?id="+strconv.FormatInt(o2.ID, 10), "Host: SITE2.EXAMPLE.TEST", "token: "+tok)
	if err != nil {
		t.Fatal(err)
	}
	a := dtGet(t, url, "Host: SITE2.EXAMPLE.TEST", "token: "+tok)
	if a.xcache() == "HIT" || a.code != direct.code {
		t.Fatalf("upper-case host: %s, want AnqiCMS's own answer for it (code %d), not site 2's cached order", a, direct.code)
	}
}
