package anqicms

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/maypok86/otter/v2"
)

// IdentityKind says how a request's identity was established.
type IdentityKind byte

const (
	// Anonymous: no token, or one AnqiCMS would not accept. Such requests
	// bypass the cache entirely.
	Anonymous IdentityKind = 0
	// User: a JWT verified with the site's TokenSecret; ID is the userId claim.
	User IdentityKind = 'u'
	// Fingerprint: no secret known for the site; ID is sha256(token). The
	// upstream authorised that exact token, so sharing within it is safe.
	Fingerprint IdentityKind = 'f'
)

// Identity is who a request comes from, as far as the cache key goes.
// ID is immutable and shared between requests: never write to it.
type Identity struct {
	Kind IdentityKind
	ID   []byte
	// Expiry is the token's "t" claim in unix seconds (0 if unknown). It is
	// read in both modes so near-expiry tokens can bypass the cache and
	// receive AnqiCMS's Update-Token.
	Expiry int64
}

// Identifier maps a request's token to an Identity exactly as AnqiCMS would
// judge it. Verdicts are memoised by sha256(token), so a cache hit costs one
// hash and one lookup: no JWT parsing, no allocation.
type Identifier struct {
	def   *verifier            // auth.token_secret; nil = fingerprint mode
	sites map[string]*verifier // auth.site_secrets by host
	fp    *verifier            // fingerprint mode: reads "t" only
}

// verifier memoises verdicts for one secret (or for fingerprint mode when
// secret is nil).
type verifier struct {
	secret   []byte
	verdicts *otter.Cache[uint64, *verdict]
}

type verdict struct {
	token  []byte // the token judged; the memo is keyed by a 64-bit hash of it
	kind   IdentityKind
	id     []byte
	expiry int64
}

