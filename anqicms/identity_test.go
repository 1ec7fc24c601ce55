package anqicms

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"hash/maphash"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "site-secret"

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) []byte {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// claims are AnqiCMS's: userId and t, both strings, t the unix expiry.
func claims(user string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"userId": user, "t": strconv.FormatInt(exp.Unix(), 10)}
}

func newIdentifier(t *testing.T, secret string, sites map[string]string) *Identifier {
	t.Helper()
	x, err := NewIdentifier(secret, sites, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Close)
	return x
}

var site = []byte("shop.example.com")

func TestIdentify_VerifiedTokensNameTheUser(t *testing.T) {
	x := newIdentifier(t, testSecret, nil)
	now := time.Now()
	key := []byte(testSecret + "-user-token")
	exp := now.Add(30 * 24 * time.Hour)
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		tok := sign(t, m, key, claims("42", exp))
		for range 2 { // judged, then memoised
			id := x.Identify(site, tok, now)
			if id.Kind != User || string(id.ID) != "42" || id.Expiry != exp.Unix() {
				t.Fatalf("%s: %+v, want user 42 expiring at %d", m.Alg(), id, exp.Unix())
			}
		}
	}
	// Two tokens of one user are one identity.
	a := x.Identify(site, sign(t, jwt.SigningMethodHS256, key, claims("42", exp)), now)
	b := x.Identify(site, sign(t, jwt.SigningMethodHS256, key, claims("42", exp.Add(time.Hour))), now)
	if string(a.ID) != string(b.ID) || a.Kind != b.Kind {
		t.Fatal("two valid tokens of user 42 are different identities")
	}
	if !x.Verifies(site) {
		t.Fatal("Verifies = false with a secret set")
	}
}

func TestIdentify_TokensAnqiCMSWouldRejectAreAnonymous(t *testing.T) {
	x := newIdentifier(t, testSecret, nil)
	now := time.Now()
	key := []byte(testSecret + "-user-token")
	exp := now.Add(24 * time.Hour)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims("42", exp)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, key, claims("42", exp))
	tampered := []byte(string(good[:len(good)-3]) + "abc")
	cases := map[string][]byte{
		"empty":                 nil,
		"garbage":               []byte("not a token"),
		"wrong secret":          sign(t, jwt.SigningMethodHS256, []byte("other-user-token"), claims("42", exp)),
		"secret without suffix": sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("42", exp)),
		"admin token":           sign(t, jwt.SigningMethodHS256, []byte(testSecret+"-admin-token"), jwt.MapClaims{"adminId": "1", "t": strconv.FormatInt(exp.Unix(), 10)}),
		"alg none":              []byte(none),
		"ES256":                 sign(t, jwt.SigningMethodES256, ecKey, claims("42", exp)),
		"tampered signature":    tampered,
		"expired":               sign(t, jwt.SigningMethodHS256, key, claims("42", now.Add(-time.Second))),
		"numeric userId":        sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"userId": 42, "t": strconv.FormatInt(exp.Unix(), 10)}),
		"empty userId":          sign(t, jwt.SigningMethodHS256, key, claims("", exp)),
		"no t":                  sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"userId": "42"}),
		"non-numeric t":         sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"userId": "42", "t": "soon"}),
	}
	for name, tok := range cases {
		for range 2 {
			if id := x.Identify(site, tok, now); id.Kind != Anonymous || id.ID != nil {
				t.Errorf("%s: %+v, want anonymous", name, id)
			}
		}
	}
}

func TestIdentify_AMemoisedTokenExpiresOnTime(t *testing.T) {
	for _, secret := range []string{testSecret, ""} {
		x := newIdentifier(t, secret, nil)
		now := time.Now()
		tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret+"-user-token"), claims("42", now.Add(time.Hour)))
		if id := x.Identify(site, tok, now); id.Kind == Anonymous {
			t.Fatalf("secret %q: valid token anonymous", secret)
		}
		if id := x.Identify(site, tok, now.Add(2*time.Hour)); id.Kind != Anonymous {
			t.Fatalf("secret %q: memoised token still accepted after its t: %+v", secret, id)
		}
	}
}

