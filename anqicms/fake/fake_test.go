package fake

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const detailPath = "/api/communication/order/detail"

type envelope struct {
	Code  int             `json:"code"`
	Msg   *string         `json:"msg"`
	Data  json.RawMessage `json:"data"`
	Total *int            `json:"total"`
}

// start serves a fake seeded with 2 users of 2 orders each: user1 owns
// orders 1 and 2, user2 orders 3 and 4.
func start(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	s := New(opts)
	s.Seed(2, 2)
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, base
}

// send performs a request; headers are name/value pairs, with "Host" and
// "Cookie" handled as such.
func send(t *testing.T, method, url, body string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		} else {
			req.Header.Add(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// api performs an /api request and decodes the envelope, checking what
// every AnqiCMS answer shares.
func api(t *testing.T, method, url, body string, headers ...string) (*http.Response, envelope) {
	t.Helper()
	resp, b := send(t, method, url, body, headers...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d %s", method, url, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil || e.Msg == nil {
		t.Fatalf("%s %s: not an envelope: %s", method, url, b)
	}
	return resp, e
}

func decode[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	return v
}

func detail(t *testing.T, base, id, token string, headers ...string) envelope {
	t.Helper()
	_, e := api(t, "GET", base+detailPath+"?id="+id, "", append([]string{"token", token}, headers...)...)
	return e
}

func TestTokenViaHeaderAndCookie(t *testing.T) {
	s, base := start(t, Options{})
	tok := s.Token(1, time.Hour*24)
	for name, h := range map[string][]string{
		"header":              {"token", tok},
		"cookie":              {"Cookie", "token=" + tok},
		"empty header+cookie": {"token", "", "Cookie", "token=" + tok},
		"header wins":         {"token", tok, "Cookie", "token=junk"},
	} {
		_, e := api(t, "GET", base+detailPath+"?id=1", "", h...)
		if e.Code != 0 {
			t.Fatalf("%s: code %d msg %s", name, e.Code, *e.Msg)
		}
		o := decode[Order](t, e.Data)
		if o.ID != 1 || o.UserID != 1 || o.User.UserName != "user1" || len(o.Messages) != 1 {
			t.Errorf("%s: got %+v", name, o)
		}
	}
}

func TestTokenMatchesAnqiCMS(t *testing.T) {
	s := New(Options{})
	s.Seed(1, 0)
	tok, err := jwt.Parse(s.Token(1, time.Hour), func(*jwt.Token) (any, error) {
		return []byte("fake-secret-user-token"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := tok.Claims.(jwt.MapClaims)
	if tok.Method.Alg() != "HS256" || c["userId"] != "1" || len(c) != 2 {
		t.Fatalf("alg %s claims %v", tok.Method.Alg(), c)
	}
	exp, err := strconv.ParseInt(c["t"].(string), 10, 64)
	if err != nil || abs(exp-time.Now().Add(time.Hour).Unix()) > 2 {
		t.Errorf("t = %v", c["t"])
	}
}

func abs(n int64) int64 { return max(n, -n) }

func sign(t *testing.T, m jwt.SigningMethod, key string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(m, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestInvalidTokensAreAnonymous(t *testing.T) {
	s, base := start(t, Options{})
	later := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	key := "fake-secret-user-token"
	for name, tok := range map[string]string{
		"none":         "",
		"garbage":      "not.a.jwt",
		"expired":      s.Token(1, -time.Minute),
		"wrong secret": sign(t, jwt.SigningMethodHS256, "other-user-token", jwt.MapClaims{"userId": "1", "t": later}),
		"admin key":    sign(t, jwt.SigningMethodHS256, "fake-secret-admin-token", jwt.MapClaims{"userId": "1", "t": later}),
		"number claim": sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"userId": 1, "t": later}),
		"no t":         sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"userId": "1"}),
		"unknown user": s.Token(99, time.Hour),
	} {
		_, e := api(t, "GET", base+detailPath+"?id=1", "", "token", tok)
		if e.Code != CodeNotLogin || *e.Msg != "请先登录" {
			t.Errorf("%s: code %d msg %q, want 1001", name, e.Code, *e.Msg)
		}
	}
	_, e := api(t, "GET", base+detailPath+"?id=1", "", "Accept-Language", "en-US,en;q=0.9")
	if e.Code != CodeNotLogin || *e.Msg != "Please log in first" {
		t.Errorf("English: code %d msg %q", e.Code, *e.Msg)
	}
	_, e = api(t, "GET", base+detailPath+"?id=1", "", "Accept-Language", "en", "Cookie", "lang=zh-cn")
	if *e.Msg != "请先登录" {
		t.Errorf("lang cookie should beat Accept-Language: %q", *e.Msg)
	}

	// AnqiCMS accepts any HMAC method.
	hs512 := sign(t, jwt.SigningMethodHS512, key, jwt.MapClaims{"userId": "1", "t": later})
	if e := detail(t, base, "1", hs512); e.Code != 0 {
		t.Errorf("HS512 token: code %d", e.Code)
	}
}

func TestUpdateToken(t *testing.T) {
	s, base := start(t, Options{})
	resp, e := api(t, "GET", base+detailPath+"?id=1", "", "token", s.Token(1, 30*time.Minute))
	fresh := resp.Header.Get("Update-Token")
	if e.Code != 0 || fresh == "" {
		t.Fatalf("code %d, Update-Token %q", e.Code, fresh)
	}
	id, expiry, ok := s.parseToken(fresh, 1)
	if !ok || id != 1 || abs(expiry-time.Now().Add(24*time.Hour).Unix()) > 2 {
		t.Errorf("renewed token: user %d expiry %d ok %v", id, expiry, ok)
	}
	// Any /api answer carries it, errors included.
	resp, e = api(t, "GET", base+detailPath+"?id=3", "", "token", s.Token(1, 59*time.Minute))
	if e.Code != CodeNoAccess || resp.Header.Get("Update-Token") == "" {
		t.Errorf("error answer: code %d, Update-Token %q", e.Code, resp.Header.Get("Update-Token"))
	}
	resp, _ = api(t, "GET", base+detailPath+"?id=1", "", "token", s.Token(1, 2*time.Hour))
	if h := resp.Header.Values("Update-Token"); len(h) != 0 {
		t.Errorf("Update-Token with 2h left: %q", h)
	}
}

func TestOwnerAndExistence(t *testing.T) {
	s, base := start(t, Options{})
	if e := detail(t, base, "3", s.Token(1, time.Hour*2)); e.Code != CodeNoAccess {
		t.Errorf("another user's order: code %d", e.Code)
	}
	if e := detail(t, base, "999", s.Token(1, time.Hour*2)); e.Code != CodeError || *e.Msg != "订单不存在" {
		t.Errorf("missing order: code %d msg %q", e.Code, *e.Msg)
	}
}

func TestDetailIDParsing(t *testing.T) {
	s, base := start(t, Options{})
	tok := s.Token(1, 2*time.Hour)
	for _, id := range []string{"1", "01", "%2B1"} {
		e := detail(t, base, id, tok)
		if e.Code != 0 || decode[Order](t, e.Data).ID != 1 {
			t.Errorf("id=%s: code %d data %s", id, e.Code, e.Data)
		}
	}
	for _, id := range []string{"", "x", "1.0", "99999999999999999999"} {
		e := detail(t, base, id, tok, "Accept-Language", "en")
		if e.Code != CodeError || !strings.Contains(*e.Msg, "id") || string(e.Data) != "null" {
			t.Errorf("id=%q: code %d msg %q data %s", id, e.Code, *e.Msg, e.Data)
		}
	}
}

func TestMessages(t *testing.T) {
	s, base := start(t, Options{})
	tok := s.Token(1, 2*time.Hour)
	_, e := api(t, "POST", base+"/api/communication/message/send",
		`{"comm_order_id":1,"message_type":"text","content":"Is it ready?"}`, "token", tok)
	m := decode[Message](t, e.Data)
	if e.Code != 0 || m.ID == 0 || m.CommOrderID != 1 || m.SenderType != "user" || m.SenderID != 1 || m.SenderName != "user1" {
		t.Fatalf("send: code %d message %+v", e.Code, m)
	}
	// Bound as AnqiCMS binds: JSON whatever the Content-Type (the id may
	// be a string here, with escapes); a form body is refused.
	if e := postAs(t, base+"/api/communication/message/send", "application/x-www-form-urlencoded",
		url.Values{"comm_order_id": {"1"}, "content": {"form"}}.Encode(), tok); e.Code != CodeError {
		t.Errorf("form body on a JSON route: code %d, want -1", e.Code)
	}
	if e := postAs(t, base+"/api/communication/message/send", "application/x-www-form-urlencoded",
		`{"comm_order_id":"\u0031","content":"second"}`, tok); e.Code != 0 {
		t.Errorf("JSON labelled as a form: code %d", e.Code)
	}

	o := decode[Order](t, detail(t, base, "1", tok).Data)
	if n := len(o.Messages); n != 3 || o.Messages[1].Content != "Is it ready?" || o.Messages[2].Content != "second" {
		t.Errorf("detail messages: %+v", o.Messages)
	}
	_, e = api(t, "GET", base+"/api/communication/messages?comm_order_id=1&current=2&page_size=2", "", "token", tok)
	if ms := decode[[]Message](t, e.Data); e.Total == nil || *e.Total != 3 || len(ms) != 1 || ms[0].Content != "second" {
		t.Errorf("messages page 2: total %v data %s", e.Total, e.Data)
	}
	_, e = api(t, "POST", base+"/api/communication/message/send", `{"comm_order_id":3,"content":"x"}`, "token", tok)
	if e.Code != CodeNoAccess {
		t.Errorf("send to another user's order: code %d", e.Code)
	}
}

// postAs POSTs body with exactly the Content-Type ct.
func postAs(t *testing.T, url, ct, body, token string) envelope {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e envelope
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return e
}

// Writes bind as AnqiCMS's ReadJSON does: encoding/json into a struct,
// whatever the Content-Type. Each case is sent to order/update and checked
// in the order's title.
func TestWrites_BindTheBodyAsEncodingJSONDoes(t *testing.T) {
	s, base := start(t, Options{})
	tok := s.Token(1, 2*time.Hour)
	update := base + "/api/communication/order/update"
	title := func() string { return decode[Order](t, detail(t, base, "1", tok).Data).Title }
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("id", "1")
	mw.WriteField("title", "multipart")
	mw.Close()
	for _, c := range []struct {
		name, ct, body string
		code           int
		title          string // the title afterwards
	}{
		{"JSON", "application/json", `{"id":1,"title":"a"}`, 0, "a"},
		{"no Content-Type", "", `{"id":1,"title":"b"}`, 0, "b"},
		{"labelled as a form", "application/x-www-form-urlencoded", `{"id":1,"title":"c"}`, 0, "c"},
		{"labelled as a form-like type", "application/x-www-form-urlencodedx", `{"id":1,"title":"d"}`, 0, "d"},
		{"keys in any case", "application/json", `{"ID":1,"Title":"e"}`, 0, "e"},
		{"the last duplicate wins", "application/json", `{"id":2,"Id":1,"title":"x","TITLE":"f"}`, 0, "f"},
		{"a later null keeps the value", "application/json", `{"id":1,"id":null,"title":"g"}`, 0, "g"},
		{"a string id with escapes", "application/json", `{"id":"\u0031","title":"h"}`, 0, "h"},
		{"a null title changes nothing", "application/json", `{"id":1,"title":null}`, 0, "h"},
		{"a form body", "application/x-www-form-urlencoded", "id=1&title=form", CodeError, "h"},
		{"a multipart body", mw.FormDataContentType(), mp.String(), CodeError, "h"},
		{"trailing bytes", "application/json", `{"id":1,"title":"x"} x`, CodeError, "h"},
		{"a float id", "application/json", `{"id":1.0,"title":"x"}`, CodeError, "h"},
		{"a number title", "application/json", `{"id":1,"title":5}`, CodeError, "h"},
		{"an empty body", "application/json", ``, CodeError, "h"},
	} {
		if e := postAs(t, update, c.ct, c.body, tok); e.Code != c.code {
			t.Errorf("%s: code %d msg %v, want %d", c.name, e.Code, e.Msg, c.code)
		}
		if got := title(); got != c.title {
			t.Errorf("%s: title %q, want %q", c.name, got, c.title)
		}
	}
}

func TestLoginAndOrderLifecycle(t *testing.T) {
	_, base := start(t, Options{})
	_, e := api(t, "POST", base+"/api/login", `{"user_name":"user1","password":"nope"}`)
	if e.Code != CodeError {
		t.Errorf("wrong password: code %d", e.Code)
	}
	resp, e := api(t, "POST", base+"/api/login", `{"user_name":"user1","password":"pass1"}`)
	login := decode[struct {
		ID       int64  `json:"id"`
		UserName string `json:"user_name"`
		Token    string `json:"token"`
	}](t, e.Data)
	if e.Code != 0 || login.ID != 1 || login.UserName != "user1" {
		t.Fatalf("login: code %d data %s", e.Code, e.Data)
	}
	if c := resp.Header.Get("Set-Cookie"); c != "token="+login.Token+"; Path=/; HttpOnly" {
		t.Errorf("Set-Cookie %q", c)
	}
	tok := login.Token

	_, e = api(t, "POST", base+"/api/communication/order/create", `{"archive_id":7,"title":"Cake","content":"Big","phone":"123","order_extra":{"tier":2}}`, "token", tok)
	created := decode[Order](t, e.Data)
	if e.Code != 0 || created.ID != 5 || created.Status != StatusPending || created.UserID != 1 || created.ArchiveID != 7 || created.OrderExtra["tier"] != 2.0 {
		t.Fatalf("create: code %d data %s", e.Code, e.Data)
	}
	for _, empty := range []string{`"images":[]`, `"messages":[]`, `"order_fields":[]`, `"sketch_images":[]`} {
		if !bytes.Contains(e.Data, []byte(empty)) {
			t.Errorf("create answer lacks %s: %s", empty, e.Data)
		}
	}

	_, e = api(t, "GET", base+"/api/communication/orders?current=1&page_size=2", "", "token", tok)
	list := decode[[]Order](t, e.Data)
	if e.Code != 0 || e.Total == nil || *e.Total != 3 || len(list) != 2 || list[0].ID != 5 || list[1].ID != 2 {
		t.Errorf("list: total %v data %s", e.Total, e.Data)
	}

	_, e = api(t, "POST", base+"/api/communication/order/update", `{"id":5,"title":"Pie"}`, "token", tok)
	if o := decode[Order](t, e.Data); e.Code != 0 || o.Title != "Pie" || o.Content != "Big" {
		t.Errorf("update: code %d data %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+"/api/communication/order/accept", `{"id":"5"}`, "token", tok)
	if o := decode[Order](t, e.Data); e.Code != 0 || o.Status != StatusAccepted || o.OrderID == "" {
		t.Errorf("accept: code %d data %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+"/api/communication/order/update", `{"id":3,"title":"mine"}`, "token", tok)
	if e.Code != CodeNoAccess {
		t.Errorf("update another user's order: code %d", e.Code)
	}
}

func TestHold(t *testing.T) {
	s, base := start(t, Options{})
	tok := s.Token(1, 2*time.Hour)
	h := s.Hold(detailPath)
	answered := make(chan envelope, 1)
	go func() {
		// No t.Fatal off the test goroutine: a failed request sends a zero envelope.
		var e envelope
		defer func() { answered <- e }()
		req, _ := http.NewRequest("GET", base+detailPath+"?id=1", nil)
		req.Header.Set("token", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&e)
	}()
	<-h.Started
	s.AppendMessage(1, Message{Content: "admin reply"})
	s.SetOrderStatus(1, StatusQuoted)
	select {
	case <-answered:
		t.Fatal("answered before Release")
	case <-time.After(50 * time.Millisecond):
	}
	h.Release()
	held := <-answered
	if held.Code != 0 {
		t.Fatalf("held answer: code %d", held.Code)
	}
	if o := decode[Order](t, held.Data); o.Status != StatusPending || len(o.Messages) != 1 {
		t.Errorf("held answer: status %d, %d messages; want the snapshot at arrival (0, 1)", o.Status, len(o.Messages))
	}
	o := decode[Order](t, detail(t, base, "1", tok).Data)
	if o.Status != StatusQuoted || len(o.Messages) != 2 || o.Messages[1].SenderType != "admin" {
		t.Errorf("after release: status %d messages %+v", o.Status, o.Messages)
	}
}

func TestCloseAbortsHeldRequest(t *testing.T) {
	s := New(Options{})
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := s.Hold("/__echo/x")
	failed := make(chan error, 1)
	go func() {
		resp, err := http.Get(base + "/__echo/x")
		if err == nil {
			resp.Body.Close()
		}
		failed <- err
	}()
	<-h.Started
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close hangs on a held request")
	}
	if err := <-failed; err == nil {
		t.Error("held request got an answer after Close")
	}
}

func TestCallsFailNextLatency(t *testing.T) {
	s, base := start(t, Options{Latency: map[string]time.Duration{"/__echo/slow": 80 * time.Millisecond}})
	tok := s.Token(1, 2*time.Hour)
	s.ResetCalls()
	for range 3 {
		detail(t, base, "1", tok)
	}
	send(t, "GET", base+"/nowhere", "")
	if n := s.Calls(detailPath); n != 3 {
		t.Errorf("Calls(detail) = %d", n)
	}
	if n := s.Calls("/nowhere"); n != 1 {
		t.Errorf("Calls(/nowhere) = %d", n)
	}

	s.FailNext(detailPath, http.StatusBadGateway, "<html>bad gateway</html>")
	resp, b := send(t, "GET", base+detailPath+"?id=1", "", "token", tok)
	if resp.StatusCode != http.StatusBadGateway || string(b) != "<html>bad gateway</html>" {
		t.Errorf("FailNext: %d %s", resp.StatusCode, b)
	}
	if e := detail(t, base, "1", tok); e.Code != 0 {
		t.Errorf("after FailNext: code %d", e.Code)
	}
	if n := s.Calls(detailPath); n != 5 {
		t.Errorf("Calls(detail) = %d, want failed requests counted", n)
	}
	s.ResetCalls()
	if n := s.Calls(detailPath); n != 0 {
		t.Errorf("after ResetCalls: %d", n)
	}

	t0 := time.Now()
	send(t, "GET", base+"/__echo/slow", "")
	if d := time.Since(t0); d < 80*time.Millisecond {
		t.Errorf("latency from Options: answered in %s", d)
	}
	s.SetLatency("/__echo/slow", 0)
	s.SetLatency("/__echo/other", 80*time.Millisecond)
	t0 = time.Now()
	send(t, "GET", base+"/__echo/other", "")
	if d := time.Since(t0); d < 80*time.Millisecond {
		t.Errorf("SetLatency: answered in %s", d)
	}
}

func TestSiteIsolation(t *testing.T) {
	s, base := start(t, Options{
		SiteHosts:   map[string]int{"b.example": 2, "c.example": 3},
		SiteSecrets: map[int]string{2: "secret-b"},
	})
	s.AddUser(User{ID: 10, Name: "bob", Password: "pw", SiteID: 2})
	bobs := s.AddOrder(Order{UserID: 10, Title: "site 2 order"})
	if bobs.SiteID != 2 || bobs.User.UserName != "bob" {
		t.Fatalf("AddOrder: %+v", bobs)
	}
	id := strconv.FormatInt(bobs.ID, 10)
	bob, user1 := s.Token(10, 2*time.Hour), s.Token(1, 2*time.Hour)

	for name, h := range map[string][]string{
		"X-Host":            {"X-Host", "b.example:8080"},
		"Host":              {"Host", "b.example"},
		"X-Host beats Host": {"X-Host", "b.example", "Host", "a.example"},
	} {
		if e := detail(t, base, id, bob, h...); e.Code != 0 {
			t.Errorf("%s: code %d", name, e.Code)
		}
	}
	if _, e := api(t, "GET", base+detailPath+"?id="+id+"&site_id=2", "", "token", bob); e.Code != 0 {
		t.Errorf("site_id=2: code %d", e.Code)
	}
	// Hosts match case-sensitively, as AnqiCMS matches them: another
	// spelling is site 1.
	if e := detail(t, base, id, bob, "X-Host", "B.EXAMPLE"); e.Code != CodeNotLogin {
		t.Errorf("bob on an upper-case spelling of site 2's host: code %d, want site 1's %d", e.Code, CodeNotLogin)
	}
	// Site 1 does not know bob's secret, user or order.
	if e := detail(t, base, id, bob); e.Code != CodeNotLogin {
		t.Errorf("bob on site 1: code %d", e.Code)
	}
	if e := detail(t, base, id, user1); e.Code != CodeError {
		t.Errorf("site 2 order seen from site 1: code %d", e.Code)
	}
	// Site 3 shares site 1's secret but not its users.
	if e := detail(t, base, "1", user1, "X-Host", "c.example"); e.Code != CodeNotLogin {
		t.Errorf("user1 on site 3: code %d", e.Code)
	}
	if _, e := api(t, "POST", base+"/api/login", `{"user_name":"bob","password":"pw"}`); e.Code != CodeError {
		t.Errorf("bob logged in on site 1: code %d", e.Code)
	}
	if _, e := api(t, "POST", base+"/api/login", `{"user_name":"bob","password":"pw"}`, "X-Host", "b.example"); e.Code != 0 {
		t.Errorf("bob login on site 2: code %d msg %s", e.Code, *e.Msg)
	}
	_, e := api(t, "GET", base+"/api/communication/orders", "", "token", bob, "X-Host", "b.example")
	if list := decode[[]Order](t, e.Data); len(list) != 1 || list[0].ID != bobs.ID {
		t.Errorf("bob's list: %s", e.Data)
	}
}

func TestEcho(t *testing.T) {
	_, base := start(t, Options{})
	body := bytes.Repeat([]byte("0123456789"), 3<<20/10)
	req, _ := http.NewRequest("PUT", base+"/__echo/a/b%2Fc?x=1&y=2", bytes.NewReader(body))
	req.Host = "shop.example:8080"
	req.Header.Add("X-Test", "one")
	req.Header.Add("X-Test", "two")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Echo
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if got.Method != "PUT" || got.Path != "/__echo/a/b/c" || got.RequestURI != "/__echo/a/b%2Fc?x=1&y=2" ||
		got.RawQuery != "x=1&y=2" || got.Host != "shop.example:8080" || got.BodyLen != int64(len(body)) ||
		got.BodySHA256 != hex.EncodeToString(sum[:]) || strings.Join(got.Headers["X-Test"], ",") != "one,two" {
		t.Errorf("echo: %+v", got)
	}
	if resp.Header.Get("Set-Cookie") != "echo=1; Path=/" || resp.Header.Get("Update-Token") != "echo-token" {
		t.Errorf("echo headers: %v", resp.Header)
	}
}

func TestDebugEndpoints(t *testing.T) {
	_, base := start(t, Options{})
	resp, b := send(t, "POST", base+"/__raw/x", `{"a":1}`)
	if resp.Header.Get("Content-Type") != "application/json" || string(b) != `{"a":1}` {
		t.Errorf("raw: %q %s", resp.Header.Get("Content-Type"), b)
	}
	resp, b = send(t, "GET", base+"/__status/503", "")
	if resp.StatusCode != 503 || len(b) == 0 {
		t.Errorf("status: %d %s", resp.StatusCode, b)
	}
	resp, b = send(t, "GET", base+"/__big?n=100003", "")
	if resp.StatusCode != 200 || !bytes.Equal(b, BigBody(100003)) {
		t.Errorf("big: %d, %d bytes", resp.StatusCode, len(b))
	}
	t0 := time.Now()
	resp, _ = send(t, "GET", base+"/__sleep?d=50ms", "")
	if resp.StatusCode != 200 || time.Since(t0) < 50*time.Millisecond {
		t.Errorf("sleep: %d after %s", resp.StatusCode, time.Since(t0))
	}
	for _, p := range []string{"/nowhere", "/api/nowhere", "/__status/abc"} {
		if resp, _ := send(t, "GET", base+p, ""); resp.StatusCode != 404 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := send(t, "POST", base+detailPath, ""); resp.StatusCode != 404 {
		t.Errorf("wrong method: %d", resp.StatusCode)
	}
}

func TestOrderIsDeepCopy(t *testing.T) {
	s := New(Options{})
	_, orders := s.Seed(1, 1)
	orders[0].Messages[0].Content = "changed"
	orders[0].OrderExtra["size"] = "XL"
	o, ok := s.Order(orders[0].ID)
	if !ok || o.Messages[0].Content == "changed" || o.OrderExtra["size"] != "M" {
		t.Errorf("stored order aliased by the returned copy: %+v", o)
	}
}

func BenchmarkDetail(b *testing.B) {
	s := New(Options{})
	s.Seed(100, 5)
	tok := s.Token(1, 24*time.Hour)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", detailPath+"?id=1", nil)
			req.Header.Set("token", tok)
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatal(w.Code)
			}
		}
	})
}

func TestConcurrentReadsAndWrites(t *testing.T) {
	s := New(Options{})
	s.Seed(2, 2)
	tok := s.Token(1, 24*time.Hour)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			for range 20 {
				req := httptest.NewRequest("GET", detailPath+"?id=1", nil)
				if i%5 == 0 {
					req = httptest.NewRequest("POST", "/api/communication/message/send", strings.NewReader(`{"comm_order_id":1,"content":"hi"}`))
				}
				req.Header.Set("token", tok)
				w := httptest.NewRecorder()
				s.ServeHTTP(w, req)
				if !strings.HasPrefix(w.Body.String(), `{"code":0,`) {
					t.Errorf("%s: %s", req.URL.Path, w.Body)
					return
				}
			}
		})
	}
	s.AppendMessage(1, Message{Content: "admin"})
	wg.Wait()
	if o, _ := s.Order(1); len(o.Messages) != 1+10*20+1 {
		t.Errorf("%d messages", len(o.Messages))
	}
}
