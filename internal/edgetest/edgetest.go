// Package edgetest starts a fake AnqiCMS and anqi-edge replicas in front of
// it, over real sockets, for integration tests.
package edgetest

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"anqi-edge/anqicms/fake"
	"anqi-edge/config"
	"anqi-edge/internal/redistest"
	"anqi-edge/proxy"
	"anqi-edge/replica"
)

// Secret is the TokenSecret of the fake AnqiCMS.
const Secret = "fake-secret"

// Options shape an Env.
type Options struct {
	// Redis is the address list for anqi-edge; nil = L1 only.
	Redis []string
	// Verify sets auth.token_secret to the fake's secret (identity u:<id>);
	// false leaves it empty (fingerprint identity).
	Verify bool
	// Config edits the replica's config after the test defaults are applied.
	Config func(*config.Config)
	// Fake reuses an existing fake AnqiCMS; nil starts a new one.
	Fake *fake.Server
	// FakeOptions configures the fake started when Fake is nil (sites,
	// per-site secrets, latency); nil = fake.Options{TokenSecret: Secret}.
	// An empty TokenSecret is set to Secret.
	FakeOptions *fake.Options
	// FakeDB, when set, keeps the fake's orders and messages in that
	// database (fake.NewWithDB) instead of in memory.
	FakeDB *sql.DB
	// Log receives the replicas' log; nil = discarded (stderr at debug
	// level with ANQI_EDGE_TEST_LOG set). Tests that check what is logged
	// pass a logger over a capturing handler.
	Log *slog.Logger
}

// Env is a fake AnqiCMS plus one anqi-edge replica.
type Env struct {
	Fake    *fake.Server
	FakeURL string
	Edge    *replica.Replica
	URL     string // http://127.0.0.1:PORT of the public listener
	Admin   string // http://127.0.0.1:PORT of the admin listener
	Config  *config.Config
	opts    Options
	prefix  string
}

// Start brings up the fake (unless given) and one replica. Both stop at
// test cleanup.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	e := &Env{opts: o, Fake: o.Fake}
	if e.Fake == nil {
		fo := fake.Options{TokenSecret: Secret}
		if o.FakeOptions != nil {
			fo = *o.FakeOptions
			if fo.TokenSecret == "" {
				fo.TokenSecret = Secret
			}
		}
		if o.FakeDB != nil {
			f, err := fake.NewWithDB(fo, o.FakeDB)
			if err != nil {
				t.Fatalf("fake anqicms on a database: %v", err)
			}
			e.Fake = f
		} else {
			e.Fake = fake.New(fo)
		}
		u, err := e.Fake.Start("127.0.0.1:0")
		if err != nil {
			t.Fatalf("fake anqicms: %v", err)
		}
		e.FakeURL = u
		t.Cleanup(func() { e.Fake.Close() })
	} else {
		e.FakeURL = fakeURL(t, o.Fake)
	}
	e.prefix = strings.NewReplacer(":", "", " ", "").Replace(redistest.Prefix(t))
	e.Edge, e.Config = e.replica(t, o.Config)
	e.URL = "http://" + e.Edge.Addr()
	e.Admin = "http://" + e.Edge.AdminAddr()
	return e
}

// fakeURLs remembers each started fake's URL; parallel tests share it.
var (
	fakeURLsMu sync.Mutex
	fakeURLs   = map[*fake.Server]string{}
)

func fakeURL(t testing.TB, f *fake.Server) string {
	fakeURLsMu.Lock()
	u, ok := fakeURLs[f]
	fakeURLsMu.Unlock()
	if !ok {
		t.Fatal("edgetest: Options.Fake must come from an Env started earlier in this test")
	}
	return u
}

// Replica starts another anqi-edge on the same fake and the same Redis key
// space (a second replica of the same deployment). It returns its public
// and admin base URLs.
func (e *Env) Replica(t testing.TB, edit func(*config.Config)) (srv *replica.Replica, url, admin string) {
	t.Helper()
	srv, _ = e.replica(t, edit)
	return srv, "http://" + srv.Addr(), "http://" + srv.AdminAddr()
}

// Config returns the test defaults for a replica in front of upstream.
func Config(upstream string, redisAddrs []string, verify bool) *config.Config {
	c := config.Default()
	c.Server.Listen = "127.0.0.1:0"
	c.Admin.Listen = "127.0.0.1:0"
	c.Server.ShutdownGrace = config.Duration{Duration: 5 * time.Second}
	c.Upstream.URL = upstream
	c.Upstream.Timeout = config.Duration{Duration: 2 * time.Second}
	c.Redis.Addrs = redisAddrs
	c.Admin.Token = "admin-secret"
	if verify {
		c.Auth.TokenSecret = Secret
	}
	c.Log.Level = "error"
	return c
}

func (e *Env) replica(t testing.TB, edit func(*config.Config)) (*replica.Replica, *config.Config) {
	t.Helper()
	fakeURLsMu.Lock()
	fakeURLs[e.Fake] = e.FakeURL
	fakeURLsMu.Unlock()
	c := Config(e.FakeURL, e.opts.Redis, e.opts.Verify)
	// Every test gets its own key space and channel, so tests sharing one
	// redis-server never see each other's entries or invalidations.
	c.Redis.KeyPrefix = "t" + e.prefix
	c.Redis.Channel = "inv:" + e.prefix
	if edit != nil {
		edit(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("edgetest config: %v", err)
	}
	level := slog.LevelError
	if os.Getenv("ANQI_EDGE_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(logWriter(), &slog.HandlerOptions{Level: level}))
	if e.opts.Log != nil {
		log = e.opts.Log
	}
	srv, err := replica.New(c, log)
	if err != nil {
		t.Fatalf("anqi-edge: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("anqi-edge start: %v", err)
	}
	t.Cleanup(func() {
		// A connection the client dialled but never used counts as busy for
		// its first 5s (fasthttp, like net/http), and Shutdown would wait for
		// it; drop the client's idle ones first.
		Client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, c
}

func logWriter() io.Writer {
	if os.Getenv("ANQI_EDGE_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// Client is an HTTP client with no connection reuse surprises: a short
// timeout and no transparent gzip (tests check encodings themselves).
var Client = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 256},
}

// Get sends GET url with headers ("Name: value") and returns the response
// and its body.
func Get(t testing.TB, url string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	return Do(t, http.MethodGet, url, nil, headers...)
}

// Do sends a request and reads the whole answer.
func Do(t testing.TB, method, url string, body io.Reader, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatalf("request %s %s: %v", method, url, err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	resp, err := Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, b
}

// DetailURL is the detail endpoint of base for order id.
func DetailURL(base string, id int64) string {
	return base + proxy.DetailPath + "?id=" + itoa(id)
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// InFlight sends n GETs to url with client in the background; each
// outcome arrives on the channel (nil for a 200).
func InFlight(client *http.Client, url string, n int) <-chan error {
	out := make(chan error, n)
	for range n {
		go func() {
			resp, err := client.Get(url)
			if err != nil {
				out <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			switch {
			case err != nil:
				out <- err
			case resp.StatusCode != http.StatusOK:
				out <- errors.New(resp.Status + ": " + string(b))
			default:
				out <- nil
			}
		}()
	}
	return out
}

// WaitStarted waits until every held request has reached the fake.
func WaitStarted(t testing.TB, holds []*fake.Hold) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i, h := range holds {
		select {
		case <-h.Started:
		case <-timeout:
			t.Fatalf("held request %d never reached the upstream", i)
		}
	}
}

// Refused polls until a new connection to addr is refused (up to 5s).
func Refused(addr string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
	}
	return false
}
