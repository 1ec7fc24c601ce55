package redistest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Gate is a TCP forwarder in front of a server that a test can break in
// the two ways networks break: SetDown refuses and cuts connections (a
// partition TCP notices), SetHole keeps them open but drops every byte (a
// NAT or load balancer that silently forgot them; TCP reports nothing for
// minutes).
type Gate struct {
	ln     net.Listener
	target string
	hole   atomic.Bool
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// StartGate forwards a fresh 127.0.0.1 port to target until test cleanup.
func StartGate(t testing.TB, target string) *Gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	g.wg.Add(1)
	go g.accept()
	t.Cleanup(func() {
		ln.Close()
		g.SetDown(true)
		g.wg.Wait()
	})
	return g
}

// Addr is the address to connect to instead of target.
func (g *Gate) Addr() string { return g.ln.Addr().String() }

// SetDown cuts every connection and refuses new ones until set back.
func (g *Gate) SetDown(down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
	if down {
		for c := range g.conns {
			c.Close()
		}
		clear(g.conns)
	}
}

// SetHole makes open connections drop every byte (or forward again).
func (g *Gate) SetHole(hole bool) { g.hole.Store(hole) }

func (g *Gate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		if g.down {
			g.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", g.target, time.Second)
		if err != nil {
			g.mu.Unlock()
			c.Close()
			continue
		}
		g.conns[c], g.conns[up] = struct{}{}, struct{}{}
		g.wg.Add(2)
		g.mu.Unlock()
		go g.pipe(up, c)
		go g.pipe(c, up)
	}
}

func (g *Gate) pipe(dst, src net.Conn) {
	defer g.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !g.hole.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
