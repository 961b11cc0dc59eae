package auth

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	etcdauth "go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// etcdAuth is etcd 3.7's own auth store, in process on its own bbolt
// backend: the reference every answer of ours is compared with.
type etcdAuth struct {
	as etcdauth.AuthStore
}

func newEtcdAuth(t *testing.T) *etcdAuth {
	lg := zap.NewNop()
	be := backend.NewDefaultBackend(lg, filepath.Join(t.TempDir(), "etcd.db"))
	tp, err := etcdauth.NewTokenProvider(lg, "simple", func(uint64) <-chan struct{} {
		ch := make(chan struct{})
		close(ch)
		return ch
	}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	as := etcdauth.NewAuthStore(lg, schema.NewAuthBackend(lg, be), tp, bcrypt.MinCost)
	t.Cleanup(func() {
		as.Close()
		be.Close()
	})
	return &etcdAuth{as: as}
}

// etcdErrText is the text a client of etcd sees for err: etcd's server maps
// its auth package's errors to rpctypes' statuses (v3rpc's toGRPCErrorMap)
// and passes any other error's own text with code Unknown.
func etcdErrText(err error) string {
	if err == nil {
		return "<nil>"
	}
	m := map[error]error{
		etcdauth.ErrRootUserNotExist:     rpctypes.ErrGRPCRootUserNotExist,
		etcdauth.ErrRootRoleNotExist:     rpctypes.ErrGRPCRootRoleNotExist,
		etcdauth.ErrUserAlreadyExist:     rpctypes.ErrGRPCUserAlreadyExist,
		etcdauth.ErrUserEmpty:            rpctypes.ErrGRPCUserEmpty,
		etcdauth.ErrUserNotFound:         rpctypes.ErrGRPCUserNotFound,
		etcdauth.ErrRoleAlreadyExist:     rpctypes.ErrGRPCRoleAlreadyExist,
		etcdauth.ErrRoleNotFound:         rpctypes.ErrGRPCRoleNotFound,
		etcdauth.ErrRoleEmpty:            rpctypes.ErrGRPCRoleEmpty,
		etcdauth.ErrAuthFailed:           rpctypes.ErrGRPCAuthFailed,
		etcdauth.ErrPermissionNotGiven:   rpctypes.ErrGRPCPermissionNotGiven,
		etcdauth.ErrPermissionDenied:     rpctypes.ErrGRPCPermissionDenied,
		etcdauth.ErrRoleNotGranted:       rpctypes.ErrGRPCRoleNotGranted,
		etcdauth.ErrPermissionNotGranted: rpctypes.ErrGRPCPermissionNotGranted,
		etcdauth.ErrAuthNotEnabled:       rpctypes.ErrGRPCAuthNotEnabled,
		etcdauth.ErrInvalidAuthToken:     rpctypes.ErrGRPCInvalidAuthToken,
		etcdauth.ErrInvalidAuthMgmt:      rpctypes.ErrGRPCInvalidAuthMgmt,
		etcdauth.ErrAuthOldRevision:      rpctypes.ErrGRPCAuthOldRevision,
	}
	if g, ok := m[err]; ok {
		return rpctypes.ErrorDesc(g)
	}
	return err.Error()
}

// authGen draws random auth operations over small name and key alphabets,
// so that names collide, permissions overlap and touch, and root turns up.
type authGen struct {
	rng    *rand.Rand
	hashes map[string]string // password → base64 bcrypt hash, shared by both stores
	index  uint64            // the raft index of the next Authenticate
	tokens []string          // every token issued, live or not
}

var (
	genUsers     = []string{"root", "alice", "bob", "carol", ""}
	genRoles     = []string{"root", "r1", "r2", "r3", ""}
	genPasswords = []string{"pw1", "pw2", ""}
	// genKeys include neighbours ("a", "a\x00", "aa", "b") so that ranges
	// meet exactly at their ends.
	genKeys = []string{"a", "a\x00", "aa", "ab", "b", "ba", "c", "d", "\x00", "\xff"}
	// genEnds add the one-key form "" and the from-key form "\x00".
	genEnds = []string{"", "", "\x00", "\x00", "a", "a\x00", "aa", "ab", "b", "ba", "c", "d", "e", "\xff"}
)

func (g *authGen) pick(s []string) string { return s[g.rng.IntN(len(s))] }

func (g *authGen) hash(t *testing.T, pw string) string {
	h, ok := g.hashes[pw]
	if !ok {
		h = mustHash(t, pw)
		g.hashes[pw] = h
	}
	return h
}

// op applies one random operation to both stores and returns a description,
// our answer and etcd's, each as a response and an error text.
func (g *authGen) op(t *testing.T, s *Store, w Writer, e *etcdAuth) (string, proto.Message, string, proto.Message, string) {
	ours := func(m proto.Message, err error) (proto.Message, string) { return m, errText(err) }
	theirs := func(m proto.Message, err error) (proto.Message, string) {
		if err != nil {
			m = nil
		}
		return m, etcdErrText(err)
	}
	var (
		desc   string
		om, em proto.Message
		oe, ee string
	)
	switch n := g.rng.IntN(100); {
	case n < 2:
		desc = "AuthEnable"
		om, oe = ours(s.AuthEnable(w, &pb.AuthEnableRequest{}))
		em, ee = theirs(&pb.AuthEnableResponse{}, e.as.AuthEnable())
	case n < 3:
		desc = "AuthDisable"
		om, oe = ours(s.AuthDisable(w, &pb.AuthDisableRequest{}))
		e.as.AuthDisable()
		em, ee = &pb.AuthDisableResponse{}, "<nil>"
	case n < 16:
		r := &pb.AuthUserAddRequest{Name: g.pick(genUsers)}
		if g.rng.IntN(4) == 0 {
			r.Options = &authpb.UserAddOptions{NoPassword: true}
		} else {
			r.HashedPassword = g.hash(t, g.pick(genPasswords))
			if g.rng.IntN(3) == 0 {
				r.Options = &authpb.UserAddOptions{}
			}
		}
		desc = fmt.Sprintf("UserAdd %q nopassword=%v", r.Name, r.Options.GetNoPassword())
		om, oe = ours(s.UserAdd(w, proto.Clone(r).(*pb.AuthUserAddRequest)))
		em, ee = theirs(e.as.UserAdd(r))
	case n < 21:
		r := &pb.AuthUserDeleteRequest{Name: g.pick(genUsers)}
		desc = fmt.Sprintf("UserDelete %q", r.Name)
		om, oe = ours(s.UserDelete(w, proto.Clone(r).(*pb.AuthUserDeleteRequest)))
		em, ee = theirs(e.as.UserDelete(r))
	case n < 24:
		r := &pb.AuthUserChangePasswordRequest{Name: g.pick(genUsers)}
		if pw := g.pick(genPasswords); pw != "" {
			r.HashedPassword = g.hash(t, pw)
		}
		desc = fmt.Sprintf("UserChangePassword %q", r.Name)
		om, oe = ours(s.UserChangePassword(w, proto.Clone(r).(*pb.AuthUserChangePasswordRequest)))
		em, ee = theirs(e.as.UserChangePassword(r))
	case n < 38:
		r := &pb.AuthUserGrantRoleRequest{User: g.pick(genUsers), Role: g.pick(genRoles)}
		desc = fmt.Sprintf("UserGrantRole %q %q", r.User, r.Role)
		om, oe = ours(s.UserGrantRole(w, proto.Clone(r).(*pb.AuthUserGrantRoleRequest)))
		em, ee = theirs(e.as.UserGrantRole(r))
	case n < 43:
		r := &pb.AuthUserRevokeRoleRequest{Name: g.pick(genUsers), Role: g.pick(genRoles)}
		desc = fmt.Sprintf("UserRevokeRole %q %q", r.Name, r.Role)
		om, oe = ours(s.UserRevokeRole(w, proto.Clone(r).(*pb.AuthUserRevokeRoleRequest)))
		em, ee = theirs(e.as.UserRevokeRole(r))
	case n < 47:
		r := &pb.AuthUserGetRequest{Name: g.pick(genUsers)}
		desc = fmt.Sprintf("UserGet %q", r.Name)
		om, oe = ours(s.UserGet(r))
		em, ee = theirs(e.as.UserGet(r))
	case n < 49:
		desc = "UserList"
		om, oe = ours(s.UserList(&pb.AuthUserListRequest{}))
		em, ee = theirs(e.as.UserList(&pb.AuthUserListRequest{}))
	case n < 57:
		r := &pb.AuthRoleAddRequest{Name: g.pick(genRoles)}
		desc = fmt.Sprintf("RoleAdd %q", r.Name)
		om, oe = ours(s.RoleAdd(w, proto.Clone(r).(*pb.AuthRoleAddRequest)))
		em, ee = theirs(e.as.RoleAdd(r))
	case n < 60:
		r := &pb.AuthRoleDeleteRequest{Role: g.pick(genRoles)}
		desc = fmt.Sprintf("RoleDelete %q", r.Role)
		om, oe = ours(s.RoleDelete(w, proto.Clone(r).(*pb.AuthRoleDeleteRequest)))
		em, ee = theirs(e.as.RoleDelete(r))
	case n < 80:
		r := &pb.AuthRoleGrantPermissionRequest{Name: g.pick(genRoles)}
		if g.rng.IntN(30) != 0 {
			r.Perm = &authpb.Permission{
				PermType: authpb.Permission_Type(g.rng.IntN(3)),
				Key:      []byte(g.pick(genKeys)),
				RangeEnd: []byte(g.pick(genEnds)),
			}
			if g.rng.IntN(30) == 0 {
				r.Perm.Key = nil
			}
		}
		desc = fmt.Sprintf("RoleGrantPermission %q %v", r.Name, r.Perm)
		om, oe = ours(s.RoleGrantPermission(w, proto.Clone(r).(*pb.AuthRoleGrantPermissionRequest)))
		em, ee = theirs(e.as.RoleGrantPermission(r))
	case n < 88:
		r := &pb.AuthRoleRevokePermissionRequest{Role: g.pick(genRoles),
			Key: []byte(g.pick(genKeys)), RangeEnd: []byte(g.pick(genEnds))}
		desc = fmt.Sprintf("RoleRevokePermission %q %q %q", r.Role, r.Key, r.RangeEnd)
		om, oe = ours(s.RoleRevokePermission(w, proto.Clone(r).(*pb.AuthRoleRevokePermissionRequest)))
		em, ee = theirs(e.as.RoleRevokePermission(r))
	case n < 96:
		r := &pb.AuthRoleGetRequest{Role: g.pick(genRoles)}
		desc = fmt.Sprintf("RoleGet %q", r.Role)
		om, oe = ours(s.RoleGet(r))
		em, ee = theirs(e.as.RoleGet(r))
	case n < 98:
		desc = "RoleList"
		om, oe = ours(s.RoleList(&pb.AuthRoleListRequest{}))
		em, ee = theirs(e.as.RoleList(&pb.AuthRoleListRequest{}))
	case n < 99:
		name := g.pick(genUsers)
		g.index++
		prefix := fmt.Sprintf("prefix%d", g.index)
		desc = fmt.Sprintf("Authenticate %q at %d", name, g.index)
		om, oe = ours(s.Authenticate(&pb.InternalAuthenticateRequest{Name: name, SimpleToken: prefix}, g.index))
		ctx := context.WithValue(context.Background(), etcdauth.AuthenticateParamIndex{}, g.index)
		ctx = context.WithValue(ctx, etcdauth.AuthenticateParamSimpleTokenPrefix{}, prefix)
		em, ee = theirs(e.as.Authenticate(ctx, name, ""))
		if r, ok := em.(*pb.AuthenticateResponse); ok && ee == "<nil>" {
			g.tokens = append(g.tokens, r.Token)
		}
	default:
		name, pw := g.pick(genUsers), g.pick(genPasswords)
		desc = fmt.Sprintf("CheckPassword %q %q", name, pw)
		orev, oerr := s.CheckPassword(name, pw)
		erev, eerr := e.as.CheckPassword(name, pw)
		om, oe = &pb.ResponseHeader{Revision: int64(orev)}, errText(oerr)
		em, ee = &pb.ResponseHeader{Revision: int64(erev)}, etcdErrText(eerr)
	}
	if oe != "<nil>" {
		om = nil
	}
	if ee != "<nil>" {
		em = nil
	}
	return desc, om, oe, em, ee
}

// checkCounts tallies the permission checks of a run.
type checkCounts struct {
	total, refused, permittedNonRoot int
	byErr                            map[string]int
	tokens, liveTokens               int
}

func (c *checkCounts) add(o *checkCounts) {
	c.total += o.total
	c.refused += o.refused
	c.permittedNonRoot += o.permittedNonRoot
	c.tokens += o.tokens
	c.liveTokens += o.liveTokens
	for k, v := range o.byErr {
		c.byErr[k] += v
	}
}

// check asks both stores one random permission question and fails the test
// if the answers differ. With auth enabled, the user is any of the names
// (known or not) and the revision the current one, an older one or none.
func (g *authGen) check(s *Store, e *etcdAuth, c *checkCounts) error {
	rev := s.Revision()
	ai := AuthInfo{Username: g.pick(genUsers), Revision: rev}
	switch g.rng.IntN(12) {
	case 0:
		ai.Revision = 0
	case 1:
		ai.Revision = rev - 1
	case 2:
		ai.Revision = rev + 1
	}
	eai := &etcdauth.AuthInfo{Username: ai.Username, Revision: ai.Revision}
	key := []byte(g.pick(genKeys))
	if g.rng.IntN(40) == 0 {
		key = nil
	}
	end := []byte(g.pick(genEnds))
	var desc string
	var oerr, eerr error
	switch g.rng.IntN(4) {
	case 0:
		desc = fmt.Sprintf("IsRangePermitted(%+v, %q, %q)", ai, key, end)
		oerr, eerr = s.IsRangePermitted(ai, key, end), e.as.IsRangePermitted(eai, key, end)
	case 1:
		desc = fmt.Sprintf("IsPutPermitted(%+v, %q)", ai, key)
		oerr, eerr = s.IsPutPermitted(ai, key), e.as.IsPutPermitted(eai, key)
	case 2:
		desc = fmt.Sprintf("IsDeleteRangePermitted(%+v, %q, %q)", ai, key, end)
		oerr, eerr = s.IsDeleteRangePermitted(ai, key, end), e.as.IsDeleteRangePermitted(eai, key, end)
	default:
		desc = fmt.Sprintf("IsAdminPermitted(%+v)", ai)
		oerr, eerr = s.IsAdminPermitted(ai), e.as.IsAdminPermitted(eai)
	}
	if errText(oerr) != etcdErrText(eerr) {
		return fmt.Errorf("%s: we answer %v, etcd %v", desc, oerr, eerr)
	}
	c.total++
	if eerr != nil {
		c.refused++
		c.byErr[etcdErrText(eerr)]++
	} else if s.IsEnabled() && !s.HasRole(ai.Username, rootRole) && ai.Username != "" {
		c.permittedNonRoot++
	}
	return nil
}

// setUp gives both stores root, the users and roles, and enables auth, so
// the random run starts where permission checks matter.
func setUp(t *testing.T, g *authGen, s *Store, w Writer, e *etcdAuth) {
	t.Helper()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range genUsers[:4] {
		r := &pb.AuthUserAddRequest{Name: u, HashedPassword: g.hash(t, "pw1")}
		must(s.UserAdd(w, proto.Clone(r).(*pb.AuthUserAddRequest)))
		must(e.as.UserAdd(r))
	}
	for _, ro := range genRoles[:4] {
		r := &pb.AuthRoleAddRequest{Name: ro}
		must(s.RoleAdd(w, proto.Clone(r).(*pb.AuthRoleAddRequest)))
		must(e.as.RoleAdd(r))
	}
	for i, u := range genUsers[:4] {
		r := &pb.AuthUserGrantRoleRequest{User: u, Role: genRoles[i]}
		must(s.UserGrantRole(w, proto.Clone(r).(*pb.AuthUserGrantRoleRequest)))
		must(e.as.UserGrantRole(r))
	}
	must(s.AuthEnable(w, &pb.AuthEnableRequest{}))
	must(nil, e.as.AuthEnable())
}

// checkToken resolves one issued (or forged) token in both stores.
func (g *authGen) checkToken(s *Store, e *etcdAuth, c *checkCounts) error {
	tok := "forged.1"
	if len(g.tokens) > 0 && g.rng.IntN(10) != 0 {
		tok = g.tokens[g.rng.IntN(len(g.tokens))]
	}
	ctx := context.Background()
	oai, oerr := s.TokenInfo(ctx, tok)
	eai, eerr := e.as.AuthInfoFromCtx(metadata.NewIncomingContext(ctx, metadata.Pairs(rpctypes.TokenFieldNameGRPC, tok)))
	if errText(oerr) != etcdErrText(eerr) || (oai == nil) != (eai == nil) ||
		(oai != nil && (oai.Username != eai.Username || oai.Revision != eai.Revision)) {
		return fmt.Errorf("token %q: we resolve %+v, %v; etcd %+v, %v", tok, oai, oerr, eai, eerr)
	}
	c.tokens++
	if oai != nil {
		c.liveTokens++
	}
	return nil
}

// TestMatchesEtcd runs random auth operations and permission checks against
// our Store and etcd's auth store side by side: every answer (response and
// error text) and the auth status after every step must match. The state
// our writes persisted must load back into the same state at the end.
func TestMatchesEtcd(t *testing.T) {
	seeds := []uint64{1, 2, 3, uint64(time.Now().UnixNano())}
	steps := 3000
	if testing.Short() {
		seeds, steps = seeds[:2], 1000
	}
	all := &checkCounts{byErr: map[string]int{}}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			g := &authGen{rng: rand.New(rand.NewPCG(seed, seed)), hashes: map[string]string{}}
			e := newEtcdAuth(t)
			kv := memKV{}
			tp, err := NewTokenProvider("simple", TokenConfig{TTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			s := New(Options{Tokens: tp})
			c := &checkCounts{byErr: map[string]int{}}
			setUp(t, g, s, kv, e)
			for step := 0; step < steps; step++ {
				desc, om, oe, em, ee := g.op(t, s, kv, e)
				if oe != ee {
					t.Fatalf("step %d: %s: we answer %s, etcd %s", step, desc, oe, ee)
				}
				if !proto.Equal(om, em) {
					t.Fatalf("step %d: %s: we answer %v, etcd %v", step, desc, om, em)
				}
				st, _ := s.AuthStatus(&pb.AuthStatusRequest{})
				if st.Enabled != e.as.IsAuthEnabled() || st.AuthRevision != e.as.Revision() {
					t.Fatalf("step %d: after %s: status %v, etcd enabled=%v revision=%d",
						step, desc, st, e.as.IsAuthEnabled(), e.as.Revision())
				}
				for range 5 {
					if err := g.check(s, e, c); err != nil {
						t.Fatalf("step %d: %v", step, err)
					}
				}
				if err := g.checkToken(s, e, c); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
			}
			t.Logf("%d checks: %d refused by both (%v), %d permitted to a non-root user with auth enabled; none permitted where etcd refused",
				c.total, c.refused, c.byErr, c.permittedNonRoot)
			t.Logf("%d token lookups, %d resolved to a user", c.tokens, c.liveTokens)
			all.add(c)

			loaded, err := Load(kv, Options{})
			if err != nil {
				t.Fatal(err)
			}
			want, got := memKV{}, memKV{}
			if err := s.Save(want); err != nil {
				t.Fatal(err)
			}
			if err := loaded.Save(got); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(want) != fmt.Sprint(got) {
				t.Fatalf("state loaded from the applied writes differs:\n got %q\nwant %q", got, want)
			}
		})
	}
	// One seed may spend its run with auth mostly off, or its tokens
	// revoked; all of them together must have seen every outcome.
	if !t.Failed() && (all.refused == 0 || all.permittedNonRoot == 0 ||
		all.byErr[ErrPermissionDenied.Error()] == 0 || all.liveTokens == 0) {
		t.Fatalf("the runs did not exercise every outcome: %+v", all)
	}
}

