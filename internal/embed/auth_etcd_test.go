package embed

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdembed "go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// authSide is one server of an auth comparison: its client endpoints, and
// a client per user logged in to it (the "" user has no credentials).
type authSide struct {
	name      string
	endpoints []string
	clients   map[string]*clientv3.Client
}

// startEtcdForAuth starts a one-member embedded etcd (the oracle) with
// simple tokens and cheap bcrypt, and returns its client endpoints.
func startEtcdForAuth(t *testing.T) []string {
	t.Helper()
	e := oracle.Start(t, func(cfg *etcdembed.Config) { cfg.BcryptCost = 4 })
	return []string{"http://" + e.Addr}
}

// startAuthPair starts etcd and a cairn member, both with auth disabled.
func startAuthPair(t *testing.T) (oracle, subject *authSide) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.BcryptCost = 4
	m := start(t, cfg)
	oracle = &authSide{name: "etcd", endpoints: startEtcdForAuth(t), clients: map[string]*clientv3.Client{}}
	subject = &authSide{name: "cairn", endpoints: m.ClientURLs(), clients: map[string]*clientv3.Client{}}
	return oracle, subject
}

// as returns a client of the side logged in as user with password ("" for
// no credentials). A login that fails returns the error.
func (s *authSide) as(t *testing.T, user, password string) (*clientv3.Client, error) {
	t.Helper()
	key := user + "\x00" + password
	if c := s.clients[key]; c != nil {
		return c, nil
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints: s.endpoints, DialTimeout: 10 * time.Second,
		Username: user, Password: password,
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	s.clients[key] = c
	return c, nil
}

// outcome renders a response without its header, or an error by its
// text, so that two servers' answers compare as strings.
func outcome(resp any, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	pm, ok := resp.(proto.Message)
	if !ok {
		return fmt.Sprint(resp)
	}
	c := proto.Clone(pm)
	r := c.ProtoReflect()
	if fd := r.Descriptor().Fields().ByName("header"); fd != nil {
		r.Clear(fd)
	}
	if fd := r.Descriptor().Fields().ByName("token"); fd != nil && r.Get(fd).String() != "" {
		// Tokens differ by design; that one was issued is compared.
		r.Clear(fd)
		return "token issued " + prototext.Format(c)
	}
	return prototext.Format(c)
}

// authOp is one request through clientv3 as some user.
type authOp struct {
	user, password string
	desc           string
	do             func(ctx context.Context, c *clientv3.Client) (any, error)
}

// run sends op to both sides and reports a difference.
func runAuthOp(t *testing.T, oracle, subject *authSide, op authOp) (want, got string) {
	t.Helper()
	res := func(s *authSide) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := s.as(t, op.user, op.password)
		if err != nil {
			return outcome(nil, err)
		}
		return outcome(op.do(ctx, c))
	}
	want, got = res(oracle), res(subject)
	if want != got {
		t.Errorf("%s as %q:\n etcd:  %s\n cairn: %s", op.desc, op.user, want, got)
	}
	return want, got
}

// rawResp unwraps clientv3's response types to their protobuf message.
func rawResp(resp any, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	switch r := resp.(type) {
	case *clientv3.GetResponse:
		return (*pb.RangeResponse)(r), nil
	case *clientv3.PutResponse:
		return (*pb.PutResponse)(r), nil
	case *clientv3.DeleteResponse:
		return (*pb.DeleteRangeResponse)(r), nil
	case *clientv3.TxnResponse:
		return (*pb.TxnResponse)(r), nil
	case *clientv3.CompactResponse:
		return (*pb.CompactionResponse)(r), nil
	case *clientv3.AuthenticateResponse:
		return (*pb.AuthenticateResponse)(r), nil
	case *clientv3.AuthStatusResponse:
		return (*pb.AuthStatusResponse)(r), nil
	case *clientv3.AuthEnableResponse:
		return (*pb.AuthEnableResponse)(r), nil
	case *clientv3.AuthDisableResponse:
		return (*pb.AuthDisableResponse)(r), nil
	case *clientv3.AuthUserAddResponse:
		return (*pb.AuthUserAddResponse)(r), nil
	case *clientv3.AuthUserDeleteResponse:
		return (*pb.AuthUserDeleteResponse)(r), nil
	case *clientv3.AuthUserChangePasswordResponse:
		return (*pb.AuthUserChangePasswordResponse)(r), nil
	case *clientv3.AuthUserGrantRoleResponse:
		return (*pb.AuthUserGrantRoleResponse)(r), nil
	case *clientv3.AuthUserGetResponse:
		return (*pb.AuthUserGetResponse)(r), nil
	case *clientv3.AuthUserRevokeRoleResponse:
		return (*pb.AuthUserRevokeRoleResponse)(r), nil
	case *clientv3.AuthRoleAddResponse:
		return (*pb.AuthRoleAddResponse)(r), nil
	case *clientv3.AuthRoleGrantPermissionResponse:
		return (*pb.AuthRoleGrantPermissionResponse)(r), nil
	case *clientv3.AuthRoleGetResponse:
		return (*pb.AuthRoleGetResponse)(r), nil
	case *clientv3.AuthRoleListResponse:
		return (*pb.AuthRoleListResponse)(r), nil
	case *clientv3.AuthUserListResponse:
		return (*pb.AuthUserListResponse)(r), nil
	case *clientv3.AuthRoleRevokePermissionResponse:
		return (*pb.AuthRoleRevokePermissionResponse)(r), nil
	case *clientv3.AuthRoleDeleteResponse:
		return (*pb.AuthRoleDeleteResponse)(r), nil
	}
	return resp, nil
}

