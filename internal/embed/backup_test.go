package embed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/server"
)

// saveSnapshot saves a backup of m with clientv3's snapshot.SaveWithVersion,
// which is what etcdctl snapshot save runs.
func saveSnapshot(t *testing.T, m *Member) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.db")
	ver, err := snapshot.SaveWithVersion(ctxT(t), zap.NewNop(), clientv3.Config{Endpoints: m.ClientURLs()[:1]}, path)
	if err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	if ver != "3.7.0" {
		t.Errorf("snapshot version %q, want 3.7.0", ver)
	}
	return path
}

// restoreCluster restores path into one data directory per name, for a
// new cluster of those members, and starts them.
func restoreCluster(t *testing.T, path string, names ...string) []*Member {
	t.Helper()
	var initial []string
	peer := map[string]string{}
	for _, n := range names {
		peer[n] = "http://" + freeport.Addr(t)
		initial = append(initial, n+"="+peer[n])
	}
	cluster := strings.Join(initial, ",")
	dirs := map[string]string{}
	for _, n := range names {
		dirs[n] = filepath.Join(t.TempDir(), n+".cairn")
		res, err := server.RestoreSnapshot(server.RestoreConfig{
			SnapshotPath: path, DataDir: dirs[n], Name: n, InitialCluster: cluster,
			ClusterToken: "restored", PeerURLs: []string{peer[n]},
		})
		if err != nil {
			t.Fatalf("restore %s: %v", n, err)
		}
		if len(res.Members) != len(names) {
			t.Fatalf("restore %s: members %v", n, res.Members)
		}
	}
	ms := make([]*Member, len(names))
	for i, n := range names {
		cfg := testConfig(t, dirs[n])
		cfg.Name = n
		cfg.ListenPeerURLs = []string{peer[n]}
		cfg.InitialAdvertisePeerURLs = []string{peer[n]}
		cfg.InitialCluster = cluster
		cfg.InitialClusterToken = "restored"
		cfg.HeartbeatMs, cfg.ElectionMs = 20, 200
		ms[i] = start(t, cfg)
	}
	return ms
}

