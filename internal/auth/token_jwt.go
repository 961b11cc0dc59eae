package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwtTokens is etcd's "jwt" token provider: a token is a JWT whose claims
// are username, revision and exp, signed with the configured method. It
// keeps no state, so Enable, Disable and InvalidateUser do nothing: a JWT
// lives until it expires (or the auth revision moves past its own).
type jwtTokens struct {
	method     jwt.SigningMethod
	key        any // a private key (or HMAC secret) signs; a public key only verifies
	verifyOnly bool
	ttl        time.Duration
	now        func() time.Time

	// verified remembers the tokens whose signature Info has checked, so
	// that a logged-in client's every request costs a map lookup, not a
	// signature verification (tens of microseconds for RS*, PS*, ES*:
	// more than the rest of a read). A cached token is the same string
	// that verified, signed by the same fixed key, so its claims are as
	// good as a new check's; its expiry is checked on every use. The
	// cache holds at most maxVerifiedJWTs tokens (see remember).
	verified struct {
		sync.RWMutex
		m map[string]verifiedJWT
	}
}

// maxVerifiedJWTs bounds the verified-token cache: a flood of distinct
// valid tokens cannot grow it past this.
const maxVerifiedJWTs = 4096

// verifiedJWT is a cached token's claims and its expiry (zero: none).
type verifiedJWT struct {
	ai  AuthInfo
	exp time.Time
}