func TestIdentify_FingerprintModeKeysByTheExactToken(t *testing.T) {
	x := newIdentifier(t, "", nil)
	now := time.Now()
	exp := now.Add(24 * time.Hour)
	// Without a secret the signature cannot be checked: any signature will
	// do, and AnqiCMS decides upstream.
	a := sign(t, jwt.SigningMethodHS256, []byte("whatever"), claims("42", exp))
	b := sign(t, jwt.SigningMethodHS256, []byte("other"), claims("42", exp))
	ia, ib := x.Identify(site, a, now), x.Identify(site, b, now)
	sum := sha256.Sum256(a)
	if ia.Kind != Fingerprint || string(ia.ID) != string(sum[:]) || ia.Expiry != exp.Unix() {
		t.Fatalf("fingerprint of a: %+v", ia)
	}
	if string(ia.ID) == string(ib.ID) {
		t.Fatal("two tokens of the same claimed user share a fingerprint identity")
	}
	if x.Verifies(site) {
		t.Fatal("Verifies = true without a secret")
	}
	for name, tok := range map[string][]byte{
		"garbage":   []byte("garbage"),
		"two parts": []byte("a.b"),
		"no t":      sign(t, jwt.SigningMethodHS256, []byte("k"), jwt.MapClaims{"userId": "42"}),
		"no userId": sign(t, jwt.SigningMethodHS256, []byte("k"), jwt.MapClaims{"t": strconv.FormatInt(exp.Unix(), 10)}),
		"expired":   sign(t, jwt.SigningMethodHS256, []byte("k"), claims("42", now.Add(-time.Minute))),
	} {
		if id := x.Identify(site, tok, now); id.Kind != Anonymous {
			t.Errorf("%s: %+v, want anonymous (AnqiCMS would treat it as no token)", name, id)
		}
	}
}

// Site secrets are keyed by the host as AnqiCMS matches it: case kept, port
// ignored. "b.example.com" is another site to AnqiCMS (site 1 by default).
func TestIdentify_SiteSecretsApplyPerHost(t *testing.T) {
	x := newIdentifier(t, testSecret, map[string]string{"B.Example.com:443": "b-secret"})
	now := time.Now()
	exp := now.Add(24 * time.Hour)
	bTok := sign(t, jwt.SigningMethodHS256, []byte("b-secret-user-token"), claims("7", exp))
	aTok := sign(t, jwt.SigningMethodHS256, []byte(testSecret+"-user-token"), claims("7", exp))
	bSite := SiteHost(nil, nil, []byte("B.Example.com:8443"))
	if id := x.Identify(bSite, bTok, now); id.Kind != User || string(id.ID) != "7" {
		t.Fatalf("site b token on site b: %+v", id)
	}
	other := SiteHost(nil, nil, []byte("B.EXAMPLE.COM"))
	if id := x.Identify(other, bTok, now); id.Kind != Anonymous {
		t.Fatalf("site b token on B.EXAMPLE.COM, which AnqiCMS does not match to site b: %+v", id)
	}
	if id := x.Identify(other, aTok, now); id.Kind != User {
		t.Fatalf("default-secret token on B.EXAMPLE.COM: %+v", id)
	}
	if id := x.Identify(bSite, aTok, now); id.Kind != Anonymous {
		t.Fatalf("site a token on site b: %+v, want anonymous", id)
	}
	if id := x.Identify(site, bTok, now); id.Kind != Anonymous {
		t.Fatalf("site b token on site a: %+v, want anonymous", id)
	}
	if id := x.Identify(site, aTok, now); id.Kind != User {
		t.Fatalf("site a token on site a: %+v", id)
	}
}

func TestIdentify_AMemoisedVerdictDoesNotAllocate(t *testing.T) {
	for _, secret := range []string{testSecret, ""} {
		x := newIdentifier(t, secret, nil)
		now := time.Now()
		tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret+"-user-token"), claims("42", now.Add(24*time.Hour)))
		x.Identify(site, tok, now)
		if a := testing.AllocsPerRun(200, func() { x.Identify(site, tok, now) }); a != 0 {
			t.Errorf("secret %q: Identify allocates %v times on a memoised token", secret, a)
		}
	}
}

// An "exp" earlier than "t" ends the identity at exp, memoised or not, in
// both modes: golang-jwt, which AnqiCMS uses, rejects a token from exp on.
func TestIdentify_ExpEndsAMemoisedVerdict(t *testing.T) {
	for _, secret := range []string{testSecret, ""} {
		x := newIdentifier(t, secret, nil)
		now := time.Unix(time.Now().Unix(), 0)
		c := claims("42", now.Add(24*time.Hour))
		c["exp"] = now.Add(time.Hour).Unix()
		tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret+"-user-token"), c)
		id := x.Identify(site, tok, now)
		if id.Kind == Anonymous || id.Expiry != now.Add(time.Hour).Unix()-1 {
			t.Fatalf("secret %q: %+v, want an identity ending the second before exp", secret, id)
		}
		if id := x.Identify(site, tok, now.Add(time.Hour-time.Second)); id.Kind == Anonymous {
			t.Fatalf("secret %q: anonymous a second before exp", secret)
		}
		if id := x.Identify(site, tok, now.Add(time.Hour)); id.Kind != Anonymous {
			t.Fatalf("secret %q: memoised token still accepted at its exp: %+v", secret, id)
		}
	}
}

