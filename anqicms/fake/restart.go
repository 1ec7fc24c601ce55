package fake

import (
	"errors"
	"net"
	"strings"
	"time"
)

// Restart stops serving as a killed AnqiCMS process would — every listener
// and every open connection, idle keep-alive ones included, closed at once,
// requests in progress cut off without an answer — then listens again on
// addr (the base URL's host:port, e.g. "http://127.0.0.1:41234" or
// "127.0.0.1:41234"). The data survives, as AnqiCMS's database does.
func (s *Server) Restart(addr string) error {
	addr = strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://")
	s.ctl.Lock()
	servers := s.servers
	s.servers = nil
	s.ctl.Unlock()
	var err error
	for _, srv := range servers {
		err = errors.Join(err, srv.Close())
	}
	if err != nil {
		return err
	}
	// The port was just released; another process could take it in
	// between, so retry briefly instead of failing on the first refusal.
	var lerr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, lerr = s.Start(addr); lerr == nil {
			return nil
		}
		var op *net.OpError
		if !errors.As(lerr, &op) {
			return lerr
		}
	}
	return lerr
}
