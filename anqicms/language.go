package anqicms

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// maxLangKey bounds what AppendMsgLanguage appends; longer forms are
// replaced by a hash of themselves.
const maxLangKey = 96

// maxLangTags is how many Accept-Language tags are kept in order; a header
// with more is hashed whole.
const maxLangTags = 16

// MsgLanguage returns a short, stable name for the language AnqiCMS would
// translate an error's msg into, for keying negative entries. See
// AppendMsgLanguage.
func MsgLanguage(langCookie, acceptLanguage []byte) []byte {
	return AppendMsgLanguage(nil, langCookie, acceptLanguage)
}

// AppendMsgLanguage appends to dst a name for the language AnqiCMS would
// pick for msg: its lang cookie, then Accept-Language (Iris's i18n, which
// falls through an unknown cookie to the header, and matches the header's
// tags, best first, against the languages the install has loaded, else the
// default, zh-CN). Which languages an install has loaded is not known here,
// so the name is not the language picked but everything the pick depends
// on, normalised so that two requests AnqiCMS could answer in different
// languages never get the same name, while the spellings one client uses
// do:
//
//   - the lang cookie, as sent ("|" and "%" escaped as %7C and %25), then
//     "|";
//   - the Accept-Language tags ordered by their q weight, best first (ties
//     keep their order, as golang.org/x/text's ParseAcceptLanguage sorts
//     them), lower case, "_" read as "-", joined by ",", weights dropped:
//     "en-US,en;q=0.9" and "EN-us, en;q=0.8" are both "|en-us,en";
//   - a header it cannot read that way (a bad q, more than 16 tags) is kept
//     whole, lower case, spaces removed;
//   - a name over 96 bytes is replaced by "#" and 32 hex digits of its
//     SHA-256.
//
// No cookie and no header give "". It does not allocate when dst has room
// for 96 bytes.
func AppendMsgLanguage(dst, langCookie, acceptLanguage []byte) []byte {
	start := len(dst)
	if len(langCookie) == 0 && len(acceptLanguage) == 0 {
		return dst
	}
	for _, c := range langCookie {
		switch c {
		case '|':
			dst = append(dst, "%7C"...)
		case '%':
			dst = append(dst, "%25"...)
		default:
			dst = append(dst, c)
		}
	}
	dst = append(dst, '|')
	var (
		tags [maxLangTags]struct {
			from, to int
			q        float64
		}
		n  int
		ok = true
	)
	for rest := acceptLanguage; len(rest) > 0 && ok; {
		part := rest
		base := len(acceptLanguage) - len(rest)
		if i := indexByte(rest, ','); i >= 0 {
			part, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		tag, params := part, []byte(nil)
		if i := indexByte(part, ';'); i >= 0 {
			tag, params = part[:i], part[i+1:]
		}
		from, to := trimOWS(tag)
		if from == to {
			if len(params) > 0 {
				ok = false // a weight without a tag
			}
			continue
		}
		q := 1.0
		if len(params) > 0 {
			pf, pt := trimOWS(params)
			p := params[pf:pt]
			if len(p) < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' {
				ok = false
				continue
			}
			v, err := strconv.ParseFloat(string(p[2:]), 64) // no allocation: the conversion does not escape
			if err != nil || v < 0 || v > 1 {
				ok = false
				continue
			}
			q = v
		}
		if n == maxLangTags {
			ok = false
			continue
		}
		// Insert after every tag of the same or higher weight: a stable
		// sort, best first.
		i := n
		for i > 0 && tags[i-1].q < q {
			tags[i] = tags[i-1]
			i--
		}
		tags[i].from, tags[i].to, tags[i].q = base+from, base+to, q
		n++
	}
	if ok {
		for i := range n {
			if i > 0 {
				dst = append(dst, ',')
			}
			for _, c := range acceptLanguage[tags[i].from:tags[i].to] {
				dst = append(dst, lowerTagByte(c))
			}
		}
	} else {
		for _, c := range acceptLanguage {
			if c != ' ' && c != '\t' {
				dst = append(dst, lowerTagByte(c))
			}
		}
	}
	if len(dst)-start > maxLangKey {
		sum := sha256.Sum256(dst[start:])
		dst = append(dst[:start], '#')
		dst = hex.AppendEncode(dst, sum[:16])
	}
	return dst
}

func lowerTagByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

func trimOWS(b []byte) (from, to int) {
	from, to = 0, len(b)
	for from < to && (b[from] == ' ' || b[from] == '\t') {
		from++
	}
	for to > from && (b[to-1] == ' ' || b[to-1] == '\t') {
		to--
	}
	return from, to
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
