package embed

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit"
)

// addMember adds a voter with a fresh peer URL through c (retrying while
// the strict reconfiguration check refuses it because the last member
// added is not connected yet) and starts it on a new data directory,
// joining the cluster whose current members are named by initial.
func addMember(t *testing.T, c *clientv3.Client, name, initial string) *Member {
	t.Helper()
	peer := fmt.Sprintf("http://127.0.0.1:%d", freeport.Port(t))
	var lastErr error
	kit.WaitFor(t, "MemberAdd of "+name, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, lastErr = c.MemberAdd(ctx, []string{peer})
		if lastErr != nil {
			t.Logf("MemberAdd %s: %v", name, lastErr)
		}
		return lastErr == nil
	})
	cfg := testConfig(t, t.TempDir())
	cfg.Name = name
	cfg.ListenPeerURLs = []string{peer}
	cfg.InitialAdvertisePeerURLs = []string{peer}
	cfg.InitialCluster = initial + "," + name + "=" + peer
	cfg.InitialClusterState = ClusterStateExisting
	cfg.InitialClusterToken = "embed-test"
	cfg.HeartbeatMs, cfg.ElectionMs = 20, 200
	return start(t, cfg)
}

// TestForceNewClusterRecoversLostQuorum is the lost-quorum runbook: two of
// three members are destroyed, the survivor restarts with ForceNewCluster
// as a cluster of one holding every write it had applied, takes writes,
// and two new members join it until all three hold the same state.
func TestForceNewClusterRecoversLostQuorum(t *testing.T) {
	ms := startCluster(t, 3, "http", nil)
	c := client(t, ms[0])
	ctx := ctxT(t)
	var last *clientv3.PutResponse
	for i := range 20 {
		resp, err := c.Put(ctx, fmt.Sprintf("k%02d", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		last = resp
	}
	survivor := ms[2]
	// A linearizable read through the survivor: it has applied every
	// acknowledged write before the others go.
	if _, err := client(t, survivor).Get(ctx, "k19"); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:2] {
		m.Close()
		if err := os.RemoveAll(m.cfg.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	survivor.Close()

	cfg := *survivor.cfg
	cfg.Recovery.ForceNewCluster = true
	forced := start(t, &cfg)
	fc := client(t, forced)
	list, err := fc.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Members) != 1 || list.Members[0].ID != forced.Server().MemberID() {
		t.Fatalf("the forced member lists %v, want itself alone", list.Members)
	}
	resp, err := fc.Get(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 20 || resp.Kvs[19].ModRevision != last.Header.Revision {
		t.Fatalf("the forced member holds %d keys; want 20, the last at %d", len(resp.Kvs), last.Header.Revision)
	}
	for i, kv := range resp.Kvs {
		if string(kv.Key) != fmt.Sprintf("k%02d", i) || string(kv.Value) != fmt.Sprint(i) {
			t.Fatalf("key %d is %s=%s", i, kv.Key, kv.Value)
		}
	}
	if _, err := fc.Put(ctx, "after", "force"); err != nil {
		t.Fatalf("a put on the forced cluster: %v", err)
	}

	initial := cfg.Name + "=" + cfg.InitialAdvertisePeerURLs[0]
	m4 := addMember(t, fc, "m4", initial)
	initial += ",m4=" + m4.PeerURLs()[0]
	m5 := addMember(t, fc, "m5", initial)
	all := []*Member{forced, m4, m5}

	final, err := fc.Put(ctx, "grown", "3")
	if err != nil {
		t.Fatal(err)
	}
	rev := final.Header.Revision
	var hashes []uint32
	for i, m := range all {
		mc := client(t, m)
		kit.WaitFor(t, fmt.Sprintf("member %d to apply revision %d", i, rev), func() bool {
			r, err := mc.Get(ctx, "grown", clientv3.WithSerializable())
			return err == nil && r.Header.Revision >= rev
		})
		h, err := mc.HashKV(ctx, m.ClientURLs()[0], rev)
		if err != nil {
			t.Fatalf("HashKV of member %d: %v", i, err)
		}
		hashes = append(hashes, h.Hash)
		list, err := mc.MemberList(ctx)
		if err != nil || len(list.Members) != 3 {
			t.Fatalf("member %d lists %v (%v), want 3 members", i, list, err)
		}
	}
	if hashes[0] != hashes[1] || hashes[0] != hashes[2] {
		t.Fatalf("HashKV at %d differs between members: %x", rev, hashes)
	}
}
