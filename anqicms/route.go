package anqicms

// RoutePath is the path AnqiCMS's router matches for a raw request path.
// Seen on a running AnqiCMS: paths match exactly (no "//" folding, no "."
// or ".." segments resolved, no case folding, a trailing slash counts), and
// percent-escapes are decoded except those that decode to '/': "/api/%6Cogin"
// is "/api/login", "/api%2Flogin" is nothing AnqiCMS routes. anqi-edge
// decides what to cache and which writes invalidate on this path and
// forwards the raw one, so both see the same route.
//
// raw is returned as is when it has no escapes (no copy, no allocation);
// otherwise the decoded path is appended to dst. ok is false for a
// malformed escape, which AnqiCMS does not route either.
func RoutePath(dst, raw []byte) (path []byte, ok bool) {
	i := 0
	for i < len(raw) && raw[i] != '%' {
		i++
	}
	if i == len(raw) {
		return raw, true
	}
	dst = append(dst, raw[:i]...)
	for ; i < len(raw); i++ {
		c := raw[i]
		if c != '%' {
			dst = append(dst, c)
			continue
		}
		if i+2 >= len(raw) {
			return nil, false
		}
		h, l := unhex(raw[i+1]), unhex(raw[i+2])
		if h < 0 || l < 0 {
			return nil, false
		}
		if b := byte(h<<4 | l); b == '/' {
			dst = append(dst, raw[i:i+3]...)
		} else {
			dst = append(dst, b)
		}
		i += 2
	}
	return dst, true
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
