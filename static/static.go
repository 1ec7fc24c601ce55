// Package static answers requests for files in AnqiCMS's public/ directory
// from disk, the rule AnqiCMS's nginx guides use (try_files $uri
// @anqicms): a GET or HEAD whose path names a regular file under
// [static] root is served here; anything else — a directory, a missing
// file, another method — is left to the caller, which forwards it to
// AnqiCMS. Serving is fasthttp's FS: Last-Modified and If-Modified-Since,
// ETag, byte ranges, and a .br or .gz file beside the original for clients
// that accept it (or one compressed in memory when there is none). Nothing
// is ever written to root.
//
// What is never served from disk (it is forwarded instead, so AnqiCMS
// answers exactly as it would without anqi-edge):
//   - a raw path with a "." or ".." segment, a backslash, or a percent-encoded
//     '.', '/', '\' or NUL (%2e %2f %5c %00): traversal attempts and paths
//     whose meaning depends on who decodes them;
//   - a segment starting with '.' (.git, .env, .user.ini) other than a
//     leading /.well-known/ (ACME challenges, security.txt);
//   - a symbolic link that leads outside root: files are opened through
//     os.Root, which refuses such links. Links that stay inside root work.
package static

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Options configure a Handler.
type Options struct {
	// Root is static.root, AnqiCMS's public/ directory.
	Root string
	// CacheDuration is how long an opened file (and a small file's bytes,
	// and an in-memory compressed copy) is reused before the file is looked
	// at again; default fasthttp.FSHandlerCacheDuration (10s). A file
	// replaced on disk is served new within this bound.
	CacheDuration time.Duration
}

// Handler serves files under one root. Close it when done.
type Handler struct {
	dir   string   // absolute root, for the cheap existence check
	root  *os.Root // confines every open to dir
	serve fasthttp.RequestHandler
	stop  chan struct{}
	once  sync.Once
}

// New opens root. A missing or unreadable root is an error naming
// static.root; an empty Root is also an error (callers leave static files
// off then instead of calling New).
func New(o Options) (*Handler, error) {
	if o.Root == "" {
		return nil, errors.New("static.root is empty (static files off)")
	}
	dir, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, fmt.Errorf("static.root %q: %w", o.Root, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("static.root %q: %w", o.Root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("static.root %q: not a directory", o.Root)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("static.root %q: %w", o.Root, err)
	}
	h := &Handler{dir: dir, root: root, stop: make(chan struct{})}
	fs := &fasthttp.FS{
		// An fs.FS, not FS.Root: fasthttp then never writes compressed
		// copies (or deletes stale ones) in AnqiCMS's directory; copies it
		// makes stay in memory for CacheDuration.
		FS:              root.FS(),
		AllowEmptyRoot:  true,
		AcceptByteRange: true,
		GenerateETag:    true,
		Compress:        true,
		CompressBrotli:  true,
		// Pre-compressed files beside the original, as nginx gzip_static
		// and brotli_static find them. All three must be distinct or
		// fasthttp falls back to its own suffixes.
		CompressedFileSuffixes: map[string]string{"gzip": ".gz", "br": ".br", "zstd": ".zst"},
		CacheDuration:          o.CacheDuration,
		CleanStop:              h.stop,
		// IndexNames empty and GenerateIndexPages false: no listings.
		// Directories never reach FS anyway (Serve declines them).
	}
	h.serve = fs.NewRequestHandler()
	return h, nil
}

// Root is the absolute directory served.
func (h *Handler) Root() string { return h.dir }

// Close stops FS's cache cleaner and closes the root.
func (h *Handler) Close() error {
	var err error
	h.once.Do(func() {
		close(h.stop)
		err = h.root.Close()
	})
	return err
}

// Serve answers ctx from disk when its path is a regular file under root
// and reports true; otherwise it leaves ctx untouched and reports false, and
// the caller forwards the request. A file removed between the check and
// the read is answered 404 by FS.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	if !cleanRawPath(ctx.URI().PathOriginal()) {
		return false
	}
	p := ctx.Path() // decoded and normalised by fasthttp
	if !servablePath(p) {
		return false
	}
	// Cheap check first: one stat, and most requests (API calls, pages)
	// stop here with ENOENT.
	fi, err := os.Stat(h.dir + string(p))
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	// Then the confined check: the plain stat above follows symbolic links
	// wherever they lead; os.Root refuses those that leave root. FS opens
	// through the same os.Root, so what is checked is what is served.
	if fi, err = h.root.Stat(string(p[1:])); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	h.serve(ctx)
	return true
}

// cleanRawPath reports whether the path as the client sent it is free of
// traversal and of encodings that different decoders read differently.
func cleanRawPath(raw []byte) bool {
	if len(raw) == 0 || raw[0] != '/' || bytes.IndexByte(raw, '\\') >= 0 || bytes.IndexByte(raw, 0) >= 0 {
		return false
	}
	for i := 0; i+2 < len(raw); i++ {
		if raw[i] != '%' {
			continue
		}
		switch {
		case raw[i+1] == '2' && (raw[i+2] == 'e' || raw[i+2] == 'E' || raw[i+2] == 'f' || raw[i+2] == 'F'),
			raw[i+1] == '5' && (raw[i+2] == 'c' || raw[i+2] == 'C'),
			raw[i+1] == '0' && raw[i+2] == '0':
			return false
		}
	}
	for seg := range bytes.SplitSeq(raw[1:], []byte{'/'}) {
		if q := bytes.IndexByte(seg, '?'); q >= 0 {
			seg = seg[:q]
		}
		if string(seg) == "." || string(seg) == ".." {
			return false
		}
	}
	return true
}

var wellKnown = []byte("/.well-known/")

// servablePath reports whether the decoded path may name a file to serve:
// absolute, not a directory (trailing slash), no NUL, and no segment
// starting with '.' except a leading /.well-known/.
func servablePath(p []byte) bool {
	if len(p) < 2 || p[0] != '/' || p[len(p)-1] == '/' || bytes.IndexByte(p, 0) >= 0 {
		return false
	}
	rest := p
	if bytes.HasPrefix(p, wellKnown) {
		rest = p[len(wellKnown)-1:]
	}
	for i := 0; i+1 < len(rest); i++ {
		if rest[i] == '/' && rest[i+1] == '.' {
			return false
		}
	}
	return true
}
