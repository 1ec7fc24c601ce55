package edgetest

import (
	"bytes"
	"sync"

	"go.uber.org/goleak"

	"anqi-edge/internal/redistest"
)

// LibraryGoroutines are the goroutines goleak must not count in tests that
// run fasthttp servers and clients, otter caches or net/http clients: the
// libraries' process-wide workers, started once, and cleaners that end on
// their own timers after a shutdown, not at it.
var LibraryGoroutines = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.init.func1"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
	// A stopped server's idle-worker cleaner notices the stop only after
	// its 10s sleep.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	// otter's cleaner ends once its cache is garbage collected.
	goleak.IgnoreAnyFunction("github.com/maypok86/otter/v2.periodicCleanUp[...]"),
	// Idle keep-alive connections of net/http clients (Client among them).
	goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	// The test binary's own Redis when ANQI_EDGE_TEST_REDIS is not set.
	redistest.ProcessServerGoroutine,
}

// SyncBuffer is a bytes.Buffer that a test reads while another goroutine
// (a logger, a child process's output) writes to it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
