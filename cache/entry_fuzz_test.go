package cache

import (
	"bytes"
	"testing"
	"time"
)

func sameEntry(a, b *Entry) bool {
	return bytes.Equal(a.Body, b.Body) && bytes.Equal(a.Gzip, b.Gzip) && (a.Gzip == nil) == (b.Gzip == nil) &&
		bytes.Equal(a.ContentType, b.ContentType) && bytes.Equal(a.ETag, b.ETag) &&
		a.StoredAt == b.StoredAt && a.Negative == b.Negative && a.Gen == b.Gen
}

// FuzzEntryCodec feeds the Redis entry codec arbitrary bytes (what a
// corrupted value, another version or another program could leave under an
// entry's key): decoding never panics, and whatever decodes encodes and
// decodes again to the same entry. (It extends entry_test.go's
// FuzzUnmarshalEntry, which only checks the re-encoding decodes.) The second half builds entries from
// fuzzed fields and checks they survive the round trip exactly.
func FuzzEntryCodec(f *testing.F) {
	for _, e := range []*Entry{
		NewEntry([]byte(`{"code":0,"msg":"","data":{"id":1}}`), []byte("application/json; charset=utf-8"), false, time.Unix(1_700_000_000, 5)),
		NewEntry(bytes.Repeat([]byte(`{"content":"hello"},`), 40), []byte("application/json"), false, time.Unix(1, 0)),
		NewEntry([]byte(`{"code":1002,"msg":"no access"}`), nil, true, time.Unix(0, 0)),
		NewEntry(nil, nil, false, time.Unix(-1, 0)),
	} {
		e.Gen = 7
		b, err := e.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, e.Body, e.ContentType, e.Gzip, e.Gen, e.StoredAt, e.Negative)
	}
	f.Add([]byte{codecVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
		[]byte{}, []byte{}, []byte{}, uint64(0), int64(0), false)
	f.Add([]byte{codecVersion, 0xfe}, []byte("x"), []byte("y"), []byte("z"), ^uint64(0), int64(-1<<63), true)
	f.Fuzz(func(t *testing.T, b, body, ctype, gz []byte, gen uint64, storedAt int64, negative bool) {
		if e, err := UnmarshalEntry(b); err == nil {
			if e.Body == nil {
				t.Fatal("decoded entry has a nil body")
			}
			again, err := e.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			e2, err := UnmarshalEntry(again)
			if err != nil || !sameEntry(e, e2) {
				t.Fatalf("decoded entry does not survive a round trip: %v\n%+v\n%+v", err, e, e2)
			}
		}

		e := NewEntry(body, ctype, negative, time.Unix(0, storedAt))
		e.Gen = gen
		if len(gz) > 0 {
			e.Gzip = gz
		}
		enc, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalEntry(enc)
		if err != nil || !sameEntry(e, got) {
			t.Fatalf("entry does not survive a round trip: %v\n%+v\n%+v", err, e, got)
		}
		for n := range len(enc) {
			if _, err := UnmarshalEntry(enc[:n]); err == nil {
				t.Fatalf("truncated to %d of %d bytes: accepted", n, len(enc))
			}
		}
	})
}
