package auth

import (
	"context"
	"strings"
	"time"
)

// TokenProvider issues and resolves the tokens clients send in the "token"
// metadata. Every member holds one; Store drives its life (Enable, Disable,
// InvalidateUser) from the applied log. Implementations are safe for
// concurrent use.
type TokenProvider interface {
	// NewPrefix returns what the API layer puts in the proposed
	// InternalAuthenticateRequest.SimpleToken: random letters for simple
	// tokens, "" for JWT.
	NewPrefix() (string, error)
	// Assign issues a token for user, authenticated at auth revision rev, by
	// the Authenticate entry at raft index index carrying prefix.
	Assign(user string, rev uint64, prefix string, index uint64) (string, error)
	// Info resolves token to the user it was issued for. rev is the store's
	// current revision, which a simple token reports (it carries none); a JWT
	// reports the revision it was signed at. ok is false for an unknown,
	// expired or forged token, or if ctx ends first.
	Info(ctx context.Context, token string, rev uint64) (ai AuthInfo, ok bool)
	// Enable and Disable follow the store's enabled flag; Disable forgets
	// every token.
	Enable()
	Disable()
	// InvalidateUser forgets user's tokens (deleted, or password changed).
	InvalidateUser(user string)
}

// DefaultTokenTTL is the life of a simple token since its last use
// (etcd's --auth-token-ttl default) and of a JWT without a ttl option.
const DefaultTokenTTL = 300 * time.Second

// TokenConfig is what NewTokenProvider needs besides the option string.
type TokenConfig struct {
	// TTL is --auth-token-ttl: how long a simple token lives after its last
	// use. Zero means DefaultTokenTTL. JWTs take their ttl from the option
	// string instead.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// WaitApplied, if set, blocks until the entry at index is applied
	// locally, or ctx ends (false). A simple token names the index of the
	// entry that issued it, and a member that has not applied it yet waits
	// instead of refusing the token.
	WaitApplied func(ctx context.Context, index uint64) bool
}

// NewTokenProvider builds the provider etcd's --auth-token option string
// describes: "simple", or "jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG,ttl=DURATION"
// (RS*, PS*, ES*, EdDSA with key files, HS* with the secret in priv-key; a
// public key alone verifies but cannot sign), or "" for none: Authenticate
// then fails. A malformed string is ErrInvalidAuthOpts; key problems are
// ErrMissingKey, ErrKeyMismatch or the key parser's error.
func NewTokenProvider(opts string, cfg TokenConfig) (TokenProvider, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	kind, kv, err := splitTokenOpts(opts)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "simple":
		return newSimpleTokens(cfg), nil
	case "jwt":
		return newJWTTokens(kv, cfg.Now)
	case "":
		return nopTokens{}, nil
	}
	return nil, ErrInvalidAuthOpts
}

// splitTokenOpts splits "kind,k=v,k=v": every pair needs exactly one "=",
// and no key may repeat.
func splitTokenOpts(opts string) (string, map[string]string, error) {
	parts := strings.Split(opts, ",")
	kv := map[string]string{}
	for _, p := range parts[1:] {
		pair := strings.Split(p, "=")
		if len(pair) != 2 {
			return "", nil, ErrInvalidAuthOpts
		}
		if _, dup := kv[pair[0]]; dup {
			return "", nil, ErrInvalidAuthOpts
		}
		kv[pair[0]] = pair[1]
	}
	return parts[0], kv, nil
}

// nopTokens is the provider without --auth-token: it issues and knows none.
type nopTokens struct{}

func (nopTokens) NewPrefix() (string, error) { return "", nil }
func (nopTokens) Assign(string, uint64, string, uint64) (string, error) {
	return "", ErrAuthFailed
}
func (nopTokens) Info(context.Context, string, uint64) (AuthInfo, bool) { return AuthInfo{}, false }
func (nopTokens) Enable()                                               {}
func (nopTokens) Disable()                                              {}
func (nopTokens) InvalidateUser(string)                                 {}
