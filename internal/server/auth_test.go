package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/clock/clocktest"
)

// setupAuth creates root (password "rootpw", role root), role "rw" with
// READWRITE on [k, l), user alice (password "pw", role rw), and enables
// auth.
func setupAuth(t testing.TB, s *Server) {
	t.Helper()
	ctx := context.Background()
	steps := []func() error{
		func() error {
			_, err := s.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"})
			return err
		},
		func() error { _, err := s.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "root"}); return err },
		func() error {
			_, err := s.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func() error { _, err := s.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "rw"}); return err },
		func() error {
			_, err := s.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "rw",
				Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte("k"), RangeEnd: []byte("l")}})
			return err
		},
		func() error {
			_, err := s.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "alice", Password: "pw"})
			return err
		},
		func() error {
			_, err := s.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "rw"})
			return err
		},
		func() error { _, err := s.AuthEnable(ctx, &pb.AuthEnableRequest{}); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
}

// as logs user in and returns a context carrying the token.
func as(t *testing.T, s *Server, user, password string) context.Context {
	t.Helper()
	r, err := s.Authenticate(context.Background(), &pb.AuthenticateRequest{Name: user, Password: password})
	if err != nil {
		t.Fatalf("Authenticate(%s): %v", user, err)
	}
	return WithCredentials(context.Background(), r.Token, "")
}

func putAs(ctx context.Context, s *Server, key string) error {
	_, err := s.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte("v")})
	return err
}

func getAs(ctx context.Context, s *Server, key string) error {
	_, err := s.Range(ctx, &pb.RangeRequest{Key: []byte(key)})
	return err
}

// checkEnforced asserts that s enforces setupAuth's rules.
func checkEnforced(t *testing.T, s *Server) {
	t.Helper()
	st, err := s.AuthStatus(context.Background(), &pb.AuthStatusRequest{})
	if err != nil || !st.Enabled {
		t.Fatalf("AuthStatus: %v %v, want enabled", st, err)
	}
	if err := putAs(context.Background(), s, "k1"); !errors.Is(err, auth.ErrUserEmpty) {
		t.Fatalf("put without a user: %v, want %v", err, auth.ErrUserEmpty)
	}
	alice := as(t, s, "alice", "pw")
	if err := putAs(alice, s, "k1"); err != nil {
		t.Fatalf("alice put k1: %v", err)
	}
	if err := getAs(alice, s, "k1"); err != nil {
		t.Fatalf("alice get k1: %v", err)
	}
	if err := putAs(alice, s, "z"); !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("alice put z: %v, want %v", err, auth.ErrPermissionDenied)
	}
	if err := getAs(alice, s, "z"); !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("alice get z: %v, want %v", err, auth.ErrPermissionDenied)
	}
	if _, err := s.Authenticate(context.Background(), &pb.AuthenticateRequest{Name: "alice", Password: "nope"}); !errors.Is(err, auth.ErrAuthFailed) {
		t.Fatalf("wrong password: %v, want %v", err, auth.ErrAuthFailed)
	}
	root := as(t, s, "root", "rootpw")
	if err := putAs(root, s, "z"); err != nil {
		t.Fatalf("root put z: %v", err)
	}
	if err := s.IsAdmin(alice); !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("alice IsAdmin: %v", err)
	}
	if err := s.IsAdmin(root); err != nil {
		t.Fatalf("root IsAdmin: %v", err)
	}
}

// TestAuthPersistsAcrossRestart: users, roles, permissions and the
// enabled flag survive a restart, and are enforced after it.
func TestAuthPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *Config) { c.BcryptCost = 4; c.UnsafeNoFsync = true }
	s := startServer(t, dir, cfg)
	setupAuth(t, s)
	checkEnforced(t, s)
	rev := s.auth.st().Revision()
	s.Stop()

	s = startServer(t, dir, cfg)
	if got := s.auth.st().Revision(); got != rev {
		t.Fatalf("auth revision after restart %d, want %d", got, rev)
	}
	checkEnforced(t, s)
}

