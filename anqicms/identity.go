package anqicms

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"sync/atomic"
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
// ID and User are immutable and shared between requests: never write to
// them.
type Identity struct {
	Kind IdentityKind
	ID   []byte
	// User is the token's userId claim. With a secret it is verified (and
	// equals ID); in fingerprint mode it is read without checking the
	// signature, so it is only a claim: good for counting a user's
	// watchers, never for choosing what to serve. AnqiCMS's user ids are
	// per site.
	User []byte
	// Expiry is the last unix second at which AnqiCMS still accepts the
	// token: its "t" claim, or the second before its "exp" claim if that
	// comes first (0 if unknown). It is read in both modes so near-expiry
	// tokens can bypass the cache and receive AnqiCMS's Update-Token.
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
	// front is read before verdicts: a direct-mapped table by the same
	// hash, holding verdicts that name someone. A token seen again (every
	// poll of a logged-in user) is then one atomic load and a compare,
	// where the memo's lookup also reads the clock and records the read
	// for its eviction policy, writes that the cores of a busy replica
	// pass back and forth. A slot is written only when it changes hands.
	// It holds at most frontSlots verdicts of tokens up to frontMaxToken
	// bytes beyond the memo's own bound.
	front [frontSlots]atomic.Pointer[verdict]
}

const (
	frontSlots    = 1024
	frontMaxToken = 1024
)

// verdict is what one token proves, whenever it is presented: the time
// checks are left to Identify, so a memoised verdict turns anonymous on
// time and a token presented before its nbf is accepted once nbf passes.
type verdict struct {
	token     []byte // the token judged; the memo is keyed by a 64-bit hash of it
	kind      IdentityKind
	id        []byte
	user      []byte
	expiry    int64 // last accepted unix second (t, or exp-1 if earlier)
	notBefore int64 // first accepted unix second (nbf); 0 = none
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
				return uint32(len(v.token) + len(v.id) + len(v.user) + memoOverhead)
			},
			ExpiryCalculator: otter.ExpiryWriting[uint64, *verdict](time.Hour),
			// Maintenance runs on the caller's goroutine rather than on one
			// started for each pass (cheaper; the memo has no OnDeletion,
			// Compute or refresh to run under its locks; adding one means
			// going back to otter's default executor).
			Executor: func(fn func()) { fn() },
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
	// Requests are matched by SiteHost: the host as AnqiCMS matches it,
	// case-sensitively, without the port. So a key is matched as the
	// operator wrote it, minus a port ("Shop.Example.com:443" matches
	// requests for "Shop.Example.com" on any port, not "shop.example.com",
	// which AnqiCMS treats as another site). Checked before any memo starts
	// its goroutine.
	hosts := make(map[string]string, len(siteSecrets))
	for host, s := range siteSecrets {
		h := string(SiteHost(nil, []byte(host), nil))
		if _, dup := hosts[h]; dup {
			return nil, fmt.Errorf("auth.site_secrets: two keys name host %q (ports are ignored)", h)
		}
		hosts[h] = s
	}
	x := &Identifier{sites: map[string]*verifier{}}
	var err error
	if x.fp, err = mk("", false); err != nil {
		return nil, err
	}
	if secret != "" {
		if x.def, err = mk(secret, true); err != nil {
			x.Close()
			return nil, err
		}
	}
	for h, s := range hosts {
		v, err := mk(s, true)
		if err != nil {
			x.Close()
			return nil, err
		}
		x.sites[h] = v
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
	slot := &v.front[h%frontSlots]
	vd := slot.Load()
	if vd == nil || !bytes.Equal(vd.token, token) {
		var ok bool
		vd, ok = v.verdicts.GetIfPresent(h)
		if !ok || !bytes.Equal(vd.token, token) {
			vd = v.judge(token, sha256.Sum256(token))
			vd.token = bytes.Clone(token)
			v.verdicts.Set(h, vd)
		}
		// Verdicts are immutable and depend on the token alone, so a
		// slot may keep one after the memo has let it go.
		if vd.kind != Anonymous && len(token) <= frontMaxToken {
			slot.Store(vd)
		}
	}
	if vd.kind == Anonymous {
		return Identity{}
	}
	// AnqiCMS treats a token past its "t" or "exp", or before its "nbf",
	// as no token at all.
	if sec := now.Unix(); vd.expiry < sec || sec < vd.notBefore {
		return Identity{}
	}
	return Identity{Kind: vd.kind, ID: vd.id, User: vd.user, Expiry: vd.expiry}
}

const (
	memoBytes       = 32 << 20 // per memo
	memoOverhead    = 96       // verdict, key and otter node, roughly
	memoEntryWeight = 256 + memoOverhead
)

// memoSeed keys the verdict memos; random per process.
var memoSeed = maphash.MakeSeed()

var hmacMethods = []string{"HS256", "HS384", "HS512"}

// judge is the slow path, run once per distinct token. It reads the token
// with the library AnqiCMS uses (golang-jwt), so both agree on what a
// token says.
func (v *verifier) judge(token []byte, sum [32]byte) *verdict {
	claims := jwt.MapClaims{}
	if v.secret == nil {
		// Fingerprint mode: the signature cannot be checked, but the
		// payload still tells when AnqiCMS will start renewing or stop
		// accepting the token, and whose it claims to be.
		if _, _, err := jwt.NewParser().ParseUnverified(string(token), claims); err != nil {
			return &verdict{kind: Anonymous}
		}
		vd := readClaims(claims)
		if vd.kind != Anonymous {
			vd.kind, vd.id = Fingerprint, sum[:]
		}
		return vd
	}
	// The time claims are checked by Identify at each use, not here: a
	// verdict is memoised for an hour and must not outlive exp nor be
	// frozen before nbf.
	_, err := jwt.ParseWithClaims(string(token), claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
		}
		return v.secret, nil
	}, jwt.WithValidMethods(hmacMethods), jwt.WithoutClaimsValidation())
	if err != nil {
		return &verdict{kind: Anonymous}
	}
	vd := readClaims(claims)
	if vd.kind != Anonymous {
		vd.kind, vd.id = User, vd.user
	}
	return vd
}

// readClaims reads what AnqiCMS reads from a token's claims: a non-empty
// string userId and a string "t" (its expiry in unix seconds), and what
// golang-jwt's default validation checks when present: "exp" (accepted
// while now < exp) and "nbf" (accepted from nbf on), both whole seconds. A
// token without a usable userId or t, or with an exp or nbf of the wrong
// type, is one AnqiCMS treats as no token at all: the verdict is Anonymous.
// Otherwise its kind is left for the caller to set.
func readClaims(claims jwt.MapClaims) *verdict {
	anon := &verdict{kind: Anonymous}
	uid, ok := claims["userId"].(string)
	if !ok || uid == "" {
		return anon
	}
	ts, _ := claims["t"].(string)
	expiry, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		// AnqiCMS cannot tell when such a token expires and rejects it.
		return anon
	}
	exp, err := claims.GetExpirationTime()
	if err != nil {
		return anon
	}
	if exp != nil {
		e := exp.Unix()
		if e == math.MinInt64 {
			return anon // expired since before time began
		}
		expiry = min(expiry, e-1)
	}
	nbf, err := claims.GetNotBefore()
	if err != nil {
		return anon
	}
	vd := &verdict{kind: Fingerprint, user: []byte(uid), expiry: expiry}
	if nbf != nil {
		vd.notBefore = nbf.Unix()
	}
	return vd
}
