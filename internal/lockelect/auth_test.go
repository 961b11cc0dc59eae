package lockelect

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestAuthMatchesEtcd enables auth and checks that calls run with the
// caller's permissions, as in etcd: a user allowed only under "a/" can lock
// and campaign on "a" but not on "b", and a caller without a token gets
// etcd's error. Our services' backing client has no credentials of its own.
// Where etcd's Observe ends silently on a permission error, ours answers it.
func TestAuthMatchesEtcd(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	steps := []func() error{
		func() error { _, err := f.kv.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := f.kv.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := f.kv.UserAdd(ctx, "alice", "alicepw"); return err },
		func() error { _, err := f.kv.RoleAdd(ctx, "locker"); return err },
		func() error {
			_, err := f.kv.RoleGrantPermission(ctx, "locker", "a/", clientv3.GetPrefixRangeEnd("a/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := f.kv.UserGrantRole(ctx, "alice", "locker"); return err },
		func() error { _, err := f.kv.AuthEnable(ctx); return err },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := grpc.NewClient(f.etcdAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	auth, err := pb.NewAuthClient(conn).Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "alicepw"})
	if err != nil {
		t.Fatal(err)
	}
	alice := metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, auth.Token)

	run := func(svc services) []string {
		var lines []string
		logf := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
		outcome := func(what string, err error) {
			if err != nil {
				logf("%s: error %q", what, errText(err))
			} else {
				logf("%s: ok", what)
			}
		}
		// Keys carry a lease the service granted: keep only the name.
		name := func(k []byte) string { return string(k[:strings.LastIndex(string(k), "/")+1]) }

		l, err := svc.lock.Lock(alice, &v3lockpb.LockRequest{Name: []byte("a")})
		outcome("alice locks a", err)
		if err == nil {
			logf("key under %s", name(l.Key))
			_, err = svc.lock.Unlock(alice, &v3lockpb.UnlockRequest{Key: l.Key})
			outcome("alice unlocks a", err)
		}
		_, err = svc.lock.Lock(alice, &v3lockpb.LockRequest{Name: []byte("b")})
		outcome("alice locks b", err)
		_, err = svc.lock.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("a")})
		outcome("no token locks a", err)

		c, err := svc.elect.Campaign(alice, &v3electionpb.CampaignRequest{Name: []byte("a"), Value: []byte("v")})
		outcome("alice campaigns on a", err)
		if err == nil {
			lr, err := svc.elect.Leader(alice, &v3electionpb.LeaderRequest{Name: []byte("a")})
			outcome("alice asks a's leader", err)
			if err == nil {
				logf("leader value %q", lr.Kv.Value)
			}
			_, err = svc.elect.Resign(alice, &v3electionpb.ResignRequest{Leader: c.Leader})
			outcome("alice resigns a", err)
		}
		_, err = svc.elect.Leader(alice, &v3electionpb.LeaderRequest{Name: []byte("b")})
		outcome("alice asks b's leader", err)
		_, err = svc.elect.Campaign(alice, &v3electionpb.CampaignRequest{Name: []byte("b"), Value: []byte("v")})
		outcome("alice campaigns on b", err)
		obs, err := svc.elect.Observe(alice, &v3electionpb.LeaderRequest{Name: []byte("b")})
		if err == nil {
			_, err = obs.Recv()
		}
		outcome("alice observes b", err)
		return lines
	}
	want := run(f.etcd)
	got := run(f.ours)
	// The one deliberate difference (see the package doc): etcd ends an
	// Observe whose watch fails as if it had finished; ours says why.
	const etcdObserve = `alice observes b: error "EOF"`
	const oursObserve = `alice observes b: error "etcdserver: permission denied"`
	if n := len(want) - 1; n >= 0 && want[n] == etcdObserve && len(got) == len(want) && got[n] == oursObserve {
		want[n] = oursObserve
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("answers under auth differ from etcd's (-etcd +ours):\n%s", d)
	}
	t.Logf("transcript:\n%s", strings.Join(got, "\n"))
}