// TestAuthOldRevisionAtApply: a write checked (stamped) before a role
// change that applies ahead of it is refused at apply with
// auth.ErrAuthOldRevision, which clientv3 retries.
func TestAuthOldRevisionAtApply(t *testing.T) {
	var hold atomic.Bool
	gate := make(chan struct{})
	s := startServerWith(t, t.TempDir(), testingKnobs{beforeApply: func() {
		if hold.Load() {
			<-gate
		}
	}}, func(c *Config) { c.BcryptCost = 4 })
	setupAuth(t, s)
	alice := as(t, s, "alice", "pw")
	root := as(t, s, "root", "rootpw")

	hold.Store(true)
	var wg sync.WaitGroup
	var grantErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, grantErr = s.RoleGrantPermission(root, &pb.AuthRoleGrantPermissionRequest{Name: "rw",
			Perm: &authpb.Permission{PermType: authpb.READ, Key: []byte("m")}})
	}()
	// The grant is proposed (the apply loop is held) before alice's put is
	// stamped with the revision as it still is.
	waitUntil(t, "the grant to be committed", func() bool { return s.node.CommitIndex() >= s.applied.Load()+1 })
	putErr := make(chan error, 1)
	go func() { putErr <- putAs(alice, s, "k2") }()
	waitUntil(t, "both proposals to be committed", func() bool { return s.node.CommitIndex() >= s.applied.Load()+2 })
	hold.Store(false)
	close(gate)
	wg.Wait()
	if grantErr != nil {
		t.Fatal(grantErr)
	}
	if err := <-putErr; !errors.Is(err, auth.ErrAuthOldRevision) {
		t.Fatalf("put stamped before a role change applied after it: %v, want %v", err, auth.ErrAuthOldRevision)
	}
	if err := putAs(alice, s, "k2"); err != nil {
		t.Fatalf("the retried put: %v", err)
	}
}

// TestSimpleTokenExpires: a simple token lives --auth-token-ttl after its
// last use, on the member's clock.
func TestSimpleTokenExpires(t *testing.T) {
	clock := clocktest.NewFake()
	s := startServerWith(t, t.TempDir(), testingKnobs{authNow: clock.Now}, func(c *Config) {
		c.BcryptCost = 4
		c.AuthTokenTTL = time.Minute
	})
	setupAuth(t, s)
	alice := as(t, s, "alice", "pw")
	clock.Advance(50 * time.Second)
	if err := getAs(alice, s, "k1"); err != nil {
		t.Fatalf("a token used within its TTL: %v", err)
	}
	clock.Advance(50 * time.Second) // 50 s after its last use
	if err := getAs(alice, s, "k1"); err != nil {
		t.Fatalf("a token renewed by its use: %v", err)
	}
	clock.Advance(61 * time.Second)
	if err := getAs(alice, s, "k1"); !errors.Is(err, auth.ErrInvalidAuthToken) {
		t.Fatalf("an expired token: %v, want %v", err, auth.ErrInvalidAuthToken)
	}
	if err := getAs(WithCredentials(context.Background(), "forgedforgedforg.3", ""), s, "k1"); !errors.Is(err, auth.ErrInvalidAuthToken) {
		t.Fatalf("a forged token: %v, want %v", err, auth.ErrInvalidAuthToken)
	}
}

