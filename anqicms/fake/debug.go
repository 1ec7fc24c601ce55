package fake

// Debug endpoints for proxy tests. They are not part of AnqiCMS.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Echo is the answer of /__echo/...: what the fake received.
type Echo struct {
	Method     string      `json:"method"`
	Path       string      `json:"path"`
	RequestURI string      `json:"request_uri"` // as sent, to check path escaping
	RawQuery   string      `json:"raw_query"`
	Host       string      `json:"host"`
	Headers    http.Header `json:"headers"`
	BodyLen    int64       `json:"body_len"`
	BodySHA256 string      `json:"body_sha256"`
}

// serveEcho describes the request. The body is hashed as it streams in, so
// large uploads cost no memory.
func serveEcho(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	b, _ := json.Marshal(Echo{
		Method: r.Method, Path: r.URL.Path, RequestURI: r.RequestURI, RawQuery: r.URL.RawQuery,
		Host: r.Host, Headers: r.Header, BodyLen: n, BodySHA256: hex.EncodeToString(h.Sum(nil)),
	})
	// Headers a proxy must pass through to the client.
	w.Header().Add("Set-Cookie", "echo=1; Path=/")
	w.Header().Set("Update-Token", "echo-token")
	w.Header().Set("Content-Type", jsonType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// serveRaw answers the request body byte for byte. It reads the whole body
// first: a full-duplex echo deadlocks clients that send before reading.
func serveRaw(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	} else {
		w.Header()["Content-Type"] = nil // no sniffing
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func serveStatus(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/__status/"))
	if err != nil || code < 200 || code > 599 {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d %s\n", code, http.StatusText(code)) // dropped for 204 and 304
}

// BigBody returns the first n bytes that /__big serves, for comparison.
func BigBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = bigByte(i)
	}
	return b
}

func bigByte(i int) byte { return "abcdefghijklmnopqrstuvwxyz0123456789\n"[i%37] }

var bigBlock = BigBody(37 * 1024)

func serveBig(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want ?n=BYTES", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	// bigBlock is a whole number of periods, so repeating it continues the pattern.
	for n > 0 {
		k := min(n, int64(len(bigBlock)))
		if _, err := w.Write(bigBlock[:k]); err != nil {
			return
		}
		n -= k
	}
}

func (s *Server) serveSleep(w http.ResponseWriter, r *http.Request) {
	d, err := time.ParseDuration(r.URL.Query().Get("d"))
	if err != nil || d < 0 {
		http.Error(w, "want ?d=DURATION", http.StatusBadRequest)
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	wait(s, r, t.C)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "slept %s\n", d)
}
