// Package bodyio holds the bodies pass-through streams: a client's upload
// on its way to AnqiCMS (bounded, and remembering whose fault a failure
// was) and AnqiCMS's answer on its way back (returned to its pool once
// sent).
package bodyio

import (
	"errors"
	"io"

	"github.com/valyala/fasthttp"
)

// ErrTooLarge fails an upload once it passes its bound.
var ErrTooLarge = errors.New("request body exceeds server.max_request_body")

// Upload is a client's streamed request body. It fails once the body passes
// max, so a chunked upload (no declared length) cannot push more than
// server.max_request_body to AnqiCMS: the upstream request breaks off
// unfinished and the client gets 413. It also remembers the first error
// reading the client's body, so a failed upstream call can be told apart
// from a request body that broke off or was malformed (the client's fault).
type Upload struct {
	r    io.Reader
	left int64 // < 0 without a bound
	err  error
}

// NewUpload wraps r; max <= 0 means no bound.
func NewUpload(r io.Reader, max int64) *Upload {
	if max <= 0 {
		max = -1
	}
	return &Upload{r: r, left: max}
}

// ClientErr is the first error reading the client's body (not io.EOF, not
// ErrTooLarge), or nil.
func (u *Upload) ClientErr() error { return u.err }

func (u *Upload) Read(p []byte) (int, error) {
	if u.left == -1 {
		return u.read(p)
	}
	if u.left < 0 {
		return 0, ErrTooLarge
	}
	// Read one byte past the bound to tell "exactly the bound" from "over".
	if int64(len(p)) > u.left+1 {
		p = p[:u.left+1]
	}
	n, err := u.read(p)
	u.left -= int64(n)
	if u.left < 0 {
		return 0, ErrTooLarge
	}
	return n, err
}

func (u *Upload) read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if err != nil && err != io.EOF && u.err == nil {
		u.err = err
	}
	return n, err
}

// Answer hands an upstream body to the client as it arrives and returns
// the upstream response to its pool once fasthttp has written it.
type Answer struct {
	resp *fasthttp.Response
	r    io.Reader
}

// NewAnswer streams resp's body (resp.BodyStream() must be non-nil).
func NewAnswer(resp *fasthttp.Response) *Answer { return &Answer{resp: resp, r: resp.BodyStream()} }

func (a *Answer) Read(p []byte) (int, error) { return a.r.Read(p) }

// Close releases the upstream response.
func (a *Answer) Close() error {
	err := a.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(a.resp)
	return err
}
