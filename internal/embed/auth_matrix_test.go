package embed

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The randomized permission matrix: random users, roles and permissions
// (single keys, ranges, prefixes, from-key), then thousands of random
// requests of every kind the permissions guard (Range, Put, DeleteRange,
// Txn with compares, both branches and nested txns, Watch, Compact, lease
// grants and puts on leases) from random users (or none), each sent to
// etcd and to cairn, which must answer alike. Now and then root changes a
// role's permissions, so requests also meet revoked permissions and stale
// auth revisions (clientv3 re-authenticates and retries, against both).

// matrixKeys is the keyspace the matrix draws keys, ranges and
// prefixes from: small, so that permissions and requests overlap often.
var matrixKeys = []string{"a", "ab", "abc", "b", "ba", "c", "cc", "d", "e", "f"}

type matrix struct {
	rng   *rand.Rand
	users []string
	roles []string
}

func (m *matrix) key() string { return matrixKeys[m.rng.IntN(len(matrixKeys))] }

// span returns a random [key, rangeEnd) in clientv3's terms: one key, a
// range (possibly inverted or empty), a prefix, or from a key on.
func (m *matrix) span() (key, end string) {
	k := m.key()
	switch m.rng.IntN(5) {
	case 0, 1:
		return k, ""
	case 2:
		return k, m.key()
	case 3:
		return k, clientv3.GetPrefixRangeEnd(k)
	default:
		return k, "\x00"
	}
}

func (m *matrix) rangeOpts(end string) []clientv3.OpOption {
	var opts []clientv3.OpOption
	if end != "" {
		opts = append(opts, clientv3.WithRange(end))
	}
	if m.rng.IntN(3) == 0 {
		opts = append(opts, clientv3.WithSerializable())
	}
	return opts
}

// op returns a random RequestOp for a txn, nested down to depth.
func (m *matrix) op(depth int) (clientv3.Op, string) {
	switch n := m.rng.IntN(4); {
	case n == 0:
		k, e := m.span()
		return clientv3.OpGet(k, m.rangeOpts(e)...), fmt.Sprintf("get %q..%q", k, e)
	case n == 1:
		k := m.key()
		var opts []clientv3.OpOption
		if m.rng.IntN(3) == 0 {
			opts = append(opts, clientv3.WithPrevKV())
		}
		return clientv3.OpPut(k, fmt.Sprint(m.rng.IntN(100)), opts...), fmt.Sprintf("put %q", k)
	case n == 2 || depth == 0:
		k, e := m.span()
		opts := []clientv3.OpOption{}
		if e != "" {
			opts = append(opts, clientv3.WithRange(e))
		}
		if m.rng.IntN(3) == 0 {
			opts = append(opts, clientv3.WithPrevKV())
		}
		return clientv3.OpDelete(k, opts...), fmt.Sprintf("delete %q..%q", k, e)
	default:
		cmps, cdesc := m.compares()
		thn, tdesc := m.ops(depth - 1)
		els, edesc := m.ops(depth - 1)
		return clientv3.OpTxn(cmps, thn, els), fmt.Sprintf("txn{if %s then %s else %s}", cdesc, tdesc, edesc)
	}
}

func (m *matrix) ops(depth int) ([]clientv3.Op, string) {
	var ops []clientv3.Op
	var descs []string
	for range m.rng.IntN(3) {
		o, d := m.op(depth)
		ops = append(ops, o)
		descs = append(descs, d)
	}
	return ops, "[" + strings.Join(descs, "; ") + "]"
}

func (m *matrix) compares() ([]clientv3.Cmp, string) {
	var cmps []clientv3.Cmp
	var descs []string
	for range m.rng.IntN(3) {
		k, e := m.span()
		c := clientv3.Compare(clientv3.Version(k), ">", 0)
		if e != "" {
			c = c.WithRange(e)
		}
		cmps = append(cmps, c)
		descs = append(descs, fmt.Sprintf("version(%q..%q)>0", k, e))
	}
	return cmps, strings.Join(descs, ",")
}