// NewIdentifier builds an Identifier. secret is the site TokenSecret
// (AnqiCMS signs user tokens with secret+"-user-token"); siteSecrets adds
// per-host secrets for multi-site installs. maxTokens bounds each memo's
// entries; each memo is also bounded to memoBytes, so long junk tokens
// (every one is remembered, valid or not) cannot grow it past that.
func NewIdentifier(secret string, siteSecrets map[string]string, maxTokens int) (*Identifier, error) {
	if maxTokens <= 0 {
		maxTokens = 100_000
	}
	mk := func(s string, sign bool) (*verifier, error) {
		c, err := otter.New(&otter.Options[uint64, *verdict]{
			MaximumWeight: uint64(min(maxTokens*memoEntryWeight, memoBytes)),
			Weigher: func(_ uint64, v *verdict) uint32 {
				return uint32(len(v.token) + len(v.id) + memoOverhead)
			},
			ExpiryCalculator: otter.ExpiryWriting[uint64, *verdict](time.Hour),
		})
		if err != nil {
			return nil, fmt.Errorf("token memo: %w", err)
		}
		v := &verifier{verdicts: c}
		if sign {
			v.secret = []byte(s + "-user-token")
		}
		return v, nil
	}
	x := &Identifier{sites: map[string]*verifier{}}
	var err error
	if x.fp, err = mk("", false); err != nil {
		return nil, err
	}
	if secret != "" {
		if x.def, err = mk(secret, true); err != nil {
			return nil, err
		}
	}
	for host, s := range siteSecrets {
		// Requests are matched by SiteHost (lower case, no port); a key
		// written "Shop.Example.com:443" must still match them.
		h := string(SiteHost(nil, []byte(host), nil))
		if x.sites[h], err = mk(s, true); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// Close stops the background clean-up goroutines of the verdict memos (at
// shutdown). The Identifier stays usable.
func (x *Identifier) Close() {
	x.fp.verdicts.StopAllGoroutines()
	if x.def != nil {
		x.def.verdicts.StopAllGoroutines()
	}
	for _, v := range x.sites {
		v.verdicts.StopAllGoroutines()
	}
}

// Verifies reports whether tokens for site are verified with a secret
// (identity u:<userId>) rather than fingerprinted.
func (x *Identifier) Verifies(site []byte) bool {
	return x.verifierFor(site).secret != nil
}

func (x *Identifier) verifierFor(site []byte) *verifier {
	if v, ok := x.sites[string(site)]; ok {
		return v
	}
	if x.def != nil {
		return x.def
	}
	return x.fp
}

// Identify returns the identity of token for site at time now. An empty
// token is anonymous.
func (x *Identifier) Identify(site, token []byte, now time.Time) Identity {
	if len(token) == 0 {
		return Identity{}
	}
	v := x.verifierFor(site)
	// A seeded 64-bit hash finds the verdict; comparing the stored token
	// rules out a collision. SHA-256 runs only when a token is first seen.
	h := maphash.Bytes(memoSeed, token)
	vd, ok := v.verdicts.GetIfPresent(h)
	if !ok || !bytes.Equal(vd.token, token) {
		vd = v.judge(token, sha256.Sum256(token))
		vd.token = bytes.Clone(token)
		v.verdicts.Set(h, vd)
	}
	if vd.kind == Anonymous {
		return Identity{}
	}
	// AnqiCMS treats a token past its "t" as no token at all.
	if vd.expiry != 0 && vd.expiry < now.Unix() {
		return Identity{}
	}
	return Identity{Kind: vd.kind, ID: vd.id, Expiry: vd.expiry}
}

const (
	memoBytes       = 32 << 20 // per memo
	memoOverhead    = 96       // verdict, key and otter node, roughly
	memoEntryWeight = 256 + memoOverhead
)

// memoSeed keys the verdict memos; random per process.
var memoSeed = maphash.MakeSeed()

var hmacMethods = []string{"HS256", "HS384", "HS512"}

// judge is the slow path, run once per distinct token.
func (v *verifier) judge(token []byte, sum [32]byte) *verdict {
	if v.secret == nil {
		// Fingerprint mode: the signature cannot be checked, but the payload
		// still tells when AnqiCMS will start renewing the token. A token
		// without a string userId and a readable "t" is one AnqiCMS treats
		// as no token at all, so it is anonymous here too (and bypasses).
		exp, ok := unverifiedExpiry(token)
		if !ok {
			return &verdict{kind: Anonymous}
		}
		return &verdict{kind: Fingerprint, id: sum[:], expiry: exp}
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(string(token), claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
		}
		return v.secret, nil
	}, jwt.WithValidMethods(hmacMethods))
	if err != nil {
		return &verdict{kind: Anonymous}
	}
	uid, ok := claims["userId"].(string)
	if !ok || uid == "" {
		return &verdict{kind: Anonymous}
	}
	ts, _ := claims["t"].(string)
	exp, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		// AnqiCMS cannot tell when such a token expires and rejects it.
		return &verdict{kind: Anonymous}
	}
	return &verdict{kind: User, id: []byte(uid), expiry: exp}
}

// unverifiedExpiry reads the "t" claim from a JWT's payload without
// checking the signature; ok is false unless the payload also carries a
// non-empty string userId. Only used to decide whether to bypass the cache.
func unverifiedExpiry(token []byte) (int64, bool) {
	first, rest, ok := cut(token, '.')
	if !ok || len(first) == 0 {
		return 0, false
	}
	payload, _, ok := cut(rest, '.')
	if !ok {
		return 0, false
	}
	raw := make([]byte, base64.RawURLEncoding.DecodedLen(len(payload)))
	n, err := base64.RawURLEncoding.Decode(raw, payload)
	if err != nil {
		return 0, false
	}
	var c struct {
		UserID any `json:"userId"`
		T      any `json:"t"`
	}
	if json.Unmarshal(raw[:n], &c) != nil {
		return 0, false
	}
	if uid, ok := c.UserID.(string); !ok || uid == "" {
		return 0, false
	}
	switch t := c.T.(type) {
	case string:
		exp, err := strconv.ParseInt(t, 10, 64)
		return exp, err == nil
	case float64:
		return int64(t), true
	}
	return 0, false
}

func cut(b []byte, sep byte) (before, after []byte, found bool) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}
