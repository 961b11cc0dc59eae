package runbook

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/proc"
)

// TestMoveFromEtcdAndBack moves a Kubernetes-like keyspace from an etcd
// member to a 3-member cairn cluster and back, as an operator would with
// the real tools (issue 13):
//
//  1. an etcd process holds keys under /registry/ (some rewritten, some
//     deleted, some attached to leases); etcdctl snapshot save backs it up;
//  2. cairn snapshot restore makes three data directories from the file
//     (one per member, the same --initial-cluster and token), and three
//     cairn members start on them;
//  3. etcdctl reads from each member: the same keys, values, create and mod
//     revisions, versions and leases as etcd's, the same store revision,
//     the same leases (lease list, lease timetolive --keys); etcdctl
//     endpoint hashkv agrees across the members;
//  4. etcdctl snapshot save from a cairn member, etcdutl snapshot restore,
//     an etcd process on the result: the same keys, revisions and leases
//     once more.
func TestMoveFromEtcdAndBack(t *testing.T) {
	nKeys := short(600, 3000)
	dir := t.TempDir()
	cairnBin := cairnBinary(t)
	etcdutl := tool(t, "etcdutl")

	// 1. etcd with the keyspace.
	src := startServer(t, proc.Etcd, "source", filepath.Join(dir, "source.etcd"), "", "")
	src.waitServing(t)
	populate(t, src, nKeys)
	srcCtl := newEtcdctl(t, src.clientURL)
	want := readState(t, srcCtl)
	t.Logf("etcd holds %d keys under /registry/ at revision %d, %d leases", len(want.kvs.Kvs), want.kvs.Header.Revision, len(want.leases))
	backup := filepath.Join(dir, "from-etcd.db")
	srcCtl.must(t, "snapshot", "save", backup)
	if err := src.p.Stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("stop etcd: %v", err)
	}

	// 2. Three cairn members restored from etcd's backup.
	names := []string{"c1", "c2", "c3"}
	peers := make([]string, len(names))
	clients := make([]string, len(names))
	var cluster []string
	for i, n := range names {
		peers[i] = "http://" + freeport.Addr(t)
		clients[i] = "http://" + freeport.Addr(t)
		cluster = append(cluster, n+"="+peers[i])
	}
	initialCluster := strings.Join(cluster, ",")
	var members []*server
	for i, n := range names {
		dataDir := filepath.Join(dir, n+".cairn")
		out, err := run(t, cairnBin, "snapshot", "restore", backup, "--name", n, "--data-dir", dataDir,
			"--initial-cluster", initialCluster, "--initial-cluster-token", "moved",
			"--initial-advertise-peer-urls", peers[i])
		if err != nil {
			t.Fatalf("cairn snapshot restore for %s: %v\n%s", n, err, out)
		}
		t.Logf("%s: %s", n, strings.TrimSpace(out))
		members = append(members, startServer(t, proc.Cairn, n, dataDir, clients[i], peers[i],
			"--initial-cluster", initialCluster, "--initial-cluster-state", "new",
			"--initial-cluster-token", "moved", "--heartbeat-interval", "100", "--election-timeout", "1000"))
	}
	for _, m := range members {
		m.waitServing(t)
	}

	// 3. Each member serves etcd's keyspace, revisions and leases.
	for _, m := range members {
		got := readState(t, newEtcdctl(t, m.clientURL))
		if diff := want.diff(got); diff != "" {
			failf(t, members, "cairn member %s after the restore differs from etcd: %s", m.name, diff)
		}
	}
	checkHashKV(t, members, newEtcdctl(t, clients...))

	// 4. Back to etcd.
	ctl := newEtcdctl(t, members[0].clientURL)
	back := filepath.Join(dir, "from-cairn.db")
	ctl.must(t, "snapshot", "save", back)
	// The cairn cluster still takes writes after the backup.
	if out, err := newEtcdctl(t, clients...).run(t, "put", "/registry/after-move", "v"); err != nil {
		failf(t, members, "etcdctl put on the moved cluster: %v\n%s", err, out)
	}
	backPeer := "http://" + freeport.Addr(t)
	backDir := filepath.Join(dir, "back.etcd")
	if out, err := run(t, etcdutl, "snapshot", "restore", back, "--name", "back", "--data-dir", backDir,
		"--initial-cluster", "back="+backPeer, "--initial-advertise-peer-urls", backPeer,
		"--initial-cluster-token", "back"); err != nil {
		t.Fatalf("etcdutl snapshot restore of cairn's backup: %v\n%s", err, out)
	}
	dst := startServer(t, proc.Etcd, "back", backDir, "", "")
	dst.waitServing(t)
	got := readState(t, newEtcdctl(t, dst.clientURL))
	if diff := want.diff(got); diff != "" {
		failf(t, []*server{dst}, "etcd restored from cairn's backup differs from the original etcd: %s", diff)
	}
}

// populate writes n keys under /registry/ through cli, rewrites every
// seventh, deletes every eleventh, and attaches every thirteenth to one of
// a few long leases, so that create and mod revisions, versions and leases
// all differ from key to key.
func populate(t *testing.T, s *server, n int) {
	t.Helper()
	cli := s.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var leases []clientv3.LeaseID
	for i := range 5 {
		l, err := cli.Grant(ctx, int64(3600+60*i))
		if err != nil {
			t.Fatalf("grant a lease on etcd: %v", err)
		}
		leases = append(leases, l.ID)
	}
	key := func(i int) string { return fmt.Sprintf("/registry/pods/ns%d/pod-%05d", i%17, i) }
	for i := range n {
		var opts []clientv3.OpOption
		if i%13 == 0 {
			opts = append(opts, clientv3.WithLease(leases[i/13%len(leases)]))
		}
		if _, err := cli.Put(ctx, key(i), fmt.Sprintf(`{"kind":"Pod","n":%d,"spec":%q}`, i, strings.Repeat("x", i%200)), opts...); err != nil {
			t.Fatalf("put on etcd: %v", err)
		}
	}
	for i := 0; i < n; i += 7 {
		if _, err := cli.Put(ctx, key(i), fmt.Sprintf(`{"kind":"Pod","n":%d,"rewritten":true}`, i)); err != nil {
			t.Fatalf("put on etcd: %v", err)
		}
	}
	for i := 0; i < n; i += 11 {
		if _, err := cli.Delete(ctx, key(i)); err != nil {
			t.Fatalf("delete on etcd: %v", err)
		}
	}
}

