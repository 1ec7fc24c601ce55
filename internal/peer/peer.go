// Package peer tells, without reading anything, whether the other end of a
// TCP connection has closed it. fasthttp has no per-request cancellation and
// its client pool hands out idle connections without looking at them; both
// the watchers (is the client still there?) and the upstream pool (is
// AnqiCMS still on the other end of this idle connection?) need to know.
package peer

import (
	"net"
	"syscall"
)

// Closed reports whether the peer of conn has closed its end (sent FIN or
// reset). It peeks with MSG_PEEK|MSG_DONTWAIT, so pipelined bytes stay for
// the real reader and the call never blocks. Connections that are not
// plain TCP are reported open.
func Closed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	var buf [1]byte
	raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		case err != nil:
			gone = true
		case n == 0:
			gone = true
		}
		return true // never wait for readiness: this is a poll, not a read
	})
	return gone
}
