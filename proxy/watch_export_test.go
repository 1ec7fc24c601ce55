package proxy

// Test hooks for the watch endpoints (package proxy_test cannot reach
// unexported fields).

// CloseWatchers ends every watch of s as Shutdown does first, without
// closing the listeners, so a test can see how watchers that arrive during
// the drain are answered.
func CloseWatchers(s *Server) { s.watch.hub.shutdown() }
