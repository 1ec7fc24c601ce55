// Package negotiate reads the request headers that decide how a stored
// answer is sent: If-None-Match (304) and Accept-Encoding (the gzip copy).
// Both run on the cached-hit path, so neither allocates.
package negotiate

import (
	"bytes"
	"strconv"
)

var gzipToken = []byte("gzip")

// ETagMatches implements If-None-Match's weak comparison over a list.
func ETagMatches(header, etag []byte) bool {
	for len(header) > 0 {
		var tag []byte
		tag, header, _ = bytes.Cut(header, []byte{','})
		tag = bytes.TrimSpace(tag)
		tag = bytes.TrimPrefix(tag, []byte("W/"))
		if bytes.Equal(tag, etag) || (len(tag) == 1 && tag[0] == '*') {
			return true
		}
	}
	return false
}

// AcceptsGzip reports whether Accept-Encoding allows gzip (and does not
// refuse it with q=0).
func AcceptsGzip(ae []byte) bool {
	for len(ae) > 0 {
		var part []byte
		part, ae, _ = bytes.Cut(ae, []byte{','})
		name, params, _ := bytes.Cut(bytes.TrimSpace(part), []byte(";"))
		if !bytes.EqualFold(bytes.TrimSpace(name), gzipToken) && !bytes.Equal(bytes.TrimSpace(name), []byte("*")) {
			continue
		}
		params = bytes.TrimSpace(params)
		if q, ok := bytes.CutPrefix(params, []byte("q=")); ok {
			if f, err := strconv.ParseFloat(string(q), 64); err == nil && f == 0 {
				return false
			}
		}
		return true
	}
	return false
}
