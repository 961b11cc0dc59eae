package auth

import (
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// fixture is a Store with its persisted form and short ways to apply.
type fixture struct {
	t  *testing.T
	s  *Store
	kv memKV
}

func newFixture(t *testing.T) *fixture {
	return &fixture{t: t, s: New(Options{}), kv: memKV{}}
}

func (f *fixture) ok(_ any, err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

// errOf returns the error of a two-valued call.
func errOf(_ any, err error) error { return err }

func (f *fixture) fails(want error, err error) {
	f.t.Helper()
	if !errors.Is(err, want) {
		f.t.Fatalf("error %v, want %v", err, want)
	}
}

func (f *fixture) addUser(name string, roles ...string) {
	f.t.Helper()
	f.ok(f.s.UserAdd(f.kv, &pb.AuthUserAddRequest{Name: name, HashedPassword: mustHash(f.t, "pw")}))
	for _, r := range roles {
		if r != rootRole && !f.hasRole(r) {
			f.ok(f.s.RoleAdd(f.kv, &pb.AuthRoleAddRequest{Name: r}))
		}
		f.ok(f.s.UserGrantRole(f.kv, &pb.AuthUserGrantRoleRequest{User: name, Role: r}))
	}
}

func (f *fixture) hasRole(name string) bool {
	_, err := f.s.RoleGet(&pb.AuthRoleGetRequest{Role: name})
	return err == nil
}

func (f *fixture) grant(role string, p *authpb.Permission) {
	f.t.Helper()
	f.ok(f.s.RoleGrantPermission(f.kv, &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: p}))
}

func (f *fixture) enable() {
	f.t.Helper()
	f.ok(f.s.AuthEnable(f.kv, &pb.AuthEnableRequest{}))
}

func TestErrorTextsAreEtcds(t *testing.T) {
	for ours, theirs := range map[error]error{
		ErrRootUserNotExist: rpctypes.ErrGRPCRootUserNotExist, ErrRootRoleNotExist: rpctypes.ErrGRPCRootRoleNotExist,
		ErrUserAlreadyExist: rpctypes.ErrGRPCUserAlreadyExist, ErrUserEmpty: rpctypes.ErrGRPCUserEmpty,
		ErrUserNotFound: rpctypes.ErrGRPCUserNotFound, ErrRoleAlreadyExist: rpctypes.ErrGRPCRoleAlreadyExist,
		ErrRoleNotFound: rpctypes.ErrGRPCRoleNotFound, ErrRoleEmpty: rpctypes.ErrGRPCRoleEmpty,
		ErrAuthFailed: rpctypes.ErrGRPCAuthFailed, ErrPermissionNotGiven: rpctypes.ErrGRPCPermissionNotGiven,
		ErrPermissionDenied: rpctypes.ErrGRPCPermissionDenied, ErrRoleNotGranted: rpctypes.ErrGRPCRoleNotGranted,
		ErrPermissionNotGranted: rpctypes.ErrGRPCPermissionNotGranted, ErrAuthNotEnabled: rpctypes.ErrGRPCAuthNotEnabled,
		ErrInvalidAuthToken: rpctypes.ErrGRPCInvalidAuthToken, ErrInvalidAuthMgmt: rpctypes.ErrGRPCInvalidAuthMgmt,
		ErrAuthOldRevision: rpctypes.ErrGRPCAuthOldRevision,
	} {
		if ours.Error() != rpctypes.ErrorDesc(theirs) {
			t.Errorf("%q, etcd's client sees %q", ours, rpctypes.ErrorDesc(theirs))
		}
	}
}

func TestAuthEnableNeedsRoot(t *testing.T) {
	f := newFixture(t)
	f.fails(ErrRootUserNotExist, errOf(f.s.AuthEnable(f.kv, &pb.AuthEnableRequest{})))
	f.addUser("root")
	f.fails(ErrRootRoleNotExist, errOf(f.s.AuthEnable(f.kv, &pb.AuthEnableRequest{})))
	// Role root may be granted before it exists.
	f.ok(f.s.UserGrantRole(f.kv, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}))
	rev := f.s.Revision()
	f.enable()
	if !f.s.IsEnabled() || f.s.Revision() != rev {
		t.Fatalf("enabled %v revision %d, want enabled at unchanged revision %d", f.s.IsEnabled(), f.s.Revision(), rev)
	}
	f.enable() // enabling again is a no-op
	f.fails(ErrInvalidAuthMgmt, errOf(f.s.UserDelete(f.kv, &pb.AuthUserDeleteRequest{Name: "root"})))
	f.fails(ErrInvalidAuthMgmt, errOf(f.s.UserRevokeRole(f.kv, &pb.AuthUserRevokeRoleRequest{Name: "root", Role: "root"})))
	f.fails(ErrInvalidAuthMgmt, errOf(f.s.RoleDelete(f.kv, &pb.AuthRoleDeleteRequest{Role: "root"})))
	f.ok(f.s.AuthDisable(f.kv, &pb.AuthDisableRequest{}))
	if f.s.IsEnabled() || f.s.Revision() != rev+1 {
		t.Fatalf("enabled %v revision %d after disable, want disabled at %d", f.s.IsEnabled(), f.s.Revision(), rev+1)
	}
	f.ok(f.s.UserRevokeRole(f.kv, &pb.AuthUserRevokeRoleRequest{Name: "root", Role: "root"}))
	f.ok(f.s.UserDelete(f.kv, &pb.AuthUserDeleteRequest{Name: "root"}))
}

