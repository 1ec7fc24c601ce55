// Package upconn keeps anqi-edge's pool of connections to AnqiCMS honest:
// a pooled connection AnqiCMS has closed is found before a request is
// written into it, requests that provably never reached AnqiCMS are sent
// again on a fresh connection, and the rest of a dead pool is dropped at
// once (after an AnqiCMS restart, every idle connection in it is dead).
package upconn

import (
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/valyala/fasthttp"

	"anqi-edge/internal/peer"
)

// Checked wraps a connection the pool dialled (see pooledConn).
func Checked(c net.Conn) net.Conn { return &pooledConn{Conn: c} }

// ErrPeerClosed: the pooled connection's peer had already closed it when a
// request was about to be written, so no byte of the request reached
// AnqiCMS.
var ErrPeerClosed = errors.New("AnqiCMS had closed this pooled connection before the request was sent")

// pooledConn checks, before the first write of each request, that AnqiCMS
// has not closed the connection while it sat idle in the pool (AnqiCMS was
// restarted, or dropped it after its own idle timeout). fasthttp hands out
// idle connections without looking; writing into one whose peer is gone
// succeeds locally and only the read fails, and by then nobody can tell
// whether AnqiCMS saw the request. Looking first makes that case provable,
// so even a write can be retried on a fresh connection.
type pooledConn struct {
	net.Conn
	// writing is true between a request's first write and the next read.
	// Only fasthttp's one goroutine per request uses the connection.
	writing bool
}

func (c *pooledConn) Write(p []byte) (int, error) {
	if !c.writing {
		c.writing = true
		if peer.Closed(c.Conn) {
			return 0, ErrPeerClosed
		}
	}
	return c.Conn.Write(p)
}

func (c *pooledConn) Read(p []byte) (int, error) {
	c.writing = false
	return c.Conn.Read(p)
}

// RetryOnDeadConn decides fasthttp's retries (RetryIfErr's results are
// (resetTimeout, retry)). A request is resent on a fresh connection when it
// provably never reached AnqiCMS (ErrPeerClosed: any method), or, for a
// read (GET, HEAD, OPTIONS), when the connection died before the first
// answer byte. Either way the rest of the idle pool is dropped: after
// AnqiCMS restarts, every connection in it is dead, and each would
// otherwise cost one client one failed request. Streamed bodies are never
// resent (fasthttp does not retry them: they are consumed).
func RetryOnDeadConn(hc *fasthttp.HostClient) fasthttp.RetryIfErrFunc {
	return func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
		if attempts > 3 {
			return false, false
		}
		if errors.Is(err, ErrPeerClosed) {
			hc.CloseIdleConnections()
			return false, true
		}
		idempotent := req.Header.IsGet() || req.Header.IsHead() || req.Header.IsOptions()
		if idempotent && deadConn(err) {
			hc.CloseIdleConnections()
			return false, true
		}
		return false, false
	}
}

// deadConn reports whether err is a connection that broke before answering
// (closed or reset), not a timeout or a protocol error.
func deadConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

var ErrClosedEarly = errors.New("AnqiCMS closed the connection before answering")

// Explain replaces fasthttp's advice to its own users ("make sure the
// server returns 'connection: close'") with what happened, for the logs.
func Explain(err error) error {
	if errors.Is(err, fasthttp.ErrConnectionClosed) {
		return ErrClosedEarly
	}
	return err
}