// A token presented before its "nbf" is anonymous, and is accepted once
// nbf has passed even though its first verdict was memoised.
func TestIdentify_ATokenNotYetValidIsAnonymousUntilNbf(t *testing.T) {
	for _, secret := range []string{testSecret, ""} {
		x := newIdentifier(t, secret, nil)
		now := time.Unix(time.Now().Unix(), 0)
		c := claims("42", now.Add(24*time.Hour))
		c["nbf"] = now.Add(time.Minute).Unix()
		tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret+"-user-token"), c)
		if id := x.Identify(site, tok, now); id.Kind != Anonymous {
			t.Fatalf("secret %q: %+v before nbf, want anonymous", secret, id)
		}
		if id := x.Identify(site, tok, now.Add(time.Minute)); id.Kind == Anonymous {
			t.Fatalf("secret %q: anonymous at nbf", secret)
		}
	}
}

func TestIdentify_TimeClaimsOfTheWrongTypeAreAnonymous(t *testing.T) {
	for _, secret := range []string{testSecret, ""} {
		x := newIdentifier(t, secret, nil)
		now := time.Now()
		for _, claim := range []string{"exp", "nbf"} {
			c := claims("42", now.Add(24*time.Hour))
			c[claim] = "tomorrow"
			tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret+"-user-token"), c)
			if id := x.Identify(site, tok, now); id.Kind != Anonymous {
				t.Errorf("secret %q: string %s: %+v, want anonymous", secret, claim, id)
			}
		}
	}
}

// The watcher cap counts per user, so the user is read in fingerprint mode
// too (unverified, as "t" is).
func TestIdentify_UserIsReadInBothModes(t *testing.T) {
	for _, secret := range []string{testSecret, ""} {
		x := newIdentifier(t, secret, nil)
		now := time.Now()
		tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret+"-user-token"), claims("42", now.Add(24*time.Hour)))
		if id := x.Identify(site, tok, now); string(id.User) != "42" {
			t.Errorf("secret %q: User %q, want 42", secret, id.User)
		}
	}
}

func TestNewIdentifier_TwoKeysForOneHostAreRefused(t *testing.T) {
	_, err := NewIdentifier(testSecret, map[string]string{"a.example.com:80": "x", "a.example.com:443": "y"}, 0)
	if err == nil || !strings.Contains(err.Error(), "auth.site_secrets") {
		t.Fatalf("err = %v, want one naming auth.site_secrets", err)
	}
}

// Two users' tokens that fall in the same slot of the front memo take
// turns at it, in both modes: each must still be identified as its own
// user, never as the other (which would key one user's answers to the
// other's cache entries).
func TestIdentify_TokensSharingAFrontSlotKeepTheirOwnUsers(t *testing.T) {
	for _, secret := range []string{testSecret, ""} {
		x := newIdentifier(t, secret, nil)
		now := time.Now()
		key := []byte(testSecret + "-user-token")
		exp := now.Add(24 * time.Hour)
		tok := func(user int) []byte { return sign(t, jwt.SigningMethodHS256, key, claims(strconv.Itoa(user), exp)) }
		slot := func(tok []byte) uint64 { return maphash.Bytes(memoSeed, tok) % frontSlots }
		a := tok(1)
		var b []byte
		for u := 2; b == nil; u++ {
			if c := tok(u); slot(c) == slot(a) {
				b = c
			}
		}
		wantA, wantB := x.Identify(site, a, now), x.Identify(site, b, now)
		if wantA.Kind == Anonymous || wantB.Kind == Anonymous || string(wantA.User) == string(wantB.User) {
			t.Fatalf("secret %q: the two tokens are %+v and %+v, want two users", secret, wantA, wantB)
		}
		for i := range 6 {
			tk, want := a, wantA
			if i%2 == 1 {
				tk, want = b, wantB
			}
			for range 2 {
				if got := x.Identify(site, tk, now); string(got.ID) != string(want.ID) || string(got.User) != string(want.User) || got.Kind != want.Kind {
					t.Fatalf("secret %q, call %d: %+v, want %+v", secret, i, got, want)
				}
			}
		}
	}
}