// perm returns a random permission grant.
func (m *matrix) perm() (key, end string, typ clientv3.PermissionType) {
	key, end = m.span()
	return key, end, clientv3.PermissionType([]authpb.Permission_Type{authpb.READ, authpb.WRITE, authpb.READWRITE}[m.rng.IntN(3)])
}

// request returns a random request as a random user ("" for none): what
// it is, and the call.
func (m *matrix) request() authOp {
	user := ""
	if m.rng.IntN(8) != 0 {
		user = m.users[m.rng.IntN(len(m.users))]
	}
	pw := ""
	if user != "" {
		pw = "pw-" + user
	}
	do := func(desc string, f func(ctx context.Context, c *clientv3.Client) (any, error)) authOp {
		return authOp{user: user, password: pw, desc: desc, do: func(ctx context.Context, c *clientv3.Client) (any, error) {
			return rawResp(f(ctx, c))
		}}
	}
	switch n := m.rng.IntN(20); {
	case n < 6:
		k, e := m.span()
		opts := m.rangeOpts(e)
		return do(fmt.Sprintf("get %q..%q", k, e), func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Get(ctx, k, opts...)
		})
	case n < 10:
		k := m.key()
		v := fmt.Sprint(m.rng.IntN(100))
		var opts []clientv3.OpOption
		if m.rng.IntN(3) == 0 {
			opts = append(opts, clientv3.WithPrevKV())
		}
		return do(fmt.Sprintf("put %q", k), func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Put(ctx, k, v, opts...)
		})
	case n < 12:
		k, e := m.span()
		var opts []clientv3.OpOption
		if e != "" {
			opts = append(opts, clientv3.WithRange(e))
		}
		if m.rng.IntN(3) == 0 {
			opts = append(opts, clientv3.WithPrevKV())
		}
		return do(fmt.Sprintf("delete %q..%q", k, e), func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Delete(ctx, k, opts...)
		})
	case n < 16:
		cmps, cdesc := m.compares()
		thn, tdesc := m.ops(2)
		els, edesc := m.ops(2)
		return do(fmt.Sprintf("txn{if %s then %s else %s}", cdesc, tdesc, edesc), func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Txn(ctx).If(cmps...).Then(thn...).Else(els...).Commit()
		})
	case n < 18:
		k, e := m.span()
		opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
		if e != "" {
			opts = append(opts, clientv3.WithRange(e))
		}
		return do(fmt.Sprintf("watch %q..%q", k, e), func(ctx context.Context, c *clientv3.Client) (any, error) {
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			defer cancel()
			wr, ok := <-c.Watch(wctx, k, opts...)
			if !ok {
				return nil, fmt.Errorf("watch channel closed")
			}
			if err := wr.Err(); err != nil {
				return nil, err
			}
			return fmt.Sprintf("created=%v canceled=%v", wr.Created, wr.Canceled), nil
		})
	case n < 19:
		k := m.key()
		return do(fmt.Sprintf("lease put %q", k), func(ctx context.Context, c *clientv3.Client) (any, error) {
			l, err := c.Grant(ctx, 600)
			if err != nil {
				return nil, err
			}
			if _, err := c.Put(ctx, k, "leased", clientv3.WithLease(l.ID)); err != nil {
				return nil, fmt.Errorf("put: %w", err)
			}
			_, err = c.Revoke(ctx, l.ID)
			return "revoked", err
		})
	default:
		return do("compact", func(ctx context.Context, c *clientv3.Client) (any, error) {
			r, err := c.Get(ctx, "a", clientv3.WithSerializable())
			rev := int64(1)
			if err == nil && r.Header.Revision > 3 {
				rev = r.Header.Revision - 2
			}
			return c.Compact(ctx, rev)
		})
	}
}

// isRefusal reports whether an outcome is auth refusing the request.
func isRefusal(outcome string) bool {
	for _, s := range []string{"permission denied", "user name is empty", "invalid auth token"} {
		if strings.Contains(outcome, s) {
			return true
		}
	}
	return false
}

