// Package anqicms holds what anqi-edge knows about AnqiCMS itself: the JSON
// envelope its API answers with, how it names the site a request is for,
// and how it decides who a request comes from (the user token). Everything
// here mirrors AnqiCMS's own rules, because a cache key that is coarser than
// AnqiCMS's idea of "the same request" would hand one customer another
// customer's order.
package anqicms

import (
	"bytes"
	"encoding/json"
)

// Envelope codes AnqiCMS uses.
const (
	CodeOK          = 0
	CodeError       = -1
	CodeNotLoggedIn = 1001
	CodeNoAccess    = 1002
)

// EnvelopeCode reports the top-level "code" of an AnqiCMS JSON answer. ok is
// false when body is not a JSON object with a numeric code, which anqi-edge
// treats as "not an API answer" and never caches. It runs on the fill path
// only, never on a cache hit.
func EnvelopeCode(body []byte) (code int64, ok bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return 0, false
	}
	var env struct {
		Code *int64 `json:"code"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Code == nil {
		return 0, false
	}
	return *env.Code, true
}

// ErrorBody renders {"code":-1,"msg":msg} the way AnqiCMS answers its errors
// (always with HTTP 200 for API errors).
func ErrorBody(msg string) []byte {
	b, _ := json.Marshal(struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}{CodeError, msg})
	return b
}

// SiteHost returns the host AnqiCMS picks the site by: X-Host if present,
// else Host, with the port stripped and the case kept. AnqiCMS compares a
// request's host with each site's URL case-sensitively
// ("SITE2.EXAMPLE.TEST" falls back to site 1), so two spellings are two
// sites to it and must be two keys here. It appends to dst so the hot path
// can use a stack buffer.
func SiteHost(dst, xHost, host []byte) []byte {
	h := xHost
	if len(h) == 0 {
		h = host
	}
	// Strip the port, minding bracketed IPv6 literals.
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && bytes.IndexByte(h[i:], ']') < 0 {
		h = h[:i]
	}
	return append(dst, h...)
}
