package auth

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

	// mu guards the map; each request's Info only reads it (RLock) and
	// renews the token's deadline atomically, so that many clients
	// presenting tokens at once do not queue on one exclusive lock.
	mu struct {
		sync.RWMutex
		enabled   bool
		tokens    map[string]*simpleToken
		lastSweep time.Time
	}
}

type simpleToken struct {
	user string
	// deadline is the UnixNano time until which the token is valid (not
	// after it); Info moves it forward under mu's read lock.
	deadline atomic.Int64
}

func newSimpleTokens(cfg TokenConfig) *simpleTokens {
	t := &simpleTokens{ttl: cfg.TTL, now: cfg.Now, wait: cfg.WaitApplied}
	if t.ttl <= 0 {
		t.ttl = DefaultTokenTTL
	}
	t.mu.tokens = map[string]*simpleToken{}
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
			if now.UnixNano() > st.deadline.Load() {
				delete(t.mu.tokens, tok)
			}
		}
		t.mu.lastSweep = now
	}
	st := &simpleToken{user: user}
	st.deadline.Store(now.Add(t.ttl).UnixNano())
	t.mu.tokens[token] = st
	return token, nil
}

// Info resolves a live token and renews it for another TTL. It allocates
// nothing and takes the map's lock only for reading, except to forget a
// token it finds expired: it runs for every request of a logged-in client.
func (t *simpleTokens) Info(ctx context.Context, token string, rev uint64) (AuthInfo, bool) {
	dot := strings.IndexByte(token, '.')
	if dot < 0 || strings.IndexByte(token[dot+1:], '.') >= 0 {
		return AuthInfo{}, false
	}
	index, err := strconv.ParseUint(token[dot+1:], 10, 64)
	if err != nil {
		return AuthInfo{}, false
	}
	if t.wait != nil && !t.wait(ctx, index) {
		return AuthInfo{}, false
	}
	now := t.now().UnixNano()
	t.mu.RLock()
	st, ok := t.mu.tokens[token]
	t.mu.RUnlock()
	if !ok {
		return AuthInfo{}, false
	}
	for {
		d := st.deadline.Load()
		if now > d {
			t.forgetExpired(token, st)
			return AuthInfo{}, false
		}
		// A concurrent Info may have renewed it from a later now: keep
		// the later deadline.
		if next := now + int64(t.ttl); next <= d || st.deadline.CompareAndSwap(d, next) {
			break
		}
	}
	return AuthInfo{Username: st.user, Revision: rev}, true
}

// forgetExpired removes token if it still maps to st, the expired entry
// Info found (a new Assign may have replaced it meanwhile).
func (t *simpleTokens) forgetExpired(token string, st *simpleToken) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.tokens[token] == st {
		delete(t.mu.tokens, token)
	}
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
	t.mu.tokens = map[string]*simpleToken{}
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
