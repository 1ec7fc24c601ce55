package proxy

import (
	"maps"

	"github.com/valyala/fasthttp"
)

// SetTestRoute adds a public route that answers path with h, ahead of
// pass-through. Safe to call while the server is serving, and from several
// goroutines.
func (s *Server) SetTestRoute(path string, h fasthttp.RequestHandler) {
	for {
		cur := s.extra.Load()
		next := map[string]fasthttp.RequestHandler{}
		if cur != nil {
			maps.Copy(next, *cur)
		}
		next[path] = h
		if s.extra.CompareAndSwap(cur, &next) {
			return
		}
	}
}
