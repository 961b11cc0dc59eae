package auth

import (
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// queryAll returns everything a client can read from s, for comparing two
// stores.
func queryAll(t *testing.T, s *Store) []proto.Message {
	t.Helper()
	var out []proto.Message
	st, _ := s.AuthStatus(&pb.AuthStatusRequest{})
	users, _ := s.UserList(&pb.AuthUserListRequest{})
	roles, _ := s.RoleList(&pb.AuthRoleListRequest{})
	out = append(out, st, users, roles)
	for _, u := range users.Users {
		r, err := s.UserGet(&pb.AuthUserGetRequest{Name: u})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	for _, ro := range roles.Roles {
		r, err := s.RoleGet(&pb.AuthRoleGetRequest{Role: ro})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestSaveLoadRoundTrip(t *testing.T) {
	f := newFixture(t)
	f.addUser("root", "root")
	f.addUser("alice", "r1", "r2")
	f.ok(f.s.UserAdd(f.kv, &pb.AuthUserAddRequest{Name: "nopw", Options: &authpb.UserAddOptions{NoPassword: true}}))
	f.grant("r1", permission(authpb.READ, "a", "b"))
	f.grant("r1", permission(authpb.READWRITE, "a", ""))
	f.grant("r2", permission(authpb.WRITE, "x", "\x00"))
	f.ok(f.s.RoleAdd(f.kv, &pb.AuthRoleAddRequest{Name: "gone"}))
	f.ok(f.s.RoleDelete(f.kv, &pb.AuthRoleDeleteRequest{Role: "gone"}))
	f.enable()

	saved := memKV{}
	if err := f.s.Save(saved); err != nil {
		t.Fatal(err)
	}
	// The writes of the applies and a full Save are the same form.
	if !equalKV(saved, f.kv) {
		t.Fatalf("applied writes %q differ from Save %q", f.kv, saved)
	}
	loaded, err := Load(saved, Options{})
	if err != nil {
		t.Fatal(err)
	}
	again := memKV{}
	if err := loaded.Save(again); err != nil {
		t.Fatal(err)
	}
	if !equalKV(saved, again) {
		t.Fatalf("Save after Load differs:\n%q\n%q", again, saved)
	}
	if a, b := queryAll(t, f.s), queryAll(t, loaded); !protoSliceEqual(a, b) {
		t.Fatalf("loaded store answers %v, want %v", b, a)
	}
	rev := loaded.Revision()
	if err := loaded.IsPutPermitted(AuthInfo{"alice", rev}, []byte("xyz")); err != nil {
		t.Fatalf("loaded store refuses a permitted put: %v", err)
	}
	if _, err := loaded.CheckPassword("alice", "pw"); err != nil {
		t.Fatalf("loaded store refuses alice's password: %v", err)
	}
}

func TestLoadEmptyIsNew(t *testing.T) {
	s, err := Load(memKV{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := queryAll(t, s), queryAll(t, New(Options{})); !protoSliceEqual(a, b) {
		t.Fatalf("empty load answers %v, want %v", a, b)
	}
}

func TestLoadCorrupt(t *testing.T) {
	user, _ := proto.Marshal(&authpb.User{Name: []byte("bob")})
	for name, kv := range map[string]memKV{
		"enabled flag":     {"a/enabled": {2}},
		"short revision":   {"a/revision": {1, 2}},
		"undecodable user": {"a/user/x": {0xff, 0xff}},
		"misnamed user":    {"a/user/alice": user},
		"undecodable role": {"a/role/r": {0xff}},
		"unknown key":      {"a/other": {}},
	} {
		if _, err := Load(kv, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

// FuzzLoad feeds Load arbitrary persisted pairs: it must refuse or accept
// them without panicking, and a state it accepts must save and load back
// the same.
func FuzzLoad(f *testing.F) {
	user, _ := proto.Marshal(&authpb.User{Name: []byte("bob"), Roles: []string{"r"}})
	role, _ := proto.Marshal(&authpb.Role{Name: []byte("r"), KeyPermission: []*authpb.Permission{{Key: []byte("a")}}})
	f.Add("user/bob", user, "role/r", role)
	f.Add("enabled", []byte{1}, "revision", []byte{0, 0, 0, 0, 0, 0, 0, 9})
	f.Add("user/x", []byte{0xff}, "x", []byte{})
	f.Fuzz(func(t *testing.T, k1 string, v1 []byte, k2 string, v2 []byte) {
		kv := memKV{"a/" + k1: v1, "a/" + k2: v2}
		s, err := Load(kv, Options{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load error %v is not ErrCorrupt", err)
			}
			return
		}
		saved := memKV{}
		if err := s.Save(saved); err != nil {
			t.Fatal(err)
		}
		again, err := Load(saved, Options{})
		if err != nil {
			t.Fatalf("Load of Save's output: %v", err)
		}
		if a, b := queryAll(t, s), queryAll(t, again); !protoSliceEqual(a, b) {
			t.Fatalf("reloaded store answers %v, want %v", b, a)
		}
	})
}
