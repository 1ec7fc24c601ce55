package anqicms

import (
	"strings"
	"testing"
)

func TestMsgLanguage_SpellingsOfOneChoiceShareAName(t *testing.T) {
	for _, c := range []struct{ cookie, header, want string }{
		{"", "", ""},
		{"", "en-US,en;q=0.9", "|en-us,en"},
		{"", "EN-us, en;q=0.8", "|en-us,en"},
		{"", "en;q=0.5, zh-CN", "|zh-cn,en"},
		{"", "zh_CN", "|zh-cn"},
		{"", "fr;q=0.8, de;q=0.8, en", "|en,fr,de"},
		{"", " ,en,", "|en"},
		{"en", "", "en|"},
		{"en", "zh-CN", "en|zh-cn"},
		{"", "en;q=x", "|en;q=x"},
		{"", "en;level=1", "|en;level=1"},
		{"", "en;Q=1.5", "|en;q=1.5"},
	} {
		if got := string(MsgLanguage([]byte(c.cookie), []byte(c.header))); got != c.want {
			t.Errorf("cookie %q, Accept-Language %q: %q, want %q", c.cookie, c.header, got, c.want)
		}
	}
}

// Requests Iris could translate differently must not share a name: an
// unsupported first tag falls through to the next one.
func TestMsgLanguage_DifferentChoicesDiffer(t *testing.T) {
	pairs := [][2][2]string{
		{{"", "fr, en"}, {"", "fr, zh"}},
		{{"", "en"}, {"", ""}},
		{{"en", ""}, {"", "en"}},
		{{"xx", "en"}, {"xx", "zh"}},
		{{"", "en, zh"}, {"", "zh, en"}},
		{{"a|b", ""}, {"a", "b|"}},
	}
	for _, p := range pairs {
		a := string(MsgLanguage([]byte(p[0][0]), []byte(p[0][1])))
		b := string(MsgLanguage([]byte(p[1][0]), []byte(p[1][1])))
		if a == b {
			t.Errorf("%q and %q share the name %q", p[0], p[1], a)
		}
	}
}

func TestMsgLanguage_LongHeadersAreHashed(t *testing.T) {
	long := strings.Repeat("en-US,", 40)
	got := MsgLanguage(nil, []byte(long))
	if len(got) != 33 || got[0] != '#' {
		t.Fatalf("%q, want # and 32 hex digits", got)
	}
	if other := MsgLanguage(nil, []byte(long+"de")); string(other) == string(got) {
		t.Fatal("two long headers share a name")
	}
}

func TestMsgLanguage_DoesNotAllocate(t *testing.T) {
	var buf [maxLangKey]byte
	cookie, header := []byte("en"), []byte("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5")
	if n := testing.AllocsPerRun(100, func() { AppendMsgLanguage(buf[:0], cookie, header) }); n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}
