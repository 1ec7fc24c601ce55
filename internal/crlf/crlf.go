// Package crlf refuses HTTP/1 header blocks that end with a bare LF, on the
// connection, before the server parses them.
package crlf

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// fasthttp reads a request's lines whether they end in CRLF or a bare LF,
// but it waits for CRLFCRLF to end the header block: a request whose
// block ends with a bare LF ("\n\n", "\r\n\n", "\n\r\n") is never
// complete, and the client hangs until server.read_timeout. AnqiCMS (Go's
// net/http) and nginx accept such a request; anqi-edge refuses it at once
// with 400 instead, because translating line endings would mean rewriting
// the bytes fasthttp parses, and the request is rare and only ever from
// hand-made clients. Requests whose block ends in CRLFCRLF, whatever their
// other lines end with, are served as before. Plain HTTP only: behind
// server.tls_cert the hang stays bounded by server.read_timeout.

// ErrBareLF fails the read that brings a header block ended by a bare LF;
// fasthttp hands it to the server's ErrorHandler, which answers 400.
var ErrBareLF = errors.New("request header block ends with a bare LF (CRLF line endings required)")

// Listener wraps each connection ln accepts so that a first header block
// ending in a bare LF fails with ErrBareLF. Plain TCP only: fasthttp tells
// TLS connections by their type, which a wrapper would hide.
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &headerConn{Conn: c, armed: true}, nil
}

// headerConn watches the bytes of a connection's first header block as
// fasthttp reads them, up to the blank line that ends it. Only the first:
// it starts at the connection's first byte, so it is exact, whereas where
// a later block starts depends on where the previous body ended, which only
// fasthttp knows (a body's bytes must never be judged as a header). Clients
// that end lines with a bare LF are hand-made and send one request per
// connection; a keep-alive client speaks CRLF. Only fasthttp's serving
// goroutine reads the connection.
type headerConn struct {
	net.Conn
	armed    bool // inside a header block (until its blank line)
	content  bool // a non-empty line was seen in this block
	lineLen  int  // bytes on the current line, a trailing CR excluded
	cr       bool // the last byte was CR
	prevCRLF bool // the last line ended with CRLF
}

func (c *headerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.armed {
		return n, err
	}
	for i, b := range p[:n] {
		switch b {
		case '\r':
			if c.cr {
				c.lineLen++
			}
			c.cr = true
			continue
		case '\n':
			crlf := c.cr
			c.cr = false
			if c.lineLen > 0 || !c.content {
				// The end of a line, or an empty line before the request
				// line (which HTTP lets a server ignore).
				c.lineLen, c.prevCRLF = 0, crlf
				continue
			}
			// The blank line that ends the block.
			c.armed = false
			if !crlf || !c.prevCRLF {
				return i + 1, ErrBareLF
			}
			return n, err
		default:
			if c.cr {
				c.lineLen++
			}
			c.cr = false
			c.lineLen++
			c.content = true
		}
	}
	return n, err
}

// SyscallConn exposes the socket, so package peer can still tell whether
// the client has gone (the watchers and their probes depend on it).
func (c *headerConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("not a socket")
}

// ReadFrom keeps the socket's own io.ReaderFrom: bufio.Writer hands a
// streamed answer body to it, and without it a download would be held in
// the writer's buffer instead of flowing as AnqiCMS sends it.
func (c *headerConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
