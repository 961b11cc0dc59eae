package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	etcdauth "go.etcd.io/etcd/server/v3/auth"
	"go.uber.org/zap"
)

// fakeClock is a settable clock for token TTLs.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func TestSimpleTokens(t *testing.T) {
	clk := newClock()
	tp, err := NewTokenProvider("simple", TokenConfig{TTL: 10 * time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prefix, err := tp.NewPrefix()
	if err != nil || len(prefix) != 16 || strings.Trim(prefix, simplePrefixLetters) != "" {
		t.Fatalf("prefix %q, %v", prefix, err)
	}

	// Disabled: a token is made but not remembered.
	tok, _ := tp.Assign("alice", 3, prefix, 7)
	if tok != prefix+".7" {
		t.Fatalf("token %q, want %q", tok, prefix+".7")
	}
	if _, ok := tp.Info(ctx, tok, 3); ok {
		t.Fatal("token assigned while disabled is known")
	}

	tp.Enable()
	tok, _ = tp.Assign("alice", 3, prefix, 8)
	if ai, ok := tp.Info(ctx, tok, 5); !ok || ai != (AuthInfo{"alice", 5}) {
		t.Fatalf("Info = %+v, %v; want alice at the store's revision 5", ai, ok)
	}
	// Each use renews the TTL.
	for range 5 {
		clk.Advance(8 * time.Second)
		if _, ok := tp.Info(ctx, tok, 5); !ok {
			t.Fatal("token in use expired")
		}
	}
	clk.Advance(10 * time.Second) // exactly the TTL: still valid
	if _, ok := tp.Info(ctx, tok, 5); !ok {
		t.Fatal("token expired at its deadline")
	}
	clk.Advance(10*time.Second + time.Nanosecond)
	if _, ok := tp.Info(ctx, tok, 5); ok {
		t.Fatal("token outlived its TTL")
	}

	for _, bad := range []string{"", "abc", "a.b.c", prefix + ".x", prefix + ".99"} {
		if _, ok := tp.Info(ctx, bad, 5); ok {
			t.Errorf("malformed or unknown token %q accepted", bad)
		}
	}

	a, _ := tp.Assign("alice", 3, prefix, 10)
	b, _ := tp.Assign("bob", 3, prefix, 11)
	tp.InvalidateUser("alice")
	if _, ok := tp.Info(ctx, a, 5); ok {
		t.Fatal("invalidated user's token accepted")
	}
	if _, ok := tp.Info(ctx, b, 5); !ok {
		t.Fatal("another user's token was invalidated too")
	}
	tp.Disable()
	tp.Enable()
	if _, ok := tp.Info(ctx, b, 5); ok {
		t.Fatal("token survived Disable")
	}
}

func TestSimpleTokenWaitsForIndex(t *testing.T) {
	applied := uint64(5)
	tp, err := NewTokenProvider("simple", TokenConfig{WaitApplied: func(_ context.Context, index uint64) bool {
		return index <= applied
	}})
	if err != nil {
		t.Fatal(err)
	}
	tp.Enable()
	tok, _ := tp.Assign("alice", 1, "p", 9)
	if _, ok := tp.Info(context.Background(), tok, 1); ok {
		t.Fatal("token of an entry not applied here was accepted")
	}
	applied = 9
	if _, ok := tp.Info(context.Background(), tok, 1); !ok {
		t.Fatal("token refused once its entry was applied")
	}
}

// TestStoreDrivesTokens checks Authenticate and the token life Store drives.
func TestStoreDrivesTokens(t *testing.T) {
	tp, err := NewTokenProvider("simple", TokenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, s: New(Options{Tokens: tp}), kv: memKV{}}
	f.addUser("root", "root")
	f.addUser("alice")
	f.ok(f.s.UserAdd(f.kv, &pb.AuthUserAddRequest{Name: "nopw", Options: &authpb.UserAddOptions{NoPassword: true}}))
	if _, err := f.s.Authenticate(&pb.InternalAuthenticateRequest{Name: "alice", SimpleToken: "p"}, 1); !errors.Is(err, ErrAuthNotEnabled) {
		t.Fatalf("Authenticate with auth off: %v", err)
	}
	f.enable()
	for _, name := range []string{"nobody", "nopw"} {
		if _, err := f.s.Authenticate(&pb.InternalAuthenticateRequest{Name: name, SimpleToken: "p"}, 2); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("Authenticate(%s): %v", name, err)
		}
	}
	resp, err := f.s.Authenticate(&pb.InternalAuthenticateRequest{Name: "alice", SimpleToken: "p"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ai, ok := tp.Info(ctx, resp.Token, f.s.Revision()); !ok || ai.Username != "alice" {
		t.Fatalf("token %q resolves to %+v, %v", resp.Token, ai, ok)
	}
	f.ok(f.s.UserChangePassword(f.kv, &pb.AuthUserChangePasswordRequest{Name: "alice", HashedPassword: mustHash(t, "new")}))
	if _, ok := tp.Info(ctx, resp.Token, f.s.Revision()); ok {
		t.Fatal("token survived a password change")
	}
	resp, _ = f.s.Authenticate(&pb.InternalAuthenticateRequest{Name: "alice", SimpleToken: "p"}, 4)
	f.ok(f.s.AuthDisable(f.kv, &pb.AuthDisableRequest{}))
	if _, ok := tp.Info(ctx, resp.Token, f.s.Revision()); ok {
		t.Fatal("token survived AuthDisable")
	}

	// Without a provider, Authenticate fails as etcd's does without --auth-token.
	f.enable()
	nop, err := NewTokenProvider("", TokenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nop.Assign("alice", 1, "", 1); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("no provider: %v", err)
	}
}

func TestTokenOptions(t *testing.T) {
	for _, opts := range []string{"bogus", "simple,x", "jwt,a=1,a=2", "jwt,sign-method=XX256,priv-key=/nonexistent",
		"jwt,sign-method=HS256,ttl=soon", "jwt,sign-method=RS256,priv-key=/nonexistent"} {
		if _, err := NewTokenProvider(opts, TokenConfig{}); !errors.Is(err, ErrInvalidAuthOpts) {
			t.Errorf("%q: %v, want ErrInvalidAuthOpts", opts, err)
		}
	}
	if _, err := NewTokenProvider("jwt,sign-method=RS256", TokenConfig{}); !errors.Is(err, ErrMissingKey) {
		t.Errorf("jwt without keys: %v, want ErrMissingKey", err)
	}
	if _, err := NewTokenProvider("jwt,sign-method=HS256", TokenConfig{}); !errors.Is(err, ErrMissingKey) {
		t.Errorf("HMAC without a secret: %v, want ErrMissingKey", err)
	}
	if _, err := NewTokenProvider("jwt,sign-method=none", TokenConfig{}); !errors.Is(err, ErrInvalidAuthMethod) {
		t.Errorf("jwt with method none: %v, want ErrInvalidAuthMethod", err)
	}
}

// writePEM writes a key in PEM form to a file in dir and returns its path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// keyFiles makes a private and a public key file for a key pair.
func keyFiles(t *testing.T, dir, name string, priv any, pub any) (privPath, pubPath string) {
	t.Helper()
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".key", "PRIVATE KEY", privDER), writePEM(t, dir, name+".pub", "PUBLIC KEY", pubDER)
}

func TestJWTTokens(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPriv, rsaPub := keyFiles(t, dir, "rsa", rsaKey, &rsaKey.PublicKey)
	ecPriv, ecPub := keyFiles(t, dir, "ec", ecKey, &ecKey.PublicKey)
	edPrivF, edPubF := keyFiles(t, dir, "ed", edPriv, edPub)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("a shared secret"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		method, priv, pub string
	}{
		{"RS256", rsaPriv, rsaPub}, {"PS384", rsaPriv, rsaPub}, {"ES256", ecPriv, ecPub},
		{"EdDSA", edPrivF, edPubF}, {"HS256", secret, ""},
	} {
		t.Run(tt.method, func(t *testing.T) {
			clk := newClock()
			cfg := TokenConfig{Now: clk.Now}
			opts := "jwt,sign-method=" + tt.method + ",priv-key=" + tt.priv + ",ttl=1m"
			if tt.pub != "" {
				opts += ",pub-key=" + tt.pub
			}
			tp, err := NewTokenProvider(opts, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if p, _ := tp.NewPrefix(); p != "" {
				t.Fatalf("JWT prefix %q", p)
			}
			tok, err := tp.Assign("alice", 42, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if ai, ok := tp.Info(ctx, tok, 99); !ok || ai != (AuthInfo{"alice", 42}) {
				t.Fatalf("Info = %+v, %v; want alice at the token's revision 42", ai, ok)
			}
			// Change one character in the middle of the signature (its last
			// character may carry unused bits).
			i := strings.LastIndexByte(tok, '.') + (len(tok)-strings.LastIndexByte(tok, '.'))/2
			c := byte('A')
			if tok[i] == c {
				c = 'B'
			}
			if _, ok := tp.Info(ctx, tok[:i]+string(c)+tok[i+1:], 99); ok {
				t.Fatal("tampered token accepted")
			}
			if tt.pub != "" {
				vo, err := NewTokenProvider("jwt,sign-method="+tt.method+",pub-key="+tt.pub, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if ai, ok := vo.Info(ctx, tok, 0); !ok || ai.Username != "alice" {
					t.Fatalf("verify-only provider: %+v, %v", ai, ok)
				}
				if _, err := vo.Assign("alice", 1, "", 0); !errors.Is(err, ErrVerifyOnly) {
					t.Fatalf("verify-only Assign: %v", err)
				}
			}
			clk.Advance(2 * time.Minute)
			if _, ok := tp.Info(ctx, tok, 99); ok {
				t.Fatal("expired JWT accepted")
			}
		})
	}

	// A token signed with another method is refused, even with a valid key.
	hs, err := NewTokenProvider("jwt,sign-method=HS256,priv-key="+secret, TokenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	hs512, err := NewTokenProvider("jwt,sign-method=HS512,priv-key="+secret, TokenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := hs512.Assign("alice", 1, "", 0)
	if _, ok := hs.Info(context.Background(), tok, 0); ok {
		t.Fatal("HS512 token accepted by an HS256 provider")
	}

	// Keys that are not a pair are refused.
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub := keyFiles(t, dir, "ec2", otherEC, &otherEC.PublicKey)
	if _, err := NewTokenProvider("jwt,sign-method=ES256,priv-key="+ecPriv+",pub-key="+otherPub, TokenConfig{}); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mismatched keys: %v, want ErrKeyMismatch", err)
	}
}

// TestTokenOptionsAgainstEtcd: every --auth-token string, good or bad, is
// accepted or refused as etcd's NewTokenProvider accepts or refuses it,
// with etcd's error where the error is one of etcd's own.
func TestTokenOptionsAgainstEtcd(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPriv, rsaPub := keyFiles(t, dir, "rsa", rsaKey, &rsaKey.PublicKey)
	ecPriv, ecPub := keyFiles(t, dir, "ec", ecKey, &ecKey.PublicKey)
	_, otherPub := keyFiles(t, dir, "ec2", otherEC, &otherEC.PublicKey)
	edPrivF, edPubF := keyFiles(t, dir, "ed", edPriv, edPub)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("a shared secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []string{
		"", "simple", "simple,ttl=5m", "bogus", "JWT", "simple,x", "jwt", "jwt,a=1,a=2", "jwt,a=b=c",
		"jwt,sign-method=es256,priv-key=" + ecPriv, "jwt,sign-method=XX256,priv-key=" + ecPriv,
		"jwt,sign-method=none",
		"jwt,sign-method=ES256", "jwt,sign-method=ES256,priv-key=", "jwt,sign-method=ES256,priv-key=/nonexistent",
		"jwt,sign-method=ES256,priv-key=" + ecPriv, "jwt,sign-method=ES256,pub-key=" + ecPub,
		"jwt,sign-method=ES256,priv-key=" + ecPriv + ",pub-key=" + ecPub,
		"jwt,sign-method=ES256,priv-key=" + ecPriv + ",pub-key=" + otherPub,
		"jwt,sign-method=ES384,priv-key=" + ecPriv,
		"jwt,sign-method=ES256,priv-key=" + rsaPriv, "jwt,sign-method=RS256,pub-key=" + ecPub,
		"jwt,sign-method=ES256,priv-key=" + garbage, "jwt,sign-method=RS256,priv-key=" + garbage,
		"jwt,sign-method=RS256,priv-key=" + rsaPriv + ",pub-key=" + rsaPub, "jwt,sign-method=PS512,pub-key=" + rsaPub,
		"jwt,sign-method=EdDSA,priv-key=" + edPrivF, "jwt,sign-method=EdDSA,pub-key=" + edPubF,
		"jwt,sign-method=EdDSA,priv-key=" + ecPriv,
		"jwt,sign-method=HS256,priv-key=" + secret, "jwt,sign-method=HS512,pub-key=" + secret,
		"jwt,sign-method=HS256,priv-key=" + secret + ",ttl=soon", "jwt,sign-method=HS256,priv-key=" + secret + ",ttl=0s",
		"jwt,sign-method=HS256,priv-key=" + secret + ",ttl=-1m", "jwt,sign-method=HS256,priv-key=" + secret + ",ttl=",
		"jwt,sign-method=HS256,priv-key=" + secret + ",colour=blue",
	}
	for _, opts := range cases {
		_, etcdErr := etcdauth.NewTokenProvider(zap.NewNop(), opts, nil, time.Minute)
		_, err := NewTokenProvider(opts, TokenConfig{})
		if (err == nil) != (etcdErr == nil) {
			t.Errorf("%q: cairn %v, etcd %v", opts, err, etcdErr)
			continue
		}
		for _, sentinel := range []error{ErrInvalidAuthOpts, ErrMissingKey, ErrKeyMismatch} {
			if errors.Is(etcdErr, etcdErrorFor(sentinel)) != errors.Is(err, sentinel) {
				t.Errorf("%q: cairn %v, etcd %v", opts, err, etcdErr)
			}
		}
	}
}

// etcdErrorFor returns etcd's error of the same meaning as ours.
func etcdErrorFor(err error) error {
	switch err {
	case ErrInvalidAuthOpts:
		return etcdauth.ErrInvalidAuthOpts
	case ErrMissingKey:
		return etcdauth.ErrMissingKey
	case ErrKeyMismatch:
		return etcdauth.ErrKeyMismatch
	}
	return err
}

// TestSimpleTokenInfoAllocatesNothing: resolving a simple token runs for
// every request of a logged-in client, so it must not allocate.
func TestSimpleTokenInfoAllocatesNothing(t *testing.T) {
	tp, err := NewTokenProvider("simple", TokenConfig{TTL: time.Minute, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	tp.Enable()
	tok, _ := tp.Assign("alice", 1, "abcdefghijklmnop", 42)
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := tp.Info(ctx, tok, 1); !ok {
			t.Fatal("token not found")
		}
	}); n != 0 {
		t.Fatalf("Info allocates %v times per call, want 0", n)
	}
}

// TestSimpleTokenConcurrentRenewal: many requests presenting one token at
// once (each renewing it) while the clock moves keep it alive, and its
// deadline ends up a TTL after the latest use (run it with -race).
func TestSimpleTokenConcurrentRenewal(t *testing.T) {
	clk := newClock()
	tp, err := NewTokenProvider("simple", TokenConfig{TTL: 10 * time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	tp.Enable()
	tok, _ := tp.Assign("alice", 1, "abcdefghijklmnop", 1)
	ctx := context.Background()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if _, ok := tp.Info(ctx, tok, 1); !ok {
					failed.Add(1)
				}
			}
		}()
	}
	for range 50 {
		clk.Advance(time.Second) // always less than the TTL since the last use
		if _, ok := tp.Info(ctx, tok, 1); !ok {
			failed.Add(1)
		}
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("a token in constant use was refused %d times", n)
	}
	clk.Advance(10 * time.Second)
	if _, ok := tp.Info(ctx, tok, 1); !ok {
		t.Fatal("token expired a TTL after its last use, want still valid at the deadline")
	}
	clk.Advance(10*time.Second + time.Nanosecond)
	if _, ok := tp.Info(ctx, tok, 1); ok {
		t.Fatal("token outlived its TTL")
	}
}

// TestJWTVerifiedOnce: a JWT's signature is verified on its first use
// only; later uses of the same token cost a lookup (no allocation), still
// refuse it once expired, and the cache of verified tokens stays bounded.
func TestJWTVerifiedOnce(t *testing.T) {
	dir := t.TempDir()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, _ := keyFiles(t, dir, "ec", ecKey, &ecKey.PublicKey)
	clk := newClock()
	tp, err := NewTokenProvider("jwt,sign-method=ES256,priv-key="+ecPriv+",ttl=1m", TokenConfig{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tp.Assign("alice", 7, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ai, ok := tp.Info(ctx, tok, 0); !ok || ai != (AuthInfo{"alice", 7}) {
		t.Fatalf("first Info = %+v, %v", ai, ok)
	}
	if n := testing.AllocsPerRun(100, func() {
		if ai, ok := tp.Info(ctx, tok, 0); !ok || ai != (AuthInfo{"alice", 7}) {
			t.Fatalf("cached Info = %+v, %v", ai, ok)
		}
	}); n != 0 {
		t.Fatalf("Info of a verified token allocates %v times, want 0 (verified again?)", n)
	}
	clk.Advance(time.Minute) // exp is exactly now: expired, as jwt judges it
	if _, ok := tp.Info(ctx, tok, 0); ok {
		t.Fatal("a cached token was accepted at its expiry")
	}

	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("a shared secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	hs, err := NewTokenProvider("jwt,sign-method=HS256,priv-key="+secret+",ttl=1h", TokenConfig{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxVerifiedJWTs + 10 {
		tok, _ := hs.Assign(fmt.Sprintf("u%d", i), 1, "", 0)
		if _, ok := hs.Info(ctx, tok, 0); !ok {
			t.Fatalf("token %d refused", i)
		}
	}
	j := hs.(*jwtTokens)
	j.verified.RLock()
	n := len(j.verified.m)
	j.verified.RUnlock()
	if n > maxVerifiedJWTs {
		t.Fatalf("%d verified tokens cached, want at most %d", n, maxVerifiedJWTs)
	}
}

// BenchmarkJWTInfo measures resolving an ES256 token: verifying its
// signature (first use) and a later use of the same token.
func BenchmarkJWTInfo(b *testing.B) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	p := filepath.Join(b.TempDir(), "ec.key")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		b.Fatal(err)
	}
	tp, err := NewTokenProvider("jwt,sign-method=ES256,priv-key="+p, TokenConfig{Now: time.Now})
	if err != nil {
		b.Fatal(err)
	}
	tok, _ := tp.Assign("alice", 1, "", 0)
	ctx := context.Background()
	b.Run("verify", func(b *testing.B) {
		j := tp.(*jwtTokens)
		for b.Loop() {
			if _, _, ok := j.verify(tok); !ok {
				b.Fatal("refused")
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, ok := tp.Info(ctx, tok, 0); !ok {
				b.Fatal("refused")
			}
		}
	})
}