// state is what etcdctl shows of a member: the keys under /registry/ with
// the response header's revision, and each lease's granted TTL and keys.
type state struct {
	kvs    *clientv3.GetResponse
	leases map[clientv3.LeaseID]clientv3.LeaseTimeToLiveResponse
}

// readState reads the state with etcdctl get -w json, lease list and lease
// timetolive --keys.
func readState(t *testing.T, ctl etcdctl) *state {
	t.Helper()
	s := &state{kvs: &clientv3.GetResponse{}}
	ctl.json(t, s.kvs, "get", "--prefix", "/registry/")
	var list clientv3.LeaseLeasesResponse
	ctl.json(t, &list, "lease", "list")
	s.leases = map[clientv3.LeaseID]clientv3.LeaseTimeToLiveResponse{}
	for _, l := range list.Leases {
		var ttl clientv3.LeaseTimeToLiveResponse
		ctl.json(t, &ttl, "lease", "timetolive", "--keys", strconv.FormatInt(int64(l.ID), 16))
		s.leases[l.ID] = ttl
	}
	return s
}

// diff describes how got differs from s, "" if it does not: the header
// revision, each key's value, revisions, version and lease, and each
// lease's granted TTL and keys (the remaining TTL only has to be positive
// and at most the granted one).
func (s *state) diff(got *state) string {
	var d []string
	if got.kvs.Header.GetRevision() != s.kvs.Header.GetRevision() {
		d = append(d, fmt.Sprintf("store revision %d, want %d", got.kvs.Header.GetRevision(), s.kvs.Header.GetRevision()))
	}
	if len(got.kvs.Kvs) != len(s.kvs.Kvs) {
		d = append(d, fmt.Sprintf("%d keys, want %d", len(got.kvs.Kvs), len(s.kvs.Kvs)))
	}
	for i := 0; i < len(got.kvs.Kvs) && i < len(s.kvs.Kvs) && len(d) < 10; i++ {
		g, w := got.kvs.Kvs[i], s.kvs.Kvs[i]
		if string(g.Key) != string(w.Key) || string(g.Value) != string(w.Value) || g.CreateRevision != w.CreateRevision ||
			g.ModRevision != w.ModRevision || g.Version != w.Version || g.Lease != w.Lease {
			d = append(d, fmt.Sprintf("key #%d: %q create %d mod %d version %d lease %x, want %q create %d mod %d version %d lease %x",
				i, g.Key, g.CreateRevision, g.ModRevision, g.Version, g.Lease, w.Key, w.CreateRevision, w.ModRevision, w.Version, w.Lease))
		}
	}
	if len(got.leases) != len(s.leases) {
		d = append(d, fmt.Sprintf("%d leases, want %d", len(got.leases), len(s.leases)))
	}
	for id, w := range s.leases {
		g, ok := got.leases[id]
		if !ok {
			d = append(d, fmt.Sprintf("lease %x missing", id))
			continue
		}
		if g.GrantedTTL != w.GrantedTTL || g.TTL <= 0 || g.TTL > g.GrantedTTL {
			d = append(d, fmt.Sprintf("lease %x: granted TTL %d remaining %d, want granted %d", id, g.GrantedTTL, g.TTL, w.GrantedTTL))
		}
		if gk, wk := sortedKeys(g.Keys), sortedKeys(w.Keys); gk != wk {
			d = append(d, fmt.Sprintf("lease %x: keys %s, want %s", id, gk, wk))
		}
	}
	return strings.Join(d, "; ")
}

func sortedKeys(keys [][]byte) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = string(k)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// checkHashKV waits until etcdctl endpoint hashkv reports the same hash
// at the same revision on every member.
func checkHashKV(t *testing.T, members []*server, ctl etcdctl) {
	t.Helper()
	var last string
	err := kit.Poll(kit.WaitTimeout, func() error {
		var eps []struct {
			Endpoint string
			HashKV   *clientv3.HashKVResponse
		}
		ctl.json(t, &eps, "endpoint", "hashkv")
		if len(eps) != len(members) {
			return fmt.Errorf("etcdctl endpoint hashkv answered for %d endpoints, want %d", len(eps), len(members))
		}
		for _, e := range eps {
			if e.HashKV == nil {
				return fmt.Errorf("no hash from %s", e.Endpoint)
			}
		}
		var b strings.Builder
		for _, e := range eps {
			fmt.Fprintf(&b, "%s: hash %d at revision %d (compacted %d); ", e.Endpoint, e.HashKV.Hash, e.HashKV.HashRevision, e.HashKV.CompactRevision)
		}
		last = b.String()
		for _, e := range eps[1:] {
			if e.HashKV.Hash != eps[0].HashKV.Hash || e.HashKV.HashRevision != eps[0].HashKV.HashRevision {
				return fmt.Errorf("hashes differ: %s", last)
			}
		}
		return nil
	})
	if err != nil {
		failf(t, members, "etcdctl endpoint hashkv: %v", err)
	}
	t.Logf("etcdctl endpoint hashkv: %s", last)
}
