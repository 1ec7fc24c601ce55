package negotiate

import "testing"

func TestETagMatches_WeakComparisonOverAList(t *testing.T) {
	etag := []byte(`"abc"`)
	for h, want := range map[string]bool{
		`"abc"`: true, `W/"abc"`: true, `"x", "abc"`: true, `*`: true,
		`"abcd"`: false, `abc`: false, ``: false,
	} {
		if got := ETagMatches([]byte(h), etag); got != want {
			t.Errorf("If-None-Match %q: %v, want %v", h, got, want)
		}
	}
}

func TestAcceptsGzip_HonoursQZero(t *testing.T) {
	for h, want := range map[string]bool{
		"gzip": true, "br, gzip;q=0.5": true, "*": true, "GZIP": true,
		"gzip;q=0": false, "br": false, "": false, "identity": false,
	} {
		if got := AcceptsGzip([]byte(h)); got != want {
			t.Errorf("Accept-Encoding %q: %v, want %v", h, got, want)
		}
	}
}