func TestRevisionCountsChanges(t *testing.T) {
	f := newFixture(t)
	if f.s.Revision() != 1 {
		t.Fatalf("new store at revision %d, want 1", f.s.Revision())
	}
	f.addUser("u", "r")                                                                                          // 3 changes
	f.ok(f.s.UserGrantRole(f.kv, &pb.AuthUserGrantRoleRequest{User: "u", Role: "r"}))                            // duplicate: none
	f.fails(ErrRoleNotFound, errOf(f.s.UserGrantRole(f.kv, &pb.AuthUserGrantRoleRequest{User: "u", Role: "x"}))) // refused: none
	f.grant("r", permission(authpb.READ, "a", ""))                                                               // 1
	f.grant("r", permission(authpb.WRITE, "a", ""))                                                              // type change: 1
	if got := f.s.Revision(); got != 6 {
		t.Fatalf("revision %d, want 6", got)
	}
	resp, err := f.s.RoleGet(&pb.AuthRoleGetRequest{Role: "r"})
	f.ok(resp, err)
	if want := []*authpb.Permission{permission(authpb.WRITE, "a", "")}; !protoSliceEqual(resp.Perm, want) {
		t.Fatalf("role r has %v, want %v", resp.Perm, want)
	}
}

func protoSliceEqual[M proto.Message](a, b []M) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestRoleDeleteTakesItFromUsers(t *testing.T) {
	f := newFixture(t)
	f.addUser("u", "r1", "r2")
	f.addUser("v", "r2")
	f.ok(f.s.RoleDelete(f.kv, &pb.AuthRoleDeleteRequest{Role: "r2"}))
	for user, want := range map[string][]string{"u": {"r1"}, "v": nil} {
		resp, err := f.s.UserGet(&pb.AuthUserGetRequest{Name: user})
		f.ok(resp, err)
		if !proto.Equal(resp, &pb.AuthUserGetResponse{Roles: want}) {
			t.Errorf("user %s has roles %v, want %v", user, resp.Roles, want)
		}
	}
}