// TestJWTTokens: with --auth-token jwt the token verifies on its own, a
// tampered one is refused, and it expires after its ttl on the member's
// clock.
func TestJWTTokens(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	privFile, pubFile := filepath.Join(dir, "priv.pem"), filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := clocktest.NewFake()
	s := startServerWith(t, filepath.Join(dir, "data"), testingKnobs{authNow: clock.Now}, func(c *Config) {
		c.BcryptCost = 4
		c.AuthToken = "jwt,pub-key=" + pubFile + ",priv-key=" + privFile + ",sign-method=ES256,ttl=5m"
	})
	setupAuth(t, s)
	r, err := s.Authenticate(context.Background(), &pb.AuthenticateRequest{Name: "alice", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(r.Token, ".") != 2 {
		t.Fatalf("token %q is not a JWT", r.Token)
	}
	if err := getAs(WithCredentials(context.Background(), r.Token, ""), s, "k1"); err != nil {
		t.Fatalf("a fresh JWT: %v", err)
	}
	parts := strings.Split(r.Token, ".")
	mid := []byte(parts[2])
	i := len(mid) / 2
	if mid[i] == 'A' {
		mid[i] = 'B'
	} else {
		mid[i] = 'A'
	}
	forged := parts[0] + "." + parts[1] + "." + string(mid)
	if err := getAs(WithCredentials(context.Background(), forged, ""), s, "k1"); !errors.Is(err, auth.ErrInvalidAuthToken) {
		t.Fatalf("a tampered JWT: %v, want %v", err, auth.ErrInvalidAuthToken)
	}
	clock.Advance(6 * time.Minute)
	if err := getAs(WithCredentials(context.Background(), r.Token, ""), s, "k1"); !errors.Is(err, auth.ErrInvalidAuthToken) {
		t.Fatalf("an expired JWT: %v, want %v", err, auth.ErrInvalidAuthToken)
	}
}

// TestClientCertCNIsTheUser: with ClientCertAuth, a request without a
// token runs as its certificate's CN, even an empty one; a token wins over
// the CN; without ClientCertAuth the CN is ignored.
func TestClientCertCNIsTheUser(t *testing.T) {
	for _, on := range []bool{true, false} {
		s := startServer(t, t.TempDir(), func(c *Config) { c.BcryptCost = 4; c.ClientCertAuth = on })
		setupAuth(t, s)
		byCN := WithCredentials(context.Background(), "", "alice")
		err := putAs(byCN, s, "k1")
		if on && err != nil {
			t.Fatalf("put as CN alice: %v", err)
		}
		if !on && !errors.Is(err, auth.ErrUserEmpty) {
			t.Fatalf("put as CN alice without ClientCertAuth: %v, want %v", err, auth.ErrUserEmpty)
		}
		if err := putAs(WithCredentials(context.Background(), "", "root"), s, "z"); on && err != nil {
			t.Fatalf("put z as CN root: %v", err)
		}
		if err := putAs(WithCredentials(context.Background(), "", "alice"), s, "z"); !errors.Is(err, auth.ErrPermissionDenied) && on {
			t.Fatalf("put z as CN alice: %v, want %v", err, auth.ErrPermissionDenied)
		}
		// A verified certificate without a CN is the user "", whom nobody
		// granted anything (etcd's permission denied), unlike no
		// certificate at all.
		want := auth.ErrUserEmpty
		if on {
			want = auth.ErrPermissionDenied
		}
		if err := putAs(WithCertCredentials(context.Background(), "", ""), s, "k1"); !errors.Is(err, want) {
			t.Fatalf("put k1 with a certificate without a CN: %v, want %v", err, want)
		}
		if err := putAs(WithCertCredentials(context.Background(), "alicetoken-forged.1", "root"), s, "k1"); !errors.Is(err, auth.ErrInvalidAuthToken) {
			t.Fatalf("put k1 with CN root and a bad token: %v, want %v (the token takes precedence)", err, auth.ErrInvalidAuthToken)
		}
		s.Stop()
	}
}

// TestAuthReloadsAfterSnapshot: a member that was down while auth was set
// up catches up from a snapshot (the raft log was compacted past it) and
// enforces the same rules, with the same auth revision.
func TestAuthReloadsAfterSnapshot(t *testing.T) {
	ms := []*peerMember{listenPeer(t, "a"), listenPeer(t, "b"), listenPeer(t, "c")}
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.name+"="+m.url)
	}
	for _, m := range ms {
		m.cfg = peerConfig(t, m, strings.Join(parts, ","))
		m.cfg.BcryptCost = 4
		m.start(t)
	}
	var leader *peerMember
	waitUntil(t, "a leader", func() bool {
		for _, m := range ms {
			if m.s.Leader() == m.s.MemberID() {
				leader = m
				return true
			}
		}
		return false
	})
	var lagging *peerMember
	for _, m := range ms {
		if m != leader {
			lagging = m
			break
		}
	}
	addr := strings.TrimPrefix(lagging.url, "http://")
	lagging.stop()

	setupAuth(t, leader.s)
	root := as(t, leader.s, "root", "rootpw")
	// Three times SnapshotCount: the log is compacted to 5 entries behind
	// the applied index (peerMember's knob), far past the lagging member.
	for i := range 60 {
		if err := putAs(root, leader.s, "x"+string(rune('a'+i%26))); err != nil {
			t.Fatal(err)
		}
	}

	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	lagging.l = l
	lagging.start(t)
	rev := leader.s.auth.st().Revision()
	waitUntil(t, "the lagging member to catch up", func() bool {
		return lagging.s.applied.Load() >= leader.s.applied.Load() && lagging.s.auth.st().Revision() == rev
	})
	if !lagging.s.AuthEnabled() {
		t.Fatal("auth is not enabled on the member that caught up")
	}
	checkEnforced(t, lagging.s)
}

