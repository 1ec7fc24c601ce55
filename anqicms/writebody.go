package anqicms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// IDSource says where a write carries the id of the order it changes, as an
// [[invalidate]] rule spells it: Kind is "json", "form" or "query", Field
// the parameter's name.
type IDSource struct{ Kind, Field string }

// ErrNoOrderID wraps every reason WriteOrderIDs could not name the order a
// write changes. A caller must then assume the write may change any order
// and fail safe (refuse it, or drop what it could touch).
var ErrNoOrderID = errors.New("order id not readable")

// WriteOrderIDs returns the distinct, positive order ids a write names, read
// the way AnqiCMS binds the write, so that no write AnqiCMS applies can
// change an order the hook did not name. It returns an error (wrapping
// ErrNoOrderID) whenever it cannot name every order the write could change.
//
// json:FIELD — AnqiCMS reads API bodies with Iris's ReadJSON, which ignores
// Content-Type and runs encoding/json's Unmarshal into a struct. So the body
// is read as JSON whatever its Content-Type, with encoding/json's rules: the
// whole body must be valid JSON (else AnqiCMS rejects it); only top-level
// keys bind; keys match FIELD case-insensitively (Unicode simple folding, as
// bytes.EqualFold); escapes in keys and strings are decoded; the last
// matching key wins, except that a null (or, for a ",string" field, the
// string "null") leaves the earlier value in place.
//
// What the value may be depends on the Go type of AnqiCMS's field, and the
// communication module's request structs are not open source. AnqiCMS's
// open-source request structs declare ids as int64 or uint without
// ",string": a JSON integer binds, anything else (a string, 1.0, 1e3)
// fails the whole Unmarshal and AnqiCMS answers code -1. Unsure whether
// the closed module does the same, WriteOrderIDs also accepts a string
// holding a base-10 integer ("308", "\u0033" after unescaping, "+308",
// "0308"), as a ",string" tag or a string field parsed with strconv.ParseInt
// would: naming an order AnqiCMS then refuses costs one extra cache miss,
// missing one would serve a stale order.
//
// form:FIELD — an application/x-www-form-urlencoded or multipart/form-data
// body (the media type matched exactly and case-insensitively; anything else,
// e.g. "application/x-www-form-urlencodedx", is not a form and is an error),
// parsed as Go's net/http parses it (url.ParseQuery; multipart.Reader, file
// parts skipped). FIELD matches exactly. Every value of FIELD in the body and
// in the query string counts, because net/http's Form merges the two and
// servers differ on which repeat they take.
//
// query:FIELD — every value of FIELD in the query string.
//
// For form and query values an empty value names no order and is skipped; a
// value that is not a positive base-10 integer is an error.
func WriteOrderIDs(src IDSource, contentType []byte, query *fasthttp.Args, body []byte) ([]int64, error) {
	var (
		ids []int64
		err error
	)
	switch src.Kind {
	case "json":
		ids, err = jsonOrderID(src.Field, body)
	case "form":
		if ids, err = formOrderIDs(src.Field, contentType, body); err == nil {
			ids, err = argOrderIDs(ids, src.Field, query)
		}
	case "query":
		ids, err = argOrderIDs(nil, src.Field, query)
	default:
		err = fmt.Errorf("unknown id source %q (want json, form or query)", src.Kind)
	}
	if err == nil && len(ids) == 0 {
		err = errors.New("no id in the request")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s:%s: %w", ErrNoOrderID, src.Kind, src.Field, err)
	}
	return ids, nil
}

// skipValue consumes a JSON value without copying it.
type skipValue struct{}

func (*skipValue) UnmarshalJSON([]byte) error { return nil }

func jsonOrderID(field string, body []byte) ([]int64, error) {
	// json.Unmarshal validates the whole body before binding anything, so
	// trailing bytes after the object, a form body or a truncated one make
	// AnqiCMS reject the write. A Decoder would stop after the first value.
	if !json.Valid(body) {
		return nil, errors.New("the body is not JSON (AnqiCMS rejects such a write)")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		// null binds nothing, an array or a scalar fails the Unmarshal: in
		// neither case is an order named.
		return nil, errors.New("the body is not a JSON object")
	}
	var (
		last    json.RawMessage // the last non-null value of a matching key
		skipper skipValue
	)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if k, _ := t.(string); !strings.EqualFold(k, field) {
			if err := dec.Decode(&skipper); err != nil {
				return nil, err
			}
			continue
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if string(v) == "null" || string(v) == `"null"` {
			continue
		}
		last = v
	}
	if last == nil {
		return nil, nil
	}
	raw := []byte(last)
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		raw = []byte(s)
	}
	id, err := positiveID(raw)
	if err != nil {
		return nil, err
	}
	return []int64{id}, nil
}

// isMediaType reports whether the Content-Type ct names media type want,
// ignoring case, parameters and surrounding spaces.
func isMediaType(ct []byte, want string) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(string(bytes.TrimSpace(ct)), want)
}

// maxFormValue bounds one multipart value read in search of an id.
const maxFormValue = 1 << 10

func formOrderIDs(field string, contentType, body []byte) ([]int64, error) {
	switch {
	case isMediaType(contentType, "application/x-www-form-urlencoded"):
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			// net/http drops a pair it cannot decode (a bad escape, a ';'),
			// other servers may not: refuse to guess.
			return nil, fmt.Errorf("form body: %w", err)
		}
		var ids []int64
		for _, v := range vals[field] {
			if ids, err = addID(ids, []byte(v)); err != nil {
				return nil, err
			}
		}
		return ids, nil
	case isMediaType(contentType, "multipart/form-data"):
		_, params, err := mime.ParseMediaType(string(contentType))
		if err != nil || params["boundary"] == "" {
			return nil, fmt.Errorf("multipart body without a usable boundary: %q", contentType)
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		var ids []int64
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return ids, nil
			}
			if err != nil {
				return nil, fmt.Errorf("multipart body: %w", err)
			}
			// net/http's ReadForm files a part with a file name under
			// File, not Value: a form value it is not.
			if p.FormName() != field || p.FileName() != "" {
				continue
			}
			v, err := io.ReadAll(io.LimitReader(p, maxFormValue+1))
			if err != nil {
				return nil, fmt.Errorf("multipart body: %w", err)
			}
			if len(v) > maxFormValue {
				return nil, fmt.Errorf("value of %s is over %d bytes", field, maxFormValue)
			}
			if ids, err = addID(ids, v); err != nil {
				return nil, err
			}
		}
	}
	return nil, fmt.Errorf("Content-Type %q is not a form", contentType)
}

func argOrderIDs(ids []int64, field string, args *fasthttp.Args) ([]int64, error) {
	if args == nil {
		return ids, nil
	}
	for k, v := range args.All() {
		if string(k) != field {
			continue
		}
		var err error
		if ids, err = addID(ids, v); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// addID appends the id in v to ids unless v is empty or already there.
func addID(ids []int64, v []byte) ([]int64, error) {
	if len(v) == 0 {
		return ids, nil
	}
	id, err := positiveID(v)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(ids, id) {
		ids = append(ids, id)
	}
	return ids, nil
}

func positiveID(v []byte) (int64, error) {
	id, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		if len(v) > 32 {
			v = append(v[:32:32], "..."...)
		}
		return 0, fmt.Errorf("%q is not an order id", v)
	}
	if id <= 0 {
		return 0, fmt.Errorf("%d is not a positive order id", id)
	}
	return id, nil
}
