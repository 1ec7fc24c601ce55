package proxy

// Test hooks for the detail path (package proxy_test cannot reach
// unexported fields).

// SetDetailFillHook makes every detail fill of s call f(order) first; nil
// removes the hook. Safe while s is serving.
func SetDetailFillHook(s *Server, f func(order int64)) {
	if f == nil {
		s.detail.fillHook.Store(nil)
		return
	}
	s.detail.fillHook.Store(&f)
}
