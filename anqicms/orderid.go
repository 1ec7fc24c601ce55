package anqicms

import (
	"github.com/valyala/fasthttp"
)

// Answers to bad ids, rendered once. AnqiCMS answers errors with HTTP 200
// and code -1, and so does anqi-edge, without asking it.
var (
	errIDMissing  = ErrorBody("id is required")
	errIDEmpty    = ErrorBody("id is empty")
	errIDRepeated = ErrorBody("id must be given once")
	errIDTooLong  = ErrorBody("id is too long")
	errIDNotInt   = ErrorBody("id must be an integer")
	errIDRange    = ErrorBody("id is out of range")
	errIDNotPos   = ErrorBody("id must be a positive integer")
)

// maxIDLen allows leading zeros (AnqiCMS accepts them) but not megabytes.
const maxIDLen = 64

// ParseOrderID reads the single id query value the way AnqiCMS does
// (strconv.ParseInt, base 10: "01" and "+1" are 1) without allocating. On bad
// input it returns the error body to answer with.
func ParseOrderID(args *fasthttp.Args) (int64, []byte) {
	var v []byte
	n := 0
	for k, val := range args.All() {
		if string(k) == "id" {
			n++
			v = val
		}
	}
	switch {
	case n == 0:
		return 0, errIDMissing
	case n > 1:
		return 0, errIDRepeated
	case len(v) == 0:
		return 0, errIDEmpty
	case len(v) > maxIDLen:
		return 0, errIDTooLong
	}
	neg := false
	switch v[0] {
	case '+':
		v = v[1:]
	case '-':
		neg = true
		v = v[1:]
	}
	if len(v) == 0 {
		return 0, errIDNotInt
	}
	var id uint64
	overflow := false
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, errIDNotInt
		}
		if id > (1<<63-1)/10 || id*10+uint64(c-'0') > 1<<63-1 {
			overflow = true
			continue
		}
		id = id*10 + uint64(c-'0')
	}
	switch {
	case overflow && neg, neg && id > 0, id == 0:
		return 0, errIDNotPos
	case overflow:
		return 0, errIDRange
	}
	return int64(id), nil
}
