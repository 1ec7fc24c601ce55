package anqicms

import "github.com/valyala/fasthttp"

// Answers to a bad detail id, rendered once. AnqiCMS answers errors with
// HTTP 200 and code -1, and so does anqi-edge, without asking it.
var (
	ErrIDMissing  = ErrorBody("id is required")
	ErrIDEmpty    = ErrorBody("id is empty")
	ErrIDRepeated = ErrorBody("id must be given once")
	ErrIDTooLong  = ErrorBody("id is too long")
	ErrIDNotInt   = ErrorBody("id must be an integer")
	ErrIDRange    = ErrorBody("id is out of range")
	ErrIDNotPos   = ErrorBody("id must be a positive integer")
)

// maxIDLen allows leading zeros (AnqiCMS accepts them) but not megabytes.
const maxIDLen = 64

// ParseOrderID reads the single "id" query value of a detail request the
// way AnqiCMS does (strconv.ParseInt, base 10: "01" and "+1" are 1) without
// allocating. On bad input it returns the envelope to answer with (one of
// the ErrID* bodies; never modify them): the id is missing, given twice,
// empty, longer than 64 bytes, not an integer, out of int64's range, or not
// positive.
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
		return 0, ErrIDMissing
	case n > 1:
		return 0, ErrIDRepeated
	case len(v) == 0:
		return 0, ErrIDEmpty
	case len(v) > maxIDLen:
		return 0, ErrIDTooLong
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
		return 0, ErrIDNotInt
	}
	var id uint64
	overflow := false
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, ErrIDNotInt
		}
		if id > (1<<63-1)/10 || id*10+uint64(c-'0') > 1<<63-1 {
			overflow = true
			continue
		}
		id = id*10 + uint64(c-'0')
	}
	switch {
	case overflow && neg, neg && id > 0, id == 0:
		return 0, ErrIDNotPos
	case overflow:
		return 0, ErrIDRange
	}
	return int64(id), nil
}
