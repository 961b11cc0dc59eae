package auth

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	simplePrefixLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	simplePrefixLen     = 16
	// simpleSweepEvery bounds how often Assign scans for expired tokens, so
	// tokens nobody presents again do not pile up.
	simpleSweepEvery = time.Second
)

// simpleTokens is etcd's "simple" token provider: a token is
// "<16 random letters>.<raft index>", known to every member that applied the
// Authenticate entry, and valid until TTL passes without a use. There is no
// expiry goroutine: Info checks the deadline and Assign sweeps, on the
// injected clock.
type simpleTokens struct {
	ttl  time.Duration
	now  func() time.Time
	wait func(ctx context.Context, index uint64) bool

	mu struct {
		sync.Mutex
		enabled   bool
		tokens    map[string]simpleToken
		lastSweep time.Time
	}
}

type simpleToken struct {
	user     string
	deadline time.Time // valid while now is not after it
}

func newSimpleTokens(cfg TokenConfig) *simpleTokens {
	t := &simpleTokens{ttl: cfg.TTL, now: cfg.Now, wait: cfg.WaitApplied}
	if t.ttl <= 0 {
		t.ttl = DefaultTokenTTL
	}
	t.mu.tokens = map[string]simpleToken{}
	return t
}

// NewPrefix returns 16 random ASCII letters.
func (t *simpleTokens) NewPrefix() (string, error) {
	b := make([]byte, simplePrefixLen)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(simplePrefixLetters))))
		if err != nil {
			return "", err
		}
		b[i] = simplePrefixLetters[n.Int64()]
	}
	return string(b), nil
}

// Assign returns "prefix.index" and remembers it for user. While disabled it
// remembers nothing (etcd's behaviour; Store.Authenticate refuses first).
func (t *simpleTokens) Assign(user string, _ uint64, prefix string, index uint64) (string, error) {
	token := fmt.Sprintf("%s.%d", prefix, index)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.mu.enabled {
		return token, nil
	}
	if now.Sub(t.mu.lastSweep) >= simpleSweepEvery {
		for tok, st := range t.mu.tokens {
			if now.After(st.deadline) {
				delete(t.mu.tokens, tok)
			}
		}
		t.mu.lastSweep = now
	}
	t.mu.tokens[token] = simpleToken{user: user, deadline: now.Add(t.ttl)}
	return token, nil
}

// Info resolves a live token and renews it for another TTL.
func (t *simpleTokens) Info(ctx context.Context, token string, rev uint64) (AuthInfo, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 2 {
		return AuthInfo{}, false
	}
	index, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return AuthInfo{}, false
	}
	if t.wait != nil && !t.wait(ctx, index) {
		return AuthInfo{}, false
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.mu.tokens[token]
	if !ok {
		return AuthInfo{}, false
	}
	if now.After(st.deadline) {
		delete(t.mu.tokens, token)
		return AuthInfo{}, false
	}
	st.deadline = now.Add(t.ttl)
	t.mu.tokens[token] = st
	return AuthInfo{Username: st.user, Revision: rev}, true
}

// Enable starts accepting tokens.
func (t *simpleTokens) Enable() {
	t.mu.Lock()
	t.mu.enabled = true
	t.mu.Unlock()
}

// Disable forgets every token.
func (t *simpleTokens) Disable() {
	t.mu.Lock()
	t.mu.enabled = false
	t.mu.tokens = map[string]simpleToken{}
	t.mu.Unlock()
}

// InvalidateUser forgets user's tokens.
func (t *simpleTokens) InvalidateUser(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for tok, st := range t.mu.tokens {
		if st.user == user {
			delete(t.mu.tokens, tok)
		}
	}
}