// TestOracleCatchesDivergence checks the checker: when our store permits
// one range more than etcd's, random checks find it.
func TestOracleCatchesDivergence(t *testing.T) {
	g := &authGen{rng: rand.New(rand.NewPCG(9, 9)), hashes: map[string]string{}}
	e := newEtcdAuth(t)
	s := New(Options{})
	kv := memKV{}
	setUp(t, g, s, kv, e)
	c := &checkCounts{byErr: map[string]int{}}
	for range 200 {
		if err := g.check(s, e, c); err != nil {
			t.Fatalf("the stores differ before the divergence: %v", err)
		}
	}
	// Ours alone grants bob's role r2 read on [b, c); etcd adds a role
	// instead, so both revisions move on together and only the permission
	// differs.
	if _, err := s.RoleGrantPermission(kv, &pb.AuthRoleGrantPermissionRequest{Name: "r2",
		Perm: &authpb.Permission{PermType: authpb.READ, Key: []byte("b"), RangeEnd: []byte("c")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.as.RoleAdd(&pb.AuthRoleAddRequest{Name: "extra"}); err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		if err := g.check(s, e, c); err != nil {
			if !strings.Contains(err.Error(), "we answer <nil>, etcd auth: permission denied") {
				t.Fatalf("unexpected difference: %v", err)
			}
			t.Logf("found after %d checks: %v", i+1, err)
			return
		}
	}
	t.Fatal("5000 random checks did not notice a permission etcd does not grant")
}
