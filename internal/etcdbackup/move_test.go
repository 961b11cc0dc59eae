package etcdbackup_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	etcdembed "go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/embed"
	"github.com/cairn-db/cairn/internal/etcdbackup"
	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/raftlog"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/tests/kit/oracle"
	"github.com/cockroachdb/pebble/v2/vfs"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startEtcd starts a single-member embedded etcd in dir (a new one, or
// one etcdutl restored for name, peer and the token "restored") and
// returns it. stop (also run at the end of the test) stops it.
func startEtcd(t *testing.T, dir, name, peer string, restored bool) (e *oracle.Etcd, stop func()) {
	t.Helper()
	peerURL, err := url.Parse(peer)
	if err != nil {
		t.Fatal(err)
	}
	e = oracle.Start(t, oracle.Dir(dir), func(cfg *etcdembed.Config) {
		cfg.Name = name
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
		if restored {
			cfg.InitialClusterToken = "restored"
		}
	})
	return e, e.Stop
}

// startCairn starts a cairn member on dir (a new one, or one restored for
// name, peer and the token "restored") and returns its client URL.
func startCairn(t *testing.T, dir, name, peer string) *embed.Member {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name, cfg.DataDir = name, dir
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.InitialCluster = name + "=" + peer
	cfg.InitialClusterToken = "restored"
	cfg.UnsafeNoFsync = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := embed.Start(cfg)
	if err != nil {
		t.Fatalf("start cairn: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// workload writes a history: keys written several times, deletions, keys
// on leases, a physical compaction, and writes after it. With k8s it
// writes a few thousand keys shaped like a Kubernetes API server's. It
// returns the compaction revision.
func workload(t *testing.T, c *clientv3.Client, k8s bool) int64 {
	t.Helper()
	ctx := ctxT(t)
	put := func(k, v string, opts ...clientv3.OpOption) *clientv3.PutResponse {
		t.Helper()
		resp, err := c.Put(ctx, k, v, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := range 4 {
		for _, k := range []string{"a", "b", "c/1", "c/2", "\x00bin\xff"} {
			put(k, fmt.Sprintf("%s-v%d", k, i))
		}
	}
	if _, err := c.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	long, err := c.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	short, err := c.Grant(ctx, 900)
	if err != nil {
		t.Fatal(err)
	}
	put("leased/1", "v", clientv3.WithLease(long.ID))
	put("leased/2", "v", clientv3.WithLease(short.ID))
	put("leased/3", "v", clientv3.WithLease(short.ID))
	put("leased/3", "unleased") // detached by an overwrite
	if _, err := c.Txn(ctx).Then(clientv3.OpPut("t/1", "x"), clientv3.OpPut("t/2", "y"), clientv3.OpDelete("c/2")).Commit(); err != nil {
		t.Fatal(err)
	}
	if k8s {
		events, err := c.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 1500 {
			put(fmt.Sprintf("/registry/pods/ns%d/pod-%d", i%7, i), strings.Repeat("p", 100+i%50))
			if i%3 == 0 {
				put(fmt.Sprintf("/registry/events/ns%d/pod-%d.%x", i%7, i, i*7919), "event", clientv3.WithLease(events.ID))
			}
			if i%5 == 0 {
				put(fmt.Sprintf("/registry/pods/ns%d/pod-%d", i%7, i), "updated")
			}
			if i%11 == 0 {
				if _, err := c.Delete(ctx, fmt.Sprintf("/registry/pods/ns%d/pod-%d", i%7, i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		for i := range 300 {
			put(fmt.Sprintf("/registry/configmaps/kube-system/cm-%d", i), "data")
		}
	}
	resp := put("a", "before-compact")
	compact := resp.Header.Revision - 5
	if k8s {
		compact = resp.Header.Revision - 300 // a longer history to compare
	}
	if _, err := c.Compact(ctx, compact, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		put("d", fmt.Sprint(i))
	}
	if _, err := c.Delete(ctx, "c/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	return compact
}

func kvString(kv *mvccpb.KeyValue) string {
	return fmt.Sprintf("%q=%q c%d m%d v%d l%x", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

// compareStores checks that got serves what want serves: the current
// revision, every key at every revision from compact on (create and mod
// revisions, versions, leases), ErrCompacted below compact, and the
// leases with their TTLs and keys.
func compareStores(t *testing.T, want, got *clientv3.Client, compact int64) {
	t.Helper()
	ctx := ctxT(t)
	w0, err := want.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	g0, err := got.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	rev := w0.Header.Revision
	if g0.Header.Revision != rev || g0.Count != w0.Count {
		t.Fatalf("restored store at revision %d with %d keys, source at %d with %d", g0.Header.Revision, g0.Count, rev, w0.Count)
	}
	for r := compact; r <= rev; r++ {
		w, err := want.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(r))
		if err != nil {
			t.Fatalf("source get at %d: %v", r, err)
		}
		g, err := got.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(r))
		if err != nil {
			t.Fatalf("restored get at %d: %v", r, err)
		}
		if len(w.Kvs) != len(g.Kvs) {
			t.Fatalf("at revision %d: source has %d keys, restored %d", r, len(w.Kvs), len(g.Kvs))
		}
		for i := range w.Kvs {
			if a, b := kvString(w.Kvs[i]), kvString(g.Kvs[i]); a != b {
				t.Fatalf("at revision %d:\nsource   %s\nrestored %s", r, a, b)
			}
		}
	}
	for _, c := range []*clientv3.Client{want, got} {
		if _, err := c.Get(ctx, "a", clientv3.WithRev(compact-1)); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatalf("get below the compaction: %v, want %v", err, rpctypes.ErrCompacted)
		}
	}
	// The event log: a watch from the compaction revision sees the same
	// events, with the same previous versions.
	events := func(c *clientv3.Client) []string {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// A progress notification at rev says every event up to rev has
		// come (an unsynced watcher ignores the request: ask again).
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
					c.RequestProgress(wctx)
				}
			}
		}()
		var out []string
		for wr := range c.Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(compact), clientv3.WithPrevKV()) {
			if err := wr.Err(); err != nil {
				t.Fatalf("watch from %d: %v", compact, err)
			}
			for _, ev := range wr.Events {
				e := fmt.Sprintf("%s %s", ev.Type, kvString(ev.Kv))
				if ev.PrevKv != nil {
					e += " prev " + kvString(ev.PrevKv)
				}
				out = append(out, e)
			}
			if wr.IsProgressNotify() && wr.Header.Revision >= rev {
				return out
			}
		}
		t.Fatalf("watch from %d ended before revision %d", compact, rev)
		return nil
	}
	if w, g := events(want), events(got); !slices.Equal(w, g) {
		t.Fatalf("events from revision %d:\nsource   %q\nrestored %q", compact, w, g)
	}
	leases := func(c *clientv3.Client) []string {
		ls, err := c.Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range ls.Leases {
			ttl, err := c.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
			if err != nil {
				t.Fatal(err)
			}
			if ttl.TTL <= 0 || ttl.TTL > ttl.GrantedTTL {
				t.Fatalf("lease %x: remaining TTL %d of %d", l.ID, ttl.TTL, ttl.GrantedTTL)
			}
			var keys []string
			for _, k := range ttl.Keys {
				keys = append(keys, string(k))
			}
			slices.Sort(keys)
			out = append(out, fmt.Sprintf("%x ttl %d keys %q", l.ID, ttl.GrantedTTL, keys))
		}
		slices.Sort(out)
		return out
	}
	if w, g := leases(want), leases(got); !slices.Equal(w, g) {
		t.Fatalf("leases:\nsource   %v\nrestored %v", w, g)
	}
}

func saveSnapshot(t *testing.T, endpoint string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.db")
	if _, err := snapshot.SaveWithVersion(ctxT(t), zap.NewNop(), clientv3.Config{Endpoints: []string{endpoint}}, path); err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	return path
}

func restoreCairn(t *testing.T, path, name, peer string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name+".cairn")
	_, err := server.RestoreSnapshot(server.RestoreConfig{
		SnapshotPath: path, DataDir: dir, Name: name, InitialCluster: name + "=" + peer,
		ClusterToken: "restored", PeerURLs: []string{peer},
	})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	return dir
}

func testFromEtcd(t *testing.T, k8s bool) {
	src, _ := startEtcd(t, t.TempDir(), "etcd", "http://"+freeport.Addr(t), false)
	sc := newClient(t, src.Addr)
	compact := workload(t, sc, k8s)
	path := saveSnapshot(t, src.Addr)

	want, err := etcdutl.NewV3(zap.NewNop()).Status(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := server.SnapshotStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != server.FormatEtcd || info.Hash != want.Hash || info.Revision != want.Revision ||
		info.TotalKeys != int64(want.TotalKey) || info.TotalSize != want.TotalSize || info.CompactRevision != compact {
		t.Fatalf("status %+v, etcdutl says %+v (compaction %d)", info, want, compact)
	}

	peer := "http://" + freeport.Addr(t)
	dir := restoreCairn(t, path, "c1", peer)
	m := startCairn(t, dir, "c1", peer)
	compareStores(t, sc, newClient(t, m.ClientURLs()[0]), compact)
}

func testToEtcd(t *testing.T, k8s bool) {
	peer := "http://" + freeport.Addr(t)
	src := startCairn(t, t.TempDir(), "c1", peer)
	sc := newClient(t, src.ClientURLs()[0])
	compact := workload(t, sc, k8s)
	path := saveSnapshot(t, src.ClientURLs()[0])

	st, err := etcdutl.NewV3(zap.NewNop()).Status(path)
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v", err)
	}
	info, err := server.SnapshotStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	rev := src.Server().Rev()
	if st.Revision != rev || st.Version != "3.7.0" || info.Hash != st.Hash || int64(st.TotalKey) != info.TotalKeys {
		t.Fatalf("etcdutl status %+v, cairn status %+v; want revision %d", st, info, rev)
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
	compareStores(t, sc, newClient(t, e.Addr), compact)
}

func TestSnapshotFromEtcd(t *testing.T) { testFromEtcd(t, false) }

func TestSnapshotToEtcd(t *testing.T) { testToEtcd(t, false) }

func TestSnapshotKubernetesFromEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("a few thousand keys")
	}
	testFromEtcd(t, true)
}

func TestSnapshotKubernetesToEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("a few thousand keys")
	}
	testToEtcd(t, true)
}

// TestSnapshotDamagedRefused: a damaged etcd file is refused by status and
// restore, and the restore leaves nothing behind. A member's own
// member/snap/db (no digest) restores; truncated, it is refused.
func TestSnapshotDamagedRefused(t *testing.T) {
	dir := t.TempDir()
	src, stop := startEtcd(t, filepath.Join(dir, "src"), "etcd", "http://"+freeport.Addr(t), false)
	sc := newClient(t, src.Addr)
	compact := workload(t, sc, false)
	path := saveSnapshot(t, src.Addr)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	member, err := os.ReadFile(filepath.Join(dir, "src", "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	if len(member)%512 == 32 {
		t.Fatalf("member/snap/db is %d bytes: it would be taken for a file with a digest", len(member))
	}
	flip := func(d []byte, at int) []byte {
		d = slices.Clone(d)
		d[at] ^= 0x40
		return d
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"a byte flipped", flip(data, len(data)/2), "integrity check"},
		{"the digest flipped", flip(data, len(data)-1), "integrity check"},
		{"truncated", data[:len(data)-100], "truncated"},
		{"truncated by pages", data[:len(data)-32-8192], "truncated"},
		{"truncated at a 512-byte boundary", data[:len(data)-512], "integrity check"},
		{"member db truncated", member[:len(member)-4096], "truncated"},
		// bbolt keeps two meta pages and survives one bad one.
		{"member db metas flipped", flip(flip(member, 40), 4096+40), "not a readable etcd database"},
		{"zeros", make([]byte, 4096), "neither a cairn nor an etcd snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".db")
			if err := os.WriteFile(p, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := server.SnapshotStatus(p); !errors.Is(err, raftnode.ErrBackupCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("status: %v, want %v saying %q", err, raftnode.ErrBackupCorrupt, tc.want)
			}
			if _, err := etcdbackup.Status(p); err == nil {
				t.Fatal("etcdbackup.Status accepted it")
			}
			dataDir := filepath.Join(dir, "restored-"+strings.ReplaceAll(tc.name, " ", "-"))
			_, err := server.RestoreSnapshot(server.RestoreConfig{
				SnapshotPath: p, DataDir: dataDir, Name: "r1",
				InitialCluster: "r1=http://127.0.0.1:1", ClusterToken: "t", PeerURLs: []string{"http://127.0.0.1:1"},
			})
			if !errors.Is(err, raftnode.ErrBackupCorrupt) {
				t.Fatalf("restore: %v, want %v", err, raftnode.ErrBackupCorrupt)
			}
			if ents, err := os.ReadDir(dir); err != nil || slices.ContainsFunc(ents, func(e os.DirEntry) bool {
				return strings.Contains(e.Name(), "restored-")
			}) {
				t.Fatalf("a refused restore left something behind: %v %v", ents, err)
			}
		})
	}

	// The member's own database, with no digest, restores whole.
	p := filepath.Join(dir, "member.db")
	if err := os.WriteFile(p, member, 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := etcdbackup.Status(p)
	if err != nil || info.HasDigest || info.CompactRevision != compact {
		t.Fatalf("member db: %+v, %v", info, err)
	}
	peer := "http://" + freeport.Addr(t)
	m := startCairn(t, restoreCairn(t, p, "c1", peer), "c1", peer)
	resp, err := newClient(t, m.ClientURLs()[0]).Get(ctxT(t), "a")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "before-compact" || resp.Header.Revision != info.Revision {
		t.Fatalf("restored from member/snap/db: %v, %v (want revision %d)", resp, err, info.Revision)
	}
}

// TestSnapshotFromEtcdBumped: a cluster restored with etcdutl's
// --bump-revision --mark-compacted (as Kubernetes operators restore)
// holds a key-less revision marker; moved to cairn, it keeps the bumped
// revision and compaction.
func TestSnapshotFromEtcdBumped(t *testing.T) {
	src, _ := startEtcd(t, t.TempDir(), "etcd", "http://"+freeport.Addr(t), false)
	workload(t, newClient(t, src.Addr), false)
	path := saveSnapshot(t, src.Addr)

	dir := filepath.Join(t.TempDir(), "e1.etcd")
	epeer := "http://" + freeport.Addr(t)
	err := etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{
		SnapshotPath: path, Name: "e1", OutputDataDir: dir, PeerURLs: []string{epeer},
		InitialCluster: "e1=" + epeer, InitialClusterToken: "restored",
		RevisionBump: 1000, MarkCompacted: true,
	})
	if err != nil {
		t.Fatalf("etcdutl snapshot restore: %v", err)
	}
	bumped, _ := startEtcd(t, dir, "e1", epeer, true)
	bc := newClient(t, bumped.Addr)
	resp, err := bc.Get(ctxT(t), "a")
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	path = saveSnapshot(t, bumped.Addr)
	info, err := server.SnapshotStatus(path)
	if err != nil || info.Revision != rev {
		t.Fatalf("status %+v, %v; want revision %d", info, err, rev)
	}

	peer := "http://" + freeport.Addr(t)
	m := startCairn(t, restoreCairn(t, path, "c1", peer), "c1", peer)
	compareStores(t, bc, newClient(t, m.ClientURLs()[0]), rev)
}

// TestSnapshotRestoresCairnFormat: a backup in cairn's earlier format
// (raftnode's, which Maintenance.Snapshot wrote before etcd's) still
// restores; status and restore tell it from etcd's by its first bytes.
func TestSnapshotRestoresCairnFormat(t *testing.T) {
	srcDir := t.TempDir()
	speer := "http://" + freeport.Addr(t)
	src := startCairn(t, srcDir, "c1", speer)
	compact := workload(t, newClient(t, src.ClientURLs()[0]), false)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	// Take the earlier format's backup of a copy of the stopped member's
	// engine.
	path := filepath.Join(t.TempDir(), "cairn-format.db")
	copyDir := t.TempDir()
	if err := os.CopyFS(copyDir, os.DirFS(srcDir)); err != nil {
		t.Fatal(err)
	}
	func() {
		eng, err := storage.Open(copyDir, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		b := eng.NewWriteBatch()
		for _, k := range membership.LocalKeys() { // the member's own, never in a backup
			if err := b.Delete(k, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
		files, err := raftlog.Open(vfs.Default, filepath.Join(copyDir, "wal"), raftlog.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer files.Close()
		ls, err := raftnode.OpenSeparateLogStore(eng, files)
		if err != nil {
			t.Fatal(err)
		}
		view, err := ls.SnapshotState()
		if err != nil {
			t.Fatal(err)
		}
		rc, _, err := view.Backup()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := io.Copy(f, rc); err != nil {
			t.Fatal(err)
		}
	}()
	info, err := server.SnapshotStatus(path)
	if err != nil || info.Format != server.FormatCairn || info.CompactRevision != compact {
		t.Fatalf("status %+v, %v; want cairn's format, compaction %d", info, err, compact)
	}

	peer := "http://" + freeport.Addr(t)
	m := startCairn(t, restoreCairn(t, path, "r1", peer), "r1", peer)
	// The source, back on its directory, serves what the restored member
	// must.
	orig := startCairn(t, srcDir, "c1", speer)
	compareStores(t, newClient(t, orig.ClientURLs()[0]), newClient(t, m.ClientURLs()[0]), compact)
}
