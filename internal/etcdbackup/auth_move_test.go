package etcdbackup_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/etcdbackup"
	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/internal/server"
)

// setUpAuth gives the cluster behind c users root (role root) and alice
// (role reader: READ on the prefix "app/", READWRITE on the range
// [r1, r5)), a role nobody holds, and enables auth.
func setUpAuth(t *testing.T, c *clientv3.Client) {
	t.Helper()
	ctx := ctxT(t)
	steps := []func() error{
		func() error { _, err := c.Put(ctx, "app/1", "v"); return err },
		func() error { _, err := c.Put(ctx, "other", "v"); return err },
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.UserAdd(ctx, "alice", "alicepw"); return err },
		func() error { _, err := c.RoleAdd(ctx, "reader"); return err },
		func() error {
			_, err := c.RoleGrantPermission(ctx, "reader", "app/", clientv3.GetPrefixRangeEnd("app/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error {
			_, err := c.RoleGrantPermission(ctx, "reader", "r1", "r5", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := c.RoleAdd(ctx, "unused"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "alice", "reader"); return err },
		func() error { _, err := c.AuthEnable(ctx); return err },
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("auth set-up step %d: %v", i, err)
		}
	}
}

func authClient(t *testing.T, endpoint, user, pw string) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Username: user, Password: pw, DialTimeout: 10 * time.Second})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// checkAuth: the cluster at endpoint has the users, roles and
// permissions setUpAuth gave, with auth enabled and the passwords
// working; want (root's client of the source) gives the roles to compare.
func checkAuth(t *testing.T, endpoint string, want *clientv3.Client) {
	t.Helper()
	ctx := ctxT(t)
	root, err := authClient(t, endpoint, "root", "rootpw")
	if err != nil {
		t.Fatalf("root authenticates: %v", err)
	}
	st, err := root.AuthStatus(ctx)
	if err != nil || !st.Enabled {
		t.Fatalf("auth status %v, %v; want enabled", st, err)
	}
	wu, err := want.UserList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gu, err := root.UserList(ctx)
	if err != nil || !slices.Equal(gu.Users, wu.Users) {
		t.Fatalf("users %v (%v), source has %v", gu, err, wu.Users)
	}
	wr, err := want.RoleList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gr, err := root.RoleList(ctx)
	if err != nil || !slices.Equal(gr.Roles, wr.Roles) {
		t.Fatalf("roles %v (%v), source has %v", gr, err, wr.Roles)
	}
	for _, name := range []string{"reader", "unused"} {
		w, err := want.RoleGet(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		g, err := root.RoleGet(ctx, name)
		if err != nil || !slices.EqualFunc(g.Perm, w.Perm, func(a, b *authpb.Permission) bool {
			return a.PermType == b.PermType && string(a.Key) == string(b.Key) && string(a.RangeEnd) == string(b.RangeEnd)
		}) {
			t.Fatalf("role %s: %v (%v), source has %v", name, g, err, w)
		}
	}
	ua, err := root.UserGet(ctx, "alice")
	if err != nil || !slices.Equal(ua.Roles, []string{"reader"}) {
		t.Fatalf("alice: %v, %v; want role reader", ua, err)
	}

	if _, err := authClient(t, endpoint, "alice", "wrong"); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("alice with a wrong password: %v, want authentication failed", err)
	}
	alice, err := authClient(t, endpoint, "alice", "alicepw")
	if err != nil {
		t.Fatalf("alice authenticates: %v", err)
	}
	if r, err := alice.Get(ctx, "app/1"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("alice reads app/1: %v, %v", r, err)
	}
	if _, err := alice.Put(ctx, "r3", "v"); err != nil {
		t.Fatalf("alice writes r3: %v", err)
	}
	denied := "etcdserver: permission denied"
	if _, err := alice.Put(ctx, "app/1", "w"); err == nil || err.Error() != denied {
		t.Fatalf("alice writes app/1: %v, want %q", err, denied)
	}
	if _, err := alice.Get(ctx, "other"); err == nil || err.Error() != denied {
		t.Fatalf("alice reads other: %v, want %q", err, denied)
	}
}

// TestSnapshotFromEtcdWithAuth: a snapshot of an etcd cluster with auth
// enabled restores into cairn with its users (passwords working), roles,
// permissions and the enabled flag.
func TestSnapshotFromEtcdWithAuth(t *testing.T) {
	src, _ := startEtcd(t, t.TempDir(), "etcd", "http://"+freeport.Addr(t), false)
	addr := src.Addr
	setUpAuth(t, newClient(t, addr))
	path := filepath.Join(t.TempDir(), "auth.db")
	cfg := clientv3.Config{Endpoints: []string{addr}, Username: "root", Password: "rootpw"}
	if _, err := snapshot.SaveWithVersion(ctxT(t), zap.NewNop(), cfg, path); err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	info, err := etcdbackup.Status(path)
	if err != nil || !info.AuthEnabled || info.Users != 2 || info.Roles != 2 {
		t.Fatalf("status %+v, %v; want auth enabled with two users and two roles", info, err)
	}
	root, err := authClient(t, addr, "root", "rootpw")
	if err != nil {
		t.Fatal(err)
	}
	peer := "http://" + freeport.Addr(t)
	m := startCairn(t, restoreCairn(t, path, "c1", peer), "c1", peer)
	checkAuth(t, m.ClientURLs()[0], root)
}

// TestSnapshotToEtcdWithAuth: cairn's snapshot of a member with auth
// enabled restores with etcdutl into an etcd that has the same users
// (passwords working), roles, permissions and enabled flag.
func TestSnapshotToEtcdWithAuth(t *testing.T) {
	peer := "http://" + freeport.Addr(t)
	src := startCairn(t, t.TempDir(), "c1", peer)
	addr := src.ClientURLs()[0]
	setUpAuth(t, newClient(t, addr))
	path := filepath.Join(t.TempDir(), "auth.db")
	cfg := clientv3.Config{Endpoints: []string{addr}, Username: "root", Password: "rootpw"}
	if _, err := snapshot.SaveWithVersion(ctxT(t), zap.NewNop(), cfg, path); err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	info, err := server.SnapshotStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := etcdutl.NewV3(zap.NewNop()).Status(path); err != nil || st.Hash != info.Hash {
		t.Fatalf("etcdutl status %+v, %v; cairn's %+v", st, err, info)
	}
	dir := filepath.Join(t.TempDir(), "e1.etcd")
	epeer := "http://" + freeport.Addr(t)
	err = etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{
		SnapshotPath: path, Name: "e1", OutputDataDir: dir, PeerURLs: []string{epeer},
		InitialCluster: "e1=" + epeer, InitialClusterToken: "restored",
	})
	if err != nil {
		t.Fatalf("etcdutl snapshot restore: %v", err)
	}
	e, _ := startEtcd(t, dir, "e1", epeer, true)
	root, err := authClient(t, addr, "root", "rootpw")
	if err != nil {
		t.Fatal(err)
	}
	checkAuth(t, e.Addr, root)
}