// TestBcryptWorkIsBounded: password hashing and checking run in at most
// bcryptSlots goroutines at once (a core fewer than GOMAXPROCS), so an
// Authenticate flood queues instead of taking every core; a caller whose
// context ends while it queues gives up with ErrCanceled.
func TestBcryptWorkIsBounded(t *testing.T) {
	for procs, want := range map[int]int{1: 1, 2: 1, 4: 3, 16: 15} {
		if got := bcryptSlots(procs); got != want {
			t.Errorf("bcryptSlots(%d) = %d, want %d", procs, got, want)
		}
	}
	a := &authority{bcrypt: make(chan struct{}, bcryptSlots(runtime.GOMAXPROCS(0)))}
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 * cap(a.bcrypt) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.withBcrypt(context.Background(), func() error {
				n := inFlight.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				<-release
				inFlight.Add(-1)
				return nil
			})
		}()
	}
	waitUntil(t, "every slot to be taken", func() bool { return int(inFlight.Load()) == cap(a.bcrypt) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.withBcrypt(ctx, func() error { return nil }); !errors.Is(err, ErrCanceled) {
		t.Fatalf("a canceled caller waiting for a slot: %v, want %v", err, ErrCanceled)
	}
	close(release)
	wg.Wait()
	if got := int(most.Load()); got != cap(a.bcrypt) {
		t.Fatalf("at most %d bcrypt computations at once, want %d (bcryptSlots)", got, cap(a.bcrypt))
	}
}

// TestLeaseRevokeSeesKeysAttachedInTheSameBatch: a revoke checked at apply
// sees the keys attached to the lease by earlier entries of the same apply
// batch, so a user cannot revoke a lease (and delete its keys) that root
// has just attached a key of theirs to.
func TestLeaseRevokeSeesKeysAttachedInTheSameBatch(t *testing.T) {
	var hold atomic.Bool
	gate := make(chan struct{})
	s := startServerWith(t, t.TempDir(), testingKnobs{beforeApply: func() {
		if hold.Load() {
			<-gate
		}
	}}, func(c *Config) { c.BcryptCost = 4 })
	setupAuth(t, s)
	alice := as(t, s, "alice", "pw")
	root := as(t, s, "root", "rootpw")
	l, err := s.LeaseGrant(alice, &pb.LeaseGrantRequest{TTL: 600})
	if err != nil {
		t.Fatal(err)
	}

	// The apply loop holds a first entry while the two that matter are
	// committed behind it; it then takes both into one group.
	hold.Store(true)
	firstErr := make(chan error, 1)
	go func() { firstErr <- putAs(root, s, "first") }()
	waitUntil(t, "the first put to be committed", func() bool { return s.node.CommitIndex() >= s.applied.Load()+1 })
	putErr := make(chan error, 1)
	go func() {
		_, err := s.Put(root, &pb.PutRequest{Key: []byte("secret"), Value: []byte("v"), Lease: l.ID})
		putErr <- err
	}()
	waitUntil(t, "root's put to be committed", func() bool { return s.node.CommitIndex() >= s.applied.Load()+2 })
	revokeErr := make(chan error, 1)
	go func() {
		_, err := s.LeaseRevoke(alice, &pb.LeaseRevokeRequest{ID: l.ID})
		revokeErr <- err
	}()
	waitUntil(t, "all three to be committed", func() bool { return s.node.CommitIndex() >= s.applied.Load()+3 })
	hold.Store(false)
	close(gate)
	if err := <-firstErr; err != nil {
		t.Fatal(err)
	}
	if err := <-putErr; err != nil {
		t.Fatalf("root's put: %v", err)
	}
	if err := <-revokeErr; !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("alice revoking a lease with root's key on it: %v, want %v", err, auth.ErrPermissionDenied)
	}
	r, err := s.Range(root, &pb.RangeRequest{Key: []byte("secret")})
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("root's key after alice's refused revoke: %v %v", r, err)
	}
}

