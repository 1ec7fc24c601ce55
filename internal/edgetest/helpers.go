package edgetest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/proxy"
)

// ModeName names an identity mode for subtests.
func ModeName(verify bool) string {
	if verify {
		return "verified"
	}
	return "fingerprint"
}

// Modes runs f once per identity mode: fingerprint (no auth.token_secret)
// and verified.
func Modes(t *testing.T, f func(t *testing.T, verify bool)) {
	for _, verify := range []bool{false, true} {
		t.Run(ModeName(verify), func(t *testing.T) { f(t, verify) })
	}
}

// SeedOne adds one user with one order and returns a 48h token for it.
func SeedOne(env *Env) (user fake.User, order fake.Order, token string) {
	users, orders := env.Fake.Seed(1, 1)
	return users[0], orders[0], env.Fake.Token(users[0].ID, 48*time.Hour)
}

// DetailCalls is how many detail reads reached the fake.
func DetailCalls(env *Env) int64 { return env.Fake.Calls(proxy.DetailPath) }

// Eventually polls cond every 20ms for up to 10s (a bound for a loaded
// machine; the conditions normally hold within milliseconds).
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ready is /readyz as the tests read it.
type Ready struct {
	Status   string `json:"status"`
	Upstream struct {
		URL       string `json:"url"`
		Reachable bool   `json:"reachable"`
		Error     string `json:"error"`
	} `json:"upstream"`
	Redis struct {
		Breaker    string `json:"breaker"`
		Subscribed bool   `json:"subscribed"`
		Pending    int    `json:"pending_invalidations"`
		Epoch      int64  `json:"epoch"`
		Ping       string `json:"ping"`
	} `json:"redis"`
	// RedisRaw is the "redis" member as sent ("disabled" without Redis).
	RedisRaw json.RawMessage `json:"-"`
	L1       struct {
		Bytes   int64 `json:"bytes"`
		Entries int64 `json:"entries"`
	} `json:"l1"`
}

// Readyz reads admin's /readyz; it fails the test unless the answer is 200.
func Readyz(t testing.TB, admin string) Ready {
	t.Helper()
	resp, b := Get(t, admin+"/readyz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz %s: HTTP %d: %s", admin, resp.StatusCode, b)
	}
	var raw struct {
		Redis json.RawMessage `json:"redis"`
	}
	var r Ready
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("readyz %s: %v: %s", admin, err, b)
	}
	r.RedisRaw = raw.Redis
	if strings.HasPrefix(string(raw.Redis), "{") {
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("readyz %s: %v: %s", admin, err, b)
		}
	} else {
		var noRedis struct {
			Status   string          `json:"status"`
			Upstream json.RawMessage `json:"upstream"`
			L1       json.RawMessage `json:"l1"`
		}
		json.Unmarshal(b, &noRedis)
		r.Status = noRedis.Status
		json.Unmarshal(noRedis.Upstream, &r.Upstream)
		json.Unmarshal(noRedis.L1, &r.L1)
	}
	return r
}

// Subscribed waits until every admin URL reports a live subscription.
func Subscribed(t testing.TB, admins ...string) {
	t.Helper()
	for _, a := range admins {
		Eventually(t, a+" subscribed", func() bool { return Readyz(t, a).Redis.Subscribed })
	}
}

// SendPath is AnqiCMS's message/send write.
const SendPath = "/api/communication/message/send"

// Send posts a message to order through base and returns the envelope code.
func Send(t testing.TB, base string, order int64, token, content string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"comm_order_id": order, "content": content})
	resp, b := Do(t, http.MethodPost, base+SendPath, strings.NewReader(string(body)),
		"Content-Type: application/json", "token: "+token)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("send to order %d via %s: HTTP %d: %s", order, base, resp.StatusCode, b)
	}
	var env struct {
		Code int `json:"code"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("send to order %d: answer is not JSON: %q", order, b)
	}
	return env.Code
}

// Purge calls POST /admin/purge on an admin base URL with the test token.
func Purge(t testing.TB, admin string, id int64) {
	t.Helper()
	resp, b := Do(t, http.MethodPost, admin+"/admin/purge?id="+strconv.FormatInt(id, 10), nil,
		"Authorization: Bearer admin-secret")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("purge %d via %s: HTTP %d: %s", id, admin, resp.StatusCode, b)
	}
}
