package cache

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Key names one cached answer: an order, and a digest of everything else
// AnqiCMS's answer depends on (site, site_id, language, identity). Keying by
// a fixed-size digest lets the hit path look up L1 without allocating.
type Key struct {
	Order int64
	Sum   [32]byte
}

// KeyParts is what, besides the order id, makes two detail requests the same
// request in AnqiCMS's eyes.
type KeyParts struct {
	Site     []byte // X-Host else Host, lower case, no port
	SiteID   []byte // ?site_id=
	Lang     []byte // lang cookie
	Identity byte   // anqicms.IdentityKind
	ID       []byte // user id or token fingerprint
}

// MakeKey digests parts. Every part is length-prefixed so that no two
// different tuples can produce the same byte string.
//
// The digest of recent parts is remembered: a user who polls sends the
// same parts each time, and SHA-256 was the largest single cost of
// deriving a key on an L1 hit. A remembered digest is used only when the
// encoded parts equal the remembered ones byte for byte, so MakeKey
// returns exactly what SHA-256 would; the 64-bit hash only picks the slot.
func MakeKey(order int64, p KeyParts) Key {
	var stack [256]byte
	b := encodeParts(stack[:0], p)
	slot := &keyDigests[keyDigestSlot(b)]
	if d := slot.Load(); d != nil && bytes.Equal(d.parts, b) {
		return Key{Order: order, Sum: d.sum}
	}
	sum := sha256.Sum256(b)
	if len(b) <= keyDigestMaxParts {
		slot.Store(&keyDigest{parts: bytes.Clone(b), sum: sum})
	}
	return Key{Order: order, Sum: sum}
}

// encodeParts appends the byte string MakeKey digests.
func encodeParts(b []byte, p KeyParts) []byte {
	b = appendPart(b, p.Site)
	b = appendPart(b, p.SiteID)
	b = appendPart(b, p.Lang)
	b = append(b, p.Identity)
	return appendPart(b, p.ID)
}

func keyDigestSlot(encoded []byte) uint64 { return maphash.Bytes(keySeed, encoded) % keyDigestSlots }

// keyDigest is one remembered digest of MakeKey; immutable once stored.
type keyDigest struct {
	parts []byte
	sum   [32]byte
}

const (
	keyDigestSlots    = 8192
	keyDigestMaxParts = 256 // longer parts are digested each time
)

var (
	keySeed    = maphash.MakeSeed()
	keyDigests [keyDigestSlots]atomic.Pointer[keyDigest]
)

func appendPart(b, part []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(part)))
	return append(b, part...)
}

// Entry is one stored answer. It is immutable once built: the hit path hands
// its byte slices straight to fasthttp.
type Entry struct {
	Body        []byte
	Gzip        []byte // nil when compressing did not pay off
	ContentType []byte
	ETag        []byte // strong, quoted
	StoredAt    int64  // unix nanoseconds when AnqiCMS answered
	// Negative marks a code != 0 answer cached for cache.negative_ttl.
	Negative bool
	// Gen is the Redis generation of the order the entry was filled under.
	Gen uint64
}

// NewEntry copies body and contentType (the caller's buffers are reused by
// fasthttp) and computes the ETag and the gzip variant once, at fill time.
//
// Every field is allocated at exactly its length. L1 holds 100,000s of
// entries: the gzip copy used to keep the spare capacity of the
// bytes.Buffer it was written into (hundreds of bytes per entry), and one
// shared allocation for all fields lands in a coarser size class than three
// small ones (a 3.5 KB allocation is rounded up to 4 KB), so separate exact
// copies are the cheapest layout (BenchmarkMemory_L1BytesPerOrder).
func NewEntry(body, contentType []byte, negative bool, now time.Time) *Entry {
	e := &Entry{
		Body:        bytes.Clone(body),
		ContentType: sharedContentType(contentType),
		StoredAt:    now.UnixNano(),
		Negative:    negative,
	}
	if e.Body == nil {
		e.Body = []byte{}
	}
	sum := sha256.Sum256(body)
	e.ETag = make([]byte, 0, 34)
	e.ETag = append(e.ETag, '"')
	e.ETag = hex.AppendEncode(e.ETag, sum[:16])
	e.ETag = append(e.ETag, '"')
	if len(body) >= gzipMinBody {
		zb := gzipBufs.Get().(*bytes.Buffer)
		zb.Reset()
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(zb)
		zw.Write(body)
		zw.Close()
		zw.Reset(nil)
		gzipWriters.Put(zw)
		if gzipPays(zb.Len(), len(body)) {
			e.Gzip = bytes.Clone(zb.Bytes())
		}
		putGzipBuf(zb)
	}
	return e
}