// TestAuthPermissionMatrixAgainstEtcd runs the matrix: the same random
// users, roles, permissions and requests against etcd and cairn, every
// answer compared. It records how many requests etcd refused on auth
// grounds and requires that cairn granted none of them.
func TestAuthPermissionMatrixAgainstEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	m := &matrix{rng: rand.New(rand.NewPCG(seed, 12))}
	oracle, subject := startAuthPair(t)
	both := func(desc string, f func(ctx context.Context, c *clientv3.Client) (any, error)) {
		t.Helper()
		runAuthOp(t, oracle, subject, authOp{desc: desc, user: "", do: func(ctx context.Context, c *clientv3.Client) (any, error) {
			return rawResp(f(ctx, c))
		}})
	}
	asRoot := func(desc string, f func(ctx context.Context, c *clientv3.Client) (any, error)) {
		t.Helper()
		runAuthOp(t, oracle, subject, authOp{desc: desc, user: "root", password: "rootpw", do: func(ctx context.Context, c *clientv3.Client) (any, error) {
			return rawResp(f(ctx, c))
		}})
	}

	both("add root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserAdd(ctx, "root", "rootpw") })
	both("add role root", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleAdd(ctx, "root") })
	both("grant root", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.UserGrantRole(ctx, "root", "root")
	})
	for i := range 4 {
		m.roles = append(m.roles, fmt.Sprintf("r%d", i))
		m.users = append(m.users, fmt.Sprintf("u%d", i))
	}
	grant := func(role string) {
		k, e, typ := m.perm()
		asRoot(fmt.Sprintf("grant %s %v %q..%q", role, typ, k, e), func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.RoleGrantPermission(ctx, role, k, e, typ)
		})
	}
	for _, r := range m.roles {
		both("add role "+r, func(ctx context.Context, c *clientv3.Client) (any, error) { return c.RoleAdd(ctx, r) })
	}
	for _, k := range matrixKeys {
		both("seed "+k, func(ctx context.Context, c *clientv3.Client) (any, error) { return c.Put(ctx, k, "seed") })
	}
	both("enable", func(ctx context.Context, c *clientv3.Client) (any, error) { return c.AuthEnable(ctx) })
	for _, r := range m.roles {
		for range 2 + m.rng.IntN(4) {
			grant(r)
		}
	}
	for _, u := range m.users {
		asRoot("add "+u, func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserAdd(ctx, u, "pw-"+u) })
		for range 1 + m.rng.IntN(2) {
			r := m.roles[m.rng.IntN(len(m.roles))]
			asRoot("grant "+r+" to "+u, func(ctx context.Context, c *clientv3.Client) (any, error) { return c.UserGrantRole(ctx, u, r) })
		}
	}

	n := 3000
	refused, total := 0, 0
	for i := range n {
		if i%250 == 249 {
			// Root changes a role: requests now meet a newer auth revision.
			r := m.roles[m.rng.IntN(len(m.roles))]
			if m.rng.IntN(2) == 0 {
				grant(r)
			} else {
				asRoot("revoke a permission of "+r, func(ctx context.Context, c *clientv3.Client) (any, error) {
					g, err := c.RoleGet(ctx, r)
					if err != nil || len(g.Perm) == 0 {
						return "nothing to revoke", err
					}
					p := g.Perm[0]
					return c.RoleRevokePermission(ctx, r, string(p.Key), string(p.RangeEnd))
				})
			}
		}
		op := m.request()
		want, got := runAuthOp(t, oracle, subject, op)
		total++
		if isRefusal(want) {
			refused++
			if !isRefusal(got) {
				t.Errorf("VIOLATION: etcd refused %s as %q (%s), cairn answered %s", op.desc, op.user, want, got)
			}
		}
		if t.Failed() && i > 0 && i%100 == 0 {
			t.Fatalf("stopping after %d requests", i)
		}
	}
	t.Logf("%d requests, %d refused by etcd on auth grounds, none granted by cairn", total, refused)
	if refused == 0 || refused == total {
		t.Errorf("the matrix refused %d of %d requests: it tests nothing", refused, total)
	}
}