func TestPermissionChecks(t *testing.T) {
	f := newFixture(t)
	f.addUser("root", "root")
	f.addUser("reader", "ro")
	f.addUser("writer", "wo", "ro2")
	f.grant("ro", permission(authpb.READ, "a", "c"))
	f.grant("ro", permission(authpb.READ, "from", "\x00"))
	f.grant("wo", permission(authpb.WRITE, "k", ""))
	f.grant("ro2", permission(authpb.READWRITE, "c", "e"))
	// Before auth is on, everything is permitted, even to nobody.
	if err := f.s.IsPutPermitted(AuthInfo{}, []byte("x")); err != nil {
		t.Fatalf("disabled auth refused a put: %v", err)
	}
	f.enable()
	rev := f.s.Revision()
	reader, writer := AuthInfo{"reader", rev}, AuthInfo{"writer", rev}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"reader reads inside", f.s.IsRangePermitted(reader, []byte("a"), []byte("b")), nil},
		{"reader reads from key on", f.s.IsRangePermitted(reader, []byte("fromz"), []byte("\x00")), nil},
		{"reader may not read across the gap", f.s.IsRangePermitted(reader, []byte("b"), []byte("d")), ErrPermissionDenied},
		{"reader may not write", f.s.IsPutPermitted(reader, []byte("a")), ErrPermissionDenied},
		{"writer writes its key", f.s.IsPutPermitted(writer, []byte("k")), nil},
		{"writer may not read its write-only key", f.s.IsRangePermitted(writer, []byte("k"), nil), ErrPermissionDenied},
		{"writer deletes inside readwrite", f.s.IsDeleteRangePermitted(writer, []byte("c"), []byte("d")), nil},
		{"writer may not delete past it", f.s.IsDeleteRangePermitted(writer, []byte("c"), []byte("\x00")), ErrPermissionDenied},
		{"root may do anything", f.s.IsDeleteRangePermitted(AuthInfo{"root", rev}, []byte("\x00"), []byte("\x00")), nil},
		{"no user", f.s.IsRangePermitted(AuthInfo{}, []byte("a"), nil), ErrUserEmpty},
		{"old revision", f.s.IsRangePermitted(AuthInfo{"reader", rev - 1}, []byte("a"), nil), ErrAuthOldRevision},
		{"unknown user", f.s.IsRangePermitted(AuthInfo{"nobody", rev}, []byte("a"), nil), ErrPermissionDenied},
		{"admin: root", f.s.IsAdminPermitted(AuthInfo{"root", 0}), nil},
		{"admin: reader", f.s.IsAdminPermitted(reader), ErrPermissionDenied},
		{"admin: unknown", f.s.IsAdminPermitted(AuthInfo{"nobody", rev}), ErrUserNotFound},
		{"admin: nobody", f.s.IsAdminPermitted(AuthInfo{}), ErrUserEmpty},
		{"reader gets itself", f.s.CanGetUser(reader, "reader"), nil},
		{"reader may not get writer", f.s.CanGetUser(reader, "writer"), ErrPermissionDenied},
		{"reader gets its role", f.s.CanGetRole(reader, "ro"), nil},
		{"reader may not get another role", f.s.CanGetRole(reader, "wo"), ErrPermissionDenied},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) || (tt.want == nil && tt.err != nil) {
			t.Errorf("%s: %v, want %v", tt.name, tt.err, tt.want)
		}
	}

	// A change of permissions shows at once: the cache follows the revision.
	f.ok(f.s.RoleRevokePermission(f.kv, &pb.AuthRoleRevokePermissionRequest{Role: "ro", Key: []byte("a"), RangeEnd: []byte("c")}))
	if err := f.s.IsRangePermitted(AuthInfo{"reader", f.s.Revision()}, []byte("a"), []byte("b")); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("revoked read still permitted: %v", err)
	}
}