// gzipMinBody is the smallest body that gets a gzip copy. Below it the
// whole answer (≈250 B of headers + body) fits one 1,460-byte TCP segment
// either way, so the copy saves the client no packet and no round trip,
// while L1 and Redis hold it for every order: for the fake's 0.9 KB order
// without messages the copy was 527 B, +60% on the stored bytes (numbers in
// bench/README.md, "Memory per order").
const gzipMinBody = 1024

// gzipPays reports whether a compressed copy of zlen bytes is worth keeping
// beside a body of n bytes: it must save at least an eighth.
func gzipPays(zlen, n int) bool { return zlen <= n-n/8 }

// sharedContentType returns one shared copy of the content types AnqiCMS
// answers with, and a private copy of anything else. Entries are immutable,
// so sharing is safe, and it saves an allocation per entry.
func sharedContentType(ct []byte) []byte {
	for _, c := range commonContentTypes {
		if bytes.Equal(ct, c) {
			return c
		}
	}
	return bytes.Clone(ct)
}

var commonContentTypes = [][]byte{
	[]byte("application/json; charset=utf-8"),
	[]byte("application/json"),
}

// gzipWriters reuses compressors: a gzip.Writer holds about 800 KB of
// state, which would otherwise be allocated on every fill.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestCompression)
	return zw
}}

// gzipBufs holds the compressed output until it is copied into the entry.
var gzipBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putGzipBuf returns zb to the pool unless one huge body grew it: the pool
// would keep that memory for good.
func putGzipBuf(zb *bytes.Buffer) {
	if zb.Cap() <= 1<<20 {
		gzipBufs.Put(zb)
	}
}

// Age is how long ago AnqiCMS produced the answer.
func (e *Entry) Age(now int64) time.Duration { return time.Duration(now - e.StoredAt) }

// Size approximates the memory an entry holds, for L1's byte bound:
// capacities (the allocator's size class, which the copies report), the
// content type as if it were not shared, and the struct itself (120 bytes,
// allocated as 128). BenchmarkMemory_L1BytesPerOrder checks it against the
// heap.
func (e *Entry) Size() int {
	return cap(e.Body) + cap(e.Gzip) + len(e.ContentType) + cap(e.ETag) + 128
}

const codecVersion = 1

// MarshalBinary encodes the entry for Redis: a version byte, fixed fields,
// then length-prefixed byte strings. Compact, and free of JSON-in-JSON.
func (e *Entry) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 32+len(e.Body)+len(e.Gzip)+len(e.ContentType)+len(e.ETag))
	b = append(b, codecVersion)
	var flags byte
	if e.Negative {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, e.Gen)
	b = binary.BigEndian.AppendUint64(b, uint64(e.StoredAt))
	for _, f := range [][]byte{e.ContentType, e.ETag, e.Body, e.Gzip} {
		b = appendPart(b, f)
	}
	return b, nil
}

var errCodec = errors.New("malformed cache entry")

// UnmarshalEntry decodes what MarshalBinary produced. A short or unknown
// encoding is an error (treated as a miss), never a panic.
func UnmarshalEntry(b []byte) (*Entry, error) {
	if len(b) < 18 || b[0] != codecVersion {
		return nil, fmt.Errorf("%w: version or length", errCodec)
	}
	e := &Entry{Negative: b[1]&1 != 0}
	e.Gen = binary.BigEndian.Uint64(b[2:])
	e.StoredAt = int64(binary.BigEndian.Uint64(b[10:]))
	rest := b[18:]
	for _, f := range []*[]byte{&e.ContentType, &e.ETag, &e.Body, &e.Gzip} {
		n, w := binary.Uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < n {
			return nil, fmt.Errorf("%w: truncated field", errCodec)
		}
		*f = rest[w : w+int(n) : w+int(n)]
		rest = rest[w+int(n):]
	}
	if len(e.Gzip) == 0 {
		e.Gzip = nil
	}
	return e, nil
}
