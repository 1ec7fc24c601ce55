// Package fake is an in-process AnqiCMS for anqi-edge's tests, demo and
// benchmarks. It is faithful to what anqi-edge can observe of AnqiCMS, as
// gathered from its API documentation and open-source code: the
// {"code","msg","data"} envelope with errors on HTTP 200, codes
// -1/1001/1002, user JWTs signed with the site's TokenSecret+"-user-token"
// carrying string claims userId and t, the token header-then-cookie lookup,
// anonymous fallback for bad tokens, Update-Token on /api answers when under
// an hour is left, site selection by X-Host/Host and ?site_id, msg
// localisation, and the communication-order endpoints with per-site,
// per-user visibility. On top of that it offers test controls (latency,
// holds, one-shot failures, call counters) and debug endpoints under /__*,
// which AnqiCMS does not have.
package fake

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Server. The zero value serves one site with the
// secret "fake-secret".
type Options struct {
	TokenSecret string                   // site TokenSecret; default "fake-secret"
	SiteHosts   map[string]int           // host (as matched: case-sensitive, no port) -> site id; no match -> site 1
	SiteSecrets map[int]string           // per-site TokenSecret; falls back to TokenSecret
	Latency     map[string]time.Duration // per-path delay before the answer is written
	Now         func() time.Time         // default time.Now
}

// Server is a fake AnqiCMS. It is an http.Handler; Start also serves it.
type Server struct {
	opts Options

	mu        sync.RWMutex // guards the data below
	users     map[int64]*User
	orders    map[int64]*Order
	lastUser  int64
	lastOrder int64
	lastMsg   int64

	db *dbStore // nil: orders live in memory only (see NewWithDB)

	calls sync.Map // path -> *atomic.Int64

	ctl     sync.Mutex // guards the test controls and servers below
	latency map[string]time.Duration
	holds   map[string][]*Hold
	fails   map[string][]*failure
	servers []*http.Server

	serving   sync.WaitGroup
	done      chan struct{} // closed by Close: aborts held and sleeping requests
	closeOnce sync.Once
}

type failure struct {
	status int
	body   string
}

// Hold is a request parked by Server.Hold.
type Hold struct {
	Started <-chan struct{} // closed once the held request has computed its answer

	started chan struct{}
	release chan struct{}
	once    sync.Once
}

// Release lets the held request write its answer. Safe to call twice.
func (h *Hold) Release() { h.once.Do(func() { close(h.release) }) }

// New returns a Server with no users or orders.
func New(opts Options) *Server {
	if opts.TokenSecret == "" {
		opts.TokenSecret = "fake-secret"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.SiteHosts = maps.Clone(opts.SiteHosts)
	opts.SiteSecrets = maps.Clone(opts.SiteSecrets)
	s := &Server{
		opts:    opts,
		users:   map[int64]*User{},
		orders:  map[int64]*Order{},
		latency: map[string]time.Duration{},
		holds:   map[string][]*Hold{},
		fails:   map[string][]*failure{},
		done:    make(chan struct{}),
	}
	maps.Copy(s.latency, opts.Latency)
	return s
}

// ServeHTTP counts the call, computes the answer right away and, when a
// hold, latency or failure applies, buffers it so that it is written later
// exactly as it was when the request arrived.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.counter(r.URL.Path).Add(1)

	s.ctl.Lock()
	delay := s.latency[r.URL.Path]
	hold := popFront(s.holds, r.URL.Path)
	fail := popFront(s.fails, r.URL.Path)
	s.ctl.Unlock()

	if hold == nil && delay == 0 && fail == nil {
		s.route(w, r)
		return
	}
	buf := &bufferedResponse{header: http.Header{}}
	if fail != nil {
		ct := "text/plain; charset=utf-8"
		if b := strings.TrimSpace(fail.body); strings.HasPrefix(b, "{") || strings.HasPrefix(b, "[") {
			ct = jsonType
		}
		buf.Header().Set("Content-Type", ct)
		buf.WriteHeader(fail.status)
		buf.Write([]byte(fail.body))
	} else {
		s.route(buf, r)
	}
	if hold != nil {
		close(hold.started)
		wait(s, r, hold.release)
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		wait(s, r, t.C)
	}
	buf.writeTo(w)
}

// wait blocks until c fires; a closing server or a gone client abandons the
// request without an answer, as a dying backend would.
func wait[T any](s *Server, r *http.Request, c <-chan T) {
	select {
	case <-c:
	case <-s.done:
		panic(http.ErrAbortHandler)
	case <-r.Context().Done():
		panic(http.ErrAbortHandler)
	}
}

func popFront[T any](m map[string][]T, path string) T {
	var zero T
	q := m[path]
	if len(q) == 0 {
		return zero
	}
	if len(q) == 1 {
		delete(m, path)
	} else {
		m[path] = q[1:]
	}
	return q[0]
}

func (s *Server) counter(path string) *atomic.Int64 {
	if c, ok := s.calls.Load(path); ok {
		return c.(*atomic.Int64)
	}
	c, _ := s.calls.LoadOrStore(path, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// Calls reports how many requests arrived for exactly this URL path.
func (s *Server) Calls(path string) int64 {
	if c, ok := s.calls.Load(path); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// ResetCalls sets every call counter to zero.
func (s *Server) ResetCalls() {
	s.calls.Range(func(_, c any) bool {
		c.(*atomic.Int64).Store(0)
		return true
	})
}

// SetLatency delays answers to path by d from now on (0 removes the delay).
func (s *Server) SetLatency(path string, d time.Duration) {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if d <= 0 {
		delete(s.latency, path)
	} else {
		s.latency[path] = d
	}
}

// Hold parks the next request to path: it computes its answer on arrival
// (a snapshot of the data then), closes Started, and writes the answer only
// after Release. Several holds on one path apply to successive requests.
func (s *Server) Hold(path string) *Hold {
	h := &Hold{started: make(chan struct{}), release: make(chan struct{})}
	h.Started = h.started
	s.ctl.Lock()
	s.holds[path] = append(s.holds[path], h)
	s.ctl.Unlock()
	return h
}

// FailNext makes the next request to path answer status and body verbatim,
// once. The body is labelled JSON if it looks like JSON, else plain text.
func (s *Server) FailNext(path string, status int, body string) {
	s.ctl.Lock()
	s.fails[path] = append(s.fails[path], &failure{status, body})
	s.ctl.Unlock()
}

// Start listens on addr ("127.0.0.1:0" picks a port), serves in the
// background and returns the base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) Start(addr string) (string, error) {
	select {
	case <-s.done:
		return "", errors.New("fake: server closed")
	default:
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.ctl.Lock()
	s.servers = append(s.servers, srv)
	s.ctl.Unlock()
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		srv.Serve(ln)
	}()

	a := ln.Addr().(*net.TCPAddr)
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(a.Port)), nil
}

// Close stops the listeners, aborts held and sleeping requests, and waits
// for the serving goroutines to finish.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		s.ctl.Lock()
		servers := s.servers
		s.ctl.Unlock()
		for _, srv := range servers {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if e := srv.Shutdown(ctx); e != nil {
				// A slow upload can outlive the grace period; cut it off.
				err = errors.Join(err, srv.Close())
			}
			cancel()
		}
		s.serving.Wait()
	})
	return err
}

// bufferedResponse records an answer so it can be written later.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

func (b *bufferedResponse) writeTo(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	if b.status == 0 {
		b.status = http.StatusOK
	}
	w.WriteHeader(b.status)
	w.Write(b.body.Bytes())
}