// TestAuthenticateFloodLeavesOthersServed: while many clients log in at
// once with bcrypt at its default cost (10), keeping every bcrypt slot busy
// and more callers queued for one, other logged-in clients' puts and
// linearizable reads keep being served, and the flood's logins all succeed
// (queued, not refused, as etcd's are). It asserts progress, not times:
// the other clients finish all their work while the flood is still going.
func TestAuthenticateFloodLeavesOthersServed(t *testing.T) {
	s := startServer(t, t.TempDir(), func(c *Config) { c.BcryptCost = auth.DefaultBcryptCost; c.UnsafeNoFsync = true })
	setupAuth(t, s)
	alice := as(t, s, "alice", "pw")

	floodCtx, stopFlood := context.WithCancel(context.Background())
	defer stopFlood()
	var (
		flood      sync.WaitGroup
		logins     atomic.Int64
		floodErr   atomic.Value
		floodCount = 16
	)
	for range floodCount {
		flood.Add(1)
		go func() {
			defer flood.Done()
			for floodCtx.Err() == nil {
				_, err := s.Authenticate(floodCtx, &pb.AuthenticateRequest{Name: "alice", Password: "pw"})
				switch {
				case err == nil:
					logins.Add(1)
				case floodCtx.Err() == nil:
					floodErr.Store(err)
				}
			}
		}()
	}
	// The flood is on once every slot is busy and callers queue for one.
	waitUntil(t, "the flood to fill every bcrypt slot", func() bool { return len(s.auth.bcrypt) == cap(s.auth.bcrypt) })

	const workers, ops = 4, 25
	var (
		others     sync.WaitGroup
		served     atomic.Int64
		duringBusy atomic.Int64 // ops answered while every bcrypt slot was taken
		otherErr   atomic.Value
	)
	for w := range workers {
		others.Add(1)
		go func() {
			defer others.Done()
			for i := range ops {
				key := fmt.Sprintf("k%d-%d", w, i)
				if err := putAs(alice, s, key); err != nil {
					otherErr.Store(fmt.Errorf("put %s: %w", key, err))
					return
				}
				if err := getAs(alice, s, key); err != nil {
					otherErr.Store(fmt.Errorf("get %s: %w", key, err))
					return
				}
				served.Add(2)
				if len(s.auth.bcrypt) == cap(s.auth.bcrypt) {
					duringBusy.Add(1)
				}
			}
		}()
	}
	others.Wait()
	loginsDuring := logins.Load()
	// The flood's own logins get through too.
	waitUntil(t, "a login of the flood to succeed", func() bool { return logins.Load() > 0 || floodErr.Load() != nil })
	stopFlood()
	flood.Wait()

	if err, _ := otherErr.Load().(error); err != nil {
		t.Fatalf("a request during the flood failed: %v", err)
	}
	if err, _ := floodErr.Load().(error); err != nil {
		t.Fatalf("a login of the flood failed: %v (want every caller queued and served)", err)
	}
	if got := served.Load(); got != 2*workers*ops {
		t.Fatalf("%d requests served during the flood, want %d", got, 2*workers*ops)
	}
	// The others were served while the slots were busy, not only in gaps
	// of the flood.
	if busy := duringBusy.Load(); busy < workers*ops/2 {
		t.Fatalf("only %d of %d put+get pairs finished while every bcrypt slot was taken", busy, workers*ops)
	}
	t.Logf("%d requests served while %d clients logging in at once completed %d logins", served.Load(), floodCount, loginsDuring)
}