func TestNeedsAdmin(t *testing.T) {
	for _, tt := range []struct {
		r    *pb.InternalRaftRequest
		want bool
	}{
		{&pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{}}, true},
		{&pb.InternalRaftRequest{AuthRoleList: &pb.AuthRoleListRequest{}}, true},
		{&pb.InternalRaftRequest{AuthUserGet: &pb.AuthUserGetRequest{}}, false},
		{&pb.InternalRaftRequest{AuthStatus: &pb.AuthStatusRequest{}}, false},
		{&pb.InternalRaftRequest{Put: &pb.PutRequest{}}, false},
	} {
		if got := NeedsAdmin(tt.r); got != tt.want {
			t.Errorf("NeedsAdmin(%v) = %v, want %v", tt.r, got, tt.want)
		}
	}
}

func TestPasswords(t *testing.T) {
	f := newFixture(t)
	add := &pb.AuthUserAddRequest{Name: "u", Password: "secret"}
	if err := HashUserAdd(add, 4); err != nil {
		t.Fatal(err)
	}
	if add.Password != "" || add.HashedPassword == "" {
		t.Fatalf("HashUserAdd left %+v", add)
	}
	f.ok(f.s.UserAdd(f.kv, add))
	f.fails(ErrPlainPassword, errOf(f.s.UserAdd(f.kv, &pb.AuthUserAddRequest{Name: "plain", Password: "x"})))
	f.fails(ErrNoPasswordUser, errOf(f.s.UserAdd(f.kv, &pb.AuthUserAddRequest{Name: "bad", HashedPassword: "!!"})))
	f.ok(f.s.UserAdd(f.kv, &pb.AuthUserAddRequest{Name: "nopw", Options: &authpb.UserAddOptions{NoPassword: true}}))
	f.addUser("root", "root")

	if _, err := f.s.CheckPassword("u", "secret"); !errors.Is(err, ErrAuthNotEnabled) {
		t.Fatalf("CheckPassword with auth off: %v", err)
	}
	f.enable()
	if rev, err := f.s.CheckPassword("u", "secret"); err != nil || rev != f.s.Revision() {
		t.Fatalf("CheckPassword = %d, %v; want %d, nil", rev, err, f.s.Revision())
	}
	for _, tt := range []struct {
		user, pw string
		want     error
	}{{"u", "wrong", ErrAuthFailed}, {"nobody", "secret", ErrAuthFailed}, {"nopw", "", ErrNoPasswordUser}} {
		if _, err := f.s.CheckPassword(tt.user, tt.pw); !errors.Is(err, tt.want) {
			t.Errorf("CheckPassword(%q, %q): %v, want %v", tt.user, tt.pw, err, tt.want)
		}
	}

	change := &pb.AuthUserChangePasswordRequest{Name: "u", Password: "new"}
	if err := HashChangePassword(change, 4); err != nil {
		t.Fatal(err)
	}
	f.ok(f.s.UserChangePassword(f.kv, change))
	if _, err := f.s.CheckPassword("u", "new"); err != nil {
		t.Fatalf("new password refused: %v", err)
	}
	if _, err := f.s.CheckPassword("u", "secret"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("old password: %v", err)
	}
	if _, err := HashPassword("x", 99); !errors.Is(err, ErrBcryptCost) {
		t.Fatalf("cost 99: %v", err)
	}
}

// TestWriteFailureLeavesState checks that an apply whose writes fail changes
// nothing in memory.
func TestWriteFailureLeavesState(t *testing.T) {
	f := newFixture(t)
	f.addUser("u", "r1", "r2")
	before := memKV{}
	if err := f.s.Save(before); err != nil {
		t.Fatal(err)
	}
	for n := range 3 {
		_, err := f.s.RoleDelete(&failingWriter{n: n, err: errDisk}, &pb.AuthRoleDeleteRequest{Role: "r1"})
		if !errors.Is(err, errDisk) {
			t.Fatalf("write %d failing: %v", n, err)
		}
		after := memKV{}
		if err := f.s.Save(after); err != nil {
			t.Fatal(err)
		}
		if !equalKV(before, after) {
			t.Fatalf("a failed RoleDelete (write %d) changed the state", n)
		}
	}
}

func equalKV(a, b memKV) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || string(v) != string(w) {
			return false
		}
	}
	return true
}