// history writes several revisions of several keys, a deletion, a lease
// with keys, and a compaction; it returns the lease.
func history(t *testing.T, c *clientv3.Client) clientv3.LeaseID {
	t.Helper()
	ctx := ctxT(t)
	for i := range 5 {
		for _, k := range []string{"a", "b", "c/1", "c/2"} {
			if _, err := c.Put(ctx, k, fmt.Sprintf("%s-v%d", k, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := c.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	lease, err := c.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"leased/1", "leased/2"} {
		if _, err := c.Put(ctx, k, "v", clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Put(ctx, "a", "before-compact")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, resp.Header.Revision-6, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Put(ctx, "d", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	return lease.ID
}

// compareHistory checks that got serves what want serves at every
// revision from compact to rev: the same keys and versions, and
// ErrCompacted below compact.
func compareHistory(t *testing.T, want, got *clientv3.Client, compact, rev int64) {
	t.Helper()
	ctx := ctxT(t)
	for r := compact; r <= rev; r++ {
		w, err := want.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(r))
		if err != nil {
			t.Fatalf("source get at %d: %v", r, err)
		}
		g, err := got.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(r))
		if err != nil {
			t.Fatalf("restored get at %d: %v", r, err)
		}
		if fmt.Sprint(kvs(w.Kvs)) != fmt.Sprint(kvs(g.Kvs)) {
			t.Fatalf("at revision %d:\nsource   %v\nrestored %v", r, kvs(w.Kvs), kvs(g.Kvs))
		}
	}
	if compact > 1 {
		if _, err := got.Get(ctx, "a", clientv3.WithRev(compact-1)); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatalf("restored get below the compaction: %v, want %v", err, rpctypes.ErrCompacted)
		}
	}
}

func kvs(in []*mvccpb.KeyValue) []string {
	var out []string
	for _, kv := range in {
		out = append(out, fmt.Sprintf("%s=%s c%d m%d v%d l%x", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
	}
	return out
}

func memberHash(t *testing.T, c *clientv3.Client) *pb.HashResponse {
	t.Helper()
	resp, err := pb.NewMaintenanceClient(c.ActiveConnection()).Hash(ctxT(t), &pb.HashRequest{})
	if err != nil {
		t.Fatalf("hash: %v", err)
	}
	return resp
}

func TestSnapshotSaveRestore(t *testing.T) {
	src := startCluster(t, 1, "http", nil)[0]
	sc := client(t, src)
	lease := history(t, sc)
	ctx := ctxT(t)
	st, err := sc.Status(ctx, src.ClientURLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	rev := st.Header.Revision
	compact := rev - 3 - 6
	before := memberHash(t, sc)

	path := saveSnapshot(t, src)
	info, err := server.SnapshotStatus(path)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	// The backup is an etcd file: its hash is the one etcdutl computes.
	want, err := etcdutl.NewV3(zap.NewNop()).Status(path)
	if err != nil {
		t.Fatalf("etcdutl status: %v", err)
	}
	if info.Format != server.FormatEtcd || info.Revision != rev || info.CompactRevision != compact || info.Hash != want.Hash {
		t.Fatalf("status %+v, want an etcd file at revision %d, compaction %d, hash %x", info, rev, compact, want.Hash)
	}
	if after := memberHash(t, sc); after.Hash != before.Hash || after.Header.Revision != rev {
		t.Fatalf("hash changed without writes: %v, then %v", before, after)
	}

	dst := restoreCluster(t, path, "r1")[0]
	dc := client(t, dst)
	if dst.Server().ClusterID() == src.Server().ClusterID() || dst.Server().MemberID() == src.Server().MemberID() {
		t.Fatalf("restored member keeps the old IDs")
	}
	got, err := dc.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Header.Revision != rev {
		t.Fatalf("restored revision %d, want %d", got.Header.Revision, rev)
	}
	compareHistory(t, sc, dc, compact, rev)
	if h := memberHash(t, dc); h.Hash == 0 || h.Header.Revision != rev {
		t.Fatalf("restored hash %v", h)
	}

	ttl, err := dc.TimeToLive(ctx, lease, clientv3.WithAttachedKeys())
	if err != nil || ttl.TTL <= 0 || len(ttl.Keys) != 2 {
		t.Fatalf("restored lease: %+v, %v", ttl, err)
	}
	list, err := dc.MemberList(ctx)
	if err != nil || len(list.Members) != 1 || list.Members[0].ID != dst.Server().MemberID() || list.Members[0].Name != "r1" {
		t.Fatalf("restored member list: %v, %v", list, err)
	}
	// The restored member takes writes from the next revision on, and
	// restarts on its directory.
	p, err := dc.Put(ctx, "after", "restore")
	if err != nil || p.Header.Revision != rev+1 {
		t.Fatalf("put after restore: %v, %v", p, err)
	}
	cfg := dst.cfg
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	again := client(t, start(t, cfg))
	compareHistory(t, sc, again, compact, rev)
	g, err := again.Get(ctx, "after")
	if err != nil || len(g.Kvs) != 1 || g.Kvs[0].ModRevision != rev+1 {
		t.Fatalf("after a restart of the restored member: %v, %v", g, err)
	}
}

func TestSnapshotCorruptRefused(t *testing.T) {
	src := startCluster(t, 1, "http", nil)[0]
	history(t, client(t, src))
	path := saveSnapshot(t, src)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", data[:len(data)-100], "truncated"},
		{"truncated at a 512-byte boundary", data[:len(data)-512], "integrity check"},
		{"a byte changed", func() []byte {
			d := append([]byte(nil), data...)
			d[len(d)/2] ^= 0x40
			return d
		}(), "integrity check"},
		{"not a snapshot", make([]byte, 1024+32), "neither a cairn nor an etcd snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".db")
			if err := os.WriteFile(p, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := server.SnapshotStatus(p); !errors.Is(err, raftnode.ErrBackupCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("status: %v, want %v saying %q", err, raftnode.ErrBackupCorrupt, tc.want)
			}
			dataDir := filepath.Join(dir, "restored-"+strings.ReplaceAll(tc.name, " ", "-"))
			_, err := server.RestoreSnapshot(server.RestoreConfig{
				SnapshotPath: p, DataDir: dataDir, Name: "r1",
				InitialCluster: "r1=http://127.0.0.1:1", ClusterToken: "t", PeerURLs: []string{"http://127.0.0.1:1"},
			})
			if !errors.Is(err, raftnode.ErrBackupCorrupt) {
				t.Fatalf("restore: %v, want %v", err, raftnode.ErrBackupCorrupt)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused restore left %s behind: %v", dataDir, err)
			}
		})
	}
}

func TestSnapshotRestoreThreeMembers(t *testing.T) {
	src := startCluster(t, 1, "http", nil)[0]
	sc := client(t, src)
	history(t, sc)
	ctx := ctxT(t)
	st, err := sc.Status(ctx, src.ClientURLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	rev := st.Header.Revision
	path := saveSnapshot(t, src)
	ms := restoreCluster(t, path, "r1", "r2", "r3")
	checkCluster(t, ms) // a put through r1, read through r3, member lists
	cs := make([]*clientv3.Client, len(ms))
	for i, m := range ms {
		cs[i] = client(t, m)
		compareHistory(t, sc, cs[i], rev-9, rev)
		resp, err := cs[i].Get(ctx, "k")
		if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision != rev+1 {
			t.Fatalf("r%d: %v %v", i+1, resp, err)
		}
	}
	// Hash is of the applied state: a follower may be an entry behind
	// for a moment, so wait for the three to agree.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var hs []string
		for _, c := range cs {
			h := memberHash(t, c)
			hs = append(hs, fmt.Sprintf("%x@%d", h.Hash, h.Header.Revision))
		}
		if hs[0] == hs[1] && hs[1] == hs[2] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored members' hashes differ: %v", hs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSnapshotConsistentUnderWrites saves a backup while writers go on,
// and checks that it holds exactly the writes up to its revision.
func TestSnapshotConsistentUnderWrites(t *testing.T) {
	src := startCluster(t, 1, "http", nil)[0]
	sc := client(t, src)
	ctx := ctxT(t)
	val := strings.Repeat("x", 1024)
	for i := range 2000 {
		if _, err := sc.Put(ctx, fmt.Sprintf("base/%05d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	// Writers: each put's revision is recorded.
	var (
		mu      sync.Mutex
		written = map[string]int64{}
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("w%d/%06d", w, i)
				resp, err := sc.Put(ctx, k, "v")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				written[k] = resp.Header.Revision
				mu.Unlock()
			}
		}()
	}
	// The raw stream: the first response's header names the backup's
	// revision; read the rest slowly while the writers go on.
	stream, err := pb.NewMaintenanceClient(sc.ActiveConnection()).Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var snapRev int64
	var remaining []uint64
	for n := 0; ; n++ {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			snapRev = resp.GetHeader().GetRevision()
		}
		remaining = append(remaining, resp.RemainingBytes)
		if _, err := f.Write(resp.Blob); err != nil {
			t.Fatal(err)
		}
		if n%16 == 0 {
			// Let the writers get ahead of the stream.
			if _, err := sc.Put(ctx, fmt.Sprintf("during/%06d", n), "v"); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if len(remaining) < 2 || remaining[len(remaining)-1] != 0 {
		t.Fatalf("remaining bytes %v: want several chunks ending at 0", remaining)
	}
	for i := 1; i < len(remaining); i++ {
		if remaining[i] >= remaining[i-1] {
			t.Fatalf("remaining bytes do not fall: %v", remaining)
		}
	}
	info, err := server.SnapshotStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Revision != snapRev {
		t.Fatalf("backup at revision %d, the stream's header says %d", info.Revision, snapRev)
	}
	dc := client(t, restoreCluster(t, path, "r1")[0])
	resp, err := dc.Get(ctx, "w", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != snapRev {
		t.Fatalf("restored at revision %d, want %d", resp.Header.Revision, snapRev)
	}
	have := map[string]bool{}
	for _, kv := range resp.Kvs {
		have[string(kv.Key)] = true
	}
	mu.Lock()
	defer mu.Unlock()
	after := 0
	for k, r := range written {
		if (r <= snapRev) != have[k] {
			t.Fatalf("key %s written at revision %d: in the backup %v, backup revision %d", k, r, have[k], snapRev)
		}
		if r > snapRev {
			after++
		}
	}
	if n, err := dc.Get(ctx, "during/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || n.Count != 0 {
		t.Fatalf("writes made after the stream started are in the backup: %v %v", n, err)
	}
	t.Logf("backup at revision %d of %d bytes; %d writes landed during the stream", snapRev, info.TotalSize, after)
}

// TestSnapshotRecoversLostQuorum is the way back from a cluster that lost
// its quorum for good: the surviving member, which can no longer commit
// anything, still streams its state, and that backup founds a new cluster
// holding every write the old one acknowledged.
func TestSnapshotRecoversLostQuorum(t *testing.T) {
	ms := startCluster(t, 3, "http", nil)
	c := client(t, ms[0])
	ctx := ctxT(t)
	var last *clientv3.PutResponse
	for i := range 20 {
		resp, err := c.Put(ctx, fmt.Sprintf("k%02d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = resp
	}
	survivor := ms[2]
	sc := client(t, survivor)
	// The survivor has applied every acknowledged write before the others go.
	if _, err := sc.Get(ctx, "k19"); err != nil {
		t.Fatal(err)
	}
	ms[0].Close()
	ms[1].Close()
	// Refused, or left waiting for a quorum that never comes.
	short, cancel := context.WithTimeout(ctx, time.Second)
	_, err := sc.Put(short, "lost", "x")
	cancel()
	if err == nil {
		t.Fatal("a put succeeded without a quorum")
	}

	path := saveSnapshot(t, survivor)
	restored := restoreCluster(t, path, "n1")
	rc := client(t, restored[0])
	resp, err := rc.Get(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 20 || resp.Kvs[19].ModRevision != last.Header.Revision {
		t.Fatalf("the recovered cluster holds %d keys, the last at %d; want 20, the last at %d",
			len(resp.Kvs), resp.Kvs[len(resp.Kvs)-1].ModRevision, last.Header.Revision)
	}
	if _, err := rc.Put(ctx, "after", "recovery"); err != nil {
		t.Fatalf("a put on the recovered cluster: %v", err)
	}
}