// newJWTTokens reads the sign-method, pub-key, priv-key and ttl options
// (others are ignored, as etcd does).
func newJWTTokens(opts map[string]string, now func() time.Time) (*jwtTokens, error) {
	t := &jwtTokens{ttl: DefaultTokenTTL, now: now}
	if s := opts["ttl"]; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, ErrInvalidAuthOpts
		}
		t.ttl = d
	}
	var pub, priv []byte
	if f := opts["pub-key"]; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, ErrInvalidAuthOpts
		}
		pub = b
	}
	if f := opts["priv-key"]; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, ErrInvalidAuthOpts
		}
		priv = b
	}
	t.method = jwt.GetSigningMethod(opts["sign-method"])
	if t.method == nil {
		return nil, ErrInvalidAuthOpts
	}
	// "none" is a method the library knows but etcd does not accept: it
	// falls to the switch's default, as in etcd.
	var err error
	switch t.method.(type) {
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		t.key, t.verifyOnly, err = pickKey(priv, pub, jwt.ParseRSAPrivateKeyFromPEM, jwt.ParseRSAPublicKeyFromPEM)
	case *jwt.SigningMethodECDSA:
		t.key, t.verifyOnly, err = pickKey(priv, pub, jwt.ParseECPrivateKeyFromPEM, jwt.ParseECPublicKeyFromPEM)
	case *jwt.SigningMethodEd25519:
		t.key, t.verifyOnly, err = pickKey(priv, pub,
			func(b []byte) (ed25519.PrivateKey, error) {
				k, err := jwt.ParseEdPrivateKeyFromPEM(b)
				if err != nil {
					return nil, err
				}
				return k.(ed25519.PrivateKey), nil
			},
			func(b []byte) (ed25519.PublicKey, error) {
				k, err := jwt.ParseEdPublicKeyFromPEM(b)
				if err != nil {
					return nil, err
				}
				return k.(ed25519.PublicKey), nil
			})
	case *jwt.SigningMethodHMAC:
		if len(priv) == 0 {
			return nil, ErrMissingKey
		}
		t.key = priv
	default:
		return nil, fmt.Errorf("%w: unsupported signing method %s", ErrInvalidAuthMethod, t.method.Alg())
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// publicKey and privateKey are what the key types of the asymmetric
// methods share.
type publicKey interface {
	Equal(x crypto.PublicKey) bool
}

type privateKey interface {
	Public() crypto.PublicKey
}

// pickKey parses the PEM keys given and returns the one to use: the private
// key when there is one (it must match the public key if both are given),
// else the public key, verify-only.
func pickKey[Priv privateKey, Pub publicKey](privPEM, pubPEM []byte,
	parsePriv func([]byte) (Priv, error), parsePub func([]byte) (Pub, error)) (any, bool, error) {
	var (
		priv              Priv
		pub               Pub
		havePriv, havePub bool
		err               error
	)
	if len(privPEM) > 0 {
		if priv, err = parsePriv(privPEM); err != nil {
			return nil, false, err
		}
		havePriv = true
	}
	if len(pubPEM) > 0 {
		if pub, err = parsePub(pubPEM); err != nil {
			return nil, false, err
		}
		havePub = true
	}
	switch {
	case havePriv && havePub && !pub.Equal(priv.Public()):
		return nil, false, ErrKeyMismatch
	case havePriv:
		return priv, false, nil
	case havePub:
		return pub, true, nil
	}
	return nil, false, ErrMissingKey
}

// NewPrefix returns "": a JWT needs no proposed prefix.
func (t *jwtTokens) NewPrefix() (string, error) { return "", nil }

// Assign signs a JWT for user at revision rev, expiring after the ttl.
func (t *jwtTokens) Assign(user string, rev uint64, _ string, _ uint64) (string, error) {
	if t.verifyOnly {
		return "", ErrVerifyOnly
	}
	tk := jwt.NewWithClaims(t.method, jwt.MapClaims{
		"username": user,
		"revision": rev,
		"exp":      t.now().Add(t.ttl).Unix(),
	})
	return tk.SignedString(t.key)
}

// Info verifies a JWT's signature, method and expiry and returns its
// claims. A token verified before is only checked for expiry.
func (t *jwtTokens) Info(_ context.Context, token string, _ uint64) (AuthInfo, bool) {
	t.verified.RLock()
	v, ok := t.verified.m[token]
	t.verified.RUnlock()
	if ok {
		// jwt's rule: valid while now is before exp.
		if v.exp.IsZero() || t.now().Before(v.exp) {
			return v.ai, true
		}
		t.forget(token)
		return AuthInfo{}, false
	}
	ai, exp, ok := t.verify(token)
	if ok {
		t.remember(token, verifiedJWT{ai: ai, exp: exp})
	}
	return ai, ok
}

// remember caches a verified token. When the cache is full, the expired
// tokens go; if none had, the whole cache does (the next use of each
// token verifies it again).
func (t *jwtTokens) remember(token string, v verifiedJWT) {
	t.verified.Lock()
	defer t.verified.Unlock()
	if t.verified.m == nil {
		t.verified.m = map[string]verifiedJWT{}
	}
	if len(t.verified.m) >= maxVerifiedJWTs {
		now := t.now()
		for tok, c := range t.verified.m {
			if !c.exp.IsZero() && !now.Before(c.exp) {
				delete(t.verified.m, tok)
			}
		}
		if len(t.verified.m) >= maxVerifiedJWTs {
			clear(t.verified.m)
		}
	}
	t.verified.m[token] = v
}

func (t *jwtTokens) forget(token string) {
	t.verified.Lock()
	delete(t.verified.m, token)
	t.verified.Unlock()
}

// verify checks a token's signature, method and expiry and returns its
// claims and expiry (zero if it has none).
func (t *jwtTokens) verify(token string) (AuthInfo, time.Time, bool) {
	parsed, err := jwt.Parse(token, func(tk *jwt.Token) (any, error) {
		if tk.Method.Alg() != t.method.Alg() {
			return nil, errors.New("auth: JWT signed with another method")
		}
		switch k := t.key.(type) {
		case *rsa.PrivateKey:
			return &k.PublicKey, nil
		case *ecdsa.PrivateKey:
			return &k.PublicKey, nil
		case ed25519.PrivateKey:
			return k.Public(), nil
		}
		return t.key, nil
	}, jwt.WithTimeFunc(t.now))
	if err != nil || !parsed.Valid {
		return AuthInfo{}, time.Time{}, false
	}
	claims, ok := parsed.Claims.(jwt.MapClaims)
	if !ok {
		return AuthInfo{}, time.Time{}, false
	}
	user, ok := claims["username"].(string)
	if !ok {
		return AuthInfo{}, time.Time{}, false
	}
	rev, ok := claims["revision"].(float64)
	if !ok {
		return AuthInfo{}, time.Time{}, false
	}
	var exp time.Time
	if e, err := claims.GetExpirationTime(); err == nil && e != nil {
		exp = e.Time
	}
	return AuthInfo{Username: user, Revision: uint64(rev)}, exp, true
}

// Enable does nothing: a JWT carries its own validity.
func (t *jwtTokens) Enable() {}

// Disable does nothing (see Enable).
func (t *jwtTokens) Disable() {}

// InvalidateUser does nothing: a JWT cannot be recalled before it expires;
// the revision it carries is outdated by the change that called this.
func (t *jwtTokens) InvalidateUser(string) {}