func authOps(root string) []authOp {
	op := func(user, pw, desc string, do func(ctx context.Context, c *clientv3.Client) (any, error)) authOp {
		return authOp{user: user, password: pw, desc: desc, do: func(ctx context.Context, c *clientv3.Client) (any, error) {
			return rawResp(do(ctx, c))
		}}
	}
	perm := clientv3.PermissionType(authpb.READ)
	return []authOp{
		op("", "", "AuthStatus", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthStatus(ctx) }),
		op("", "", "AuthEnable without root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthEnable(ctx) }),
		op("", "", "UserAdd root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserAdd(ctx, "root", root) }),
		op("", "", "AuthEnable without root role", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthEnable(ctx) }),
		op("", "", "UserAdd root again", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserAdd(ctx, "root", "x") }),
		op("", "", "UserAdd empty", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserAdd(ctx, "", "x") }),
		op("", "", "RoleAdd empty", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleAdd(ctx, "") }),
		op("", "", "UserGrantRole root root (role not there yet)", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserGrantRole(ctx, "root", "root")
		}),
		op("", "", "RoleAdd root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleAdd(ctx, "root") }),
		op("", "", "UserGrantRole root root", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserGrantRole(ctx, "root", "root")
		}),
		op("", "", "RoleAdd reader", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleAdd(ctx, "reader") }),
		op("", "", "RoleAdd reader again", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleAdd(ctx, "reader") }),
		op("", "", "RoleGrantPermission reader READ a..c", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.RoleGrantPermission(ctx, "reader", "a", "c", perm)
		}),
		op("", "", "RoleGrantPermission nobody", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.RoleGrantPermission(ctx, "nobody", "a", "c", perm)
		}),
		op("", "", "UserAdd alice", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserAdd(ctx, "alice", "pw") }),
		op("", "", "UserAdd bob without password", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserAddWithOptions(ctx, "bob", "", &clientv3.UserAddOptions{NoPassword: true})
		}),
		op("", "", "UserGrantRole alice reader", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserGrantRole(ctx, "alice", "reader")
		}),
		op("", "", "UserGrantRole ghost reader", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserGrantRole(ctx, "ghost", "reader")
		}),
		op("", "", "UserRevokeRole alice root", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserRevokeRole(ctx, "alice", "root")
		}),
		op("", "", "UserGet alice", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserGet(ctx, "alice") }),
		op("", "", "UserGet ghost", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserGet(ctx, "ghost") }),
		op("", "", "UserList", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserList(ctx) }),
		op("", "", "RoleGet reader", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleGet(ctx, "reader") }),
		op("", "", "RoleGet root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleGet(ctx, "root") }),
		op("", "", "RoleList", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleList(ctx) }),
		op("", "", "Put before enable", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.Put(ctx, "b", "1") }),
		op("", "", "Authenticate while disabled", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Authenticate(ctx, "alice", "pw")
		}),
		op("", "", "AuthEnable", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthEnable(ctx) }),
		op("", "", "AuthStatus enabled", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthStatus(ctx) }),
		op("", "", "Put without user", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.Put(ctx, "b", "2") }),
		op("", "", "Get without user", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.Get(ctx, "b") }),
		op("", "", "UserList without user", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserList(ctx) }),
		op("", "", "Authenticate wrong password", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Authenticate(ctx, "alice", "nope")
		}),
		op("", "", "Authenticate ghost", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Authenticate(ctx, "ghost", "pw")
		}),
		op("", "", "Authenticate bob (no password user)", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Authenticate(ctx, "bob", "pw")
		}),
		op("", "", "Authenticate alice", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Authenticate(ctx, "alice", "pw")
		}),
		op("alice", "pw", "alice Get b", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.Get(ctx, "b") }),
		op("alice", "pw", "alice Get a..c", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Get(ctx, "a", clientv3.WithRange("c"))
		}),
		op("alice", "pw", "alice Get a..d", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Get(ctx, "a", clientv3.WithRange("d"))
		}),
		op("alice", "pw", "alice Put b", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.Put(ctx, "b", "3") }),
		op("alice", "pw", "alice UserGet alice", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserGet(ctx, "alice") }),
		op("alice", "pw", "alice UserGet root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserGet(ctx, "root") }),
		op("alice", "pw", "alice RoleGet reader", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleGet(ctx, "reader") }),
		op("alice", "pw", "alice RoleGet root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleGet(ctx, "root") }),
		op("alice", "pw", "alice RoleList", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleList(ctx) }),
		op("alice", "pw", "alice AuthDisable", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthDisable(ctx) }),
		op("alice", "pw", "alice Compact", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.Compact(ctx, 1) }),
		op("alice", "pw", "alice MemberList", func(ctx context.Context, c *clientv3.Client) (any, error) {
			_, err := c.MemberList(ctx)
			return nil, err
		}),
		op("alice", "pw", "alice MemberAdd", func(ctx context.Context, c *clientv3.Client) (any, error) {
			_, err := c.MemberAdd(ctx, []string{"http://127.0.0.1:1"})
			return nil, err
		}),
		op("alice", "pw", "alice AlarmList", func(ctx context.Context, c *clientv3.Client) (any, error) {
			r, err := c.AlarmList(ctx)
			if err != nil {
				return nil, err
			}
			return len(r.Alarms), nil
		}),
		op("alice", "pw", "alice Defragment", func(ctx context.Context, c *clientv3.Client) (any, error) {
			_, err := c.Defragment(ctx, c.Endpoints()[0])
			return nil, err
		}),
		op("alice", "pw", "alice HashKV", func(ctx context.Context, c *clientv3.Client) (any, error) {
			_, err := c.HashKV(ctx, c.Endpoints()[0], 0)
			return nil, err
		}),
		op("alice", "pw", "alice Txn reading b, writing z", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Txn(ctx).If(clientv3.Compare(clientv3.Version("b"), "=", 0)).Then(clientv3.OpPut("z", "1")).Commit()
		}),
		op("alice", "pw", "alice read-only Txn", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Txn(ctx).If(clientv3.Compare(clientv3.Version("b"), "=", 0)).Then(clientv3.OpGet("a")).Else(clientv3.OpGet("bb")).Commit()
		}),
		op("alice", "pw", "alice LeaseGrant", func(ctx context.Context, c *clientv3.Client) (any, error) {
			_, err := c.Grant(ctx, 100)
			return nil, err
		}),
		op("", "", "LeaseGrant without user", func(ctx context.Context, c *clientv3.Client) (any, error) {
			_, err := c.Grant(ctx, 100)
			return nil, err
		}),
		op("root", root, "root Put b", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.Put(ctx, "b", "4") }),
		op("alice", "pw", "alice Get b after root's put", func(ctx context.Context, c *clientv3.Client) (any, error) {
			r, err := c.Get(ctx, "b")
			if err != nil {
				return nil, err
			}
			return string(r.Kvs[0].Value), nil
		}),
		op("root", root, "root UserDelete root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserDelete(ctx, "root") }),
		op("root", root, "root UserRevokeRole root root", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserRevokeRole(ctx, "root", "root")
		}),
		op("root", root, "root RoleRevokePermission reader a..c", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.RoleRevokePermission(ctx, "reader", "a", "c")
		}),
		op("root", root, "root RoleRevokePermission reader again", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.RoleRevokePermission(ctx, "reader", "a", "c")
		}),
		op("alice", "pw", "alice Get b after revoke (token re-used)", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Get(ctx, "b")
		}),
		op("root", root, "root UserChangePassword alice", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserChangePassword(ctx, "alice", "pw2")
		}),
		op("alice", "pw2", "alice with new password UserGet alice", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.UserGet(ctx, "alice")
		}),
		op("", "", "Authenticate alice old password", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Authenticate(ctx, "alice", "pw")
		}),
		op("root", root, "root RoleDelete reader", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleDelete(ctx, "reader") }),
		op("root", root, "root RoleDelete reader again", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleDelete(ctx, "reader") }),
		op("root", root, "root UserGet alice (role gone)", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserGet(ctx, "alice") }),
		op("root", root, "root UserDelete alice", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserDelete(ctx, "alice") }),
		op("root", root, "root UserDelete alice again", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserDelete(ctx, "alice") }),
		op("root", root, "root AuthStatus", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthStatus(ctx) }),
		op("root", root, "root AuthDisable", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthDisable(ctx) }),
		op("", "", "AuthStatus after disable", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthStatus(ctx) }),
		op("", "", "Get after disable", func(ctx context.Context, c *clientv3.Client) (any, error) {
			r, err := c.Get(ctx, "b")
			if err != nil {
				return nil, err
			}
			return string(r.Kvs[0].Value), nil
		}),
	}
}

// TestAuthRPCsAgainstEtcd sends every Auth RPC, and the requests auth
// guards, through clientv3 to etcd and to cairn, as root, as a user with a
// role, as a user without a password and as nobody, and requires the same
// answer (response without its header, or error text) from both.
func TestAuthRPCsAgainstEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	oracle, subject := startAuthPair(t)
	for _, op := range authOps("rootpw") {
		runAuthOp(t, oracle, subject, op)
	}
}
