package embed

import (
	"context"
	"errors"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/tests/kit"
)

// leaseKeys returns the keys TimeToLive reports attached to id.
func leaseKeys(t *testing.T, c *clientv3.Client, id clientv3.LeaseID) []string {
	t.Helper()
	r, err := c.TimeToLive(ctxT(t), id, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatalf("TimeToLive(%x): %v", id, err)
	}
	var keys []string
	for _, k := range r.Keys {
		keys = append(keys, string(k))
	}
	return keys
}

// TestLeaseEndToEnd drives a member's Lease service through clientv3:
// grants with the member's and the client's IDs, etcd's minimum and
// maximum TTL, attached keys, keep-alives of known and unknown leases,
// Leases, a key re-put without its lease, Txn compares on the lease,
// revoke deleting every attached key at one revision, and expiry.
func TestLeaseEndToEnd(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	ctx := ctxT(t)

	long, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if long.ID <= 0 || long.TTL != 60 {
		t.Fatalf("server-chosen grant: ID %d TTL %d, want a positive ID and TTL 60", long.ID, long.TTL)
	}
	second, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == long.ID || second.ID <= 0 {
		t.Fatalf("second server-chosen ID %d (first %d)", second.ID, long.ID)
	}
	// etcd's minimum TTL at the default 100 ms heartbeat and 1 s election
	// timeout is 2 s: a shorter TTL is raised to it.
	const short = clientv3.LeaseID(0x42)
	g, err := leaseGrantID(ctx, c, short, 1)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID != int64(short) || g.TTL != 2 {
		t.Fatalf("client-chosen grant with TTL 1: ID %x TTL %d, want %x and etcd's minimum 2", g.ID, g.TTL, short)
	}
	if _, err := c.Put(ctx, "probe", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := leaseGrantID(ctx, c, short, 10); !errors.Is(err, rpctypes.ErrLeaseExist) {
		t.Fatalf("granting an existing ID: %v, want %v", err, rpctypes.ErrLeaseExist)
	}
	// Revoked before its 2 s can run out, so the rest does not race it.
	if _, err := c.Revoke(ctx, short); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatal(err)
	}
	if _, err := c.Grant(ctx, 9_000_000_001); !errors.Is(err, rpctypes.ErrLeaseTTLTooLarge) {
		t.Fatalf("granting a TTL above the maximum: %v, want %v", err, rpctypes.ErrLeaseTTLTooLarge)
	}
	if _, err := c.Put(ctx, "nolease", "x", clientv3.WithLease(0x777)); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("put with an unknown lease: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}

	// Attach keys, detach one by a re-put without a lease.
	for _, k := range []string{"a/1", "a/2", "a/3", "a/4"} {
		if _, err := c.Put(ctx, k, "v", clientv3.WithLease(long.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Put(ctx, "a/2", "v2"); err != nil {
		t.Fatal(err)
	}
	if got := leaseKeys(t, c, long.ID); !slices.Equal(got, []string{"a/1", "a/3", "a/4"}) {
		t.Fatalf("attached keys %q, want a/1 a/3 a/4", got)
	}
	if r, err := c.Get(ctx, "a/2"); err != nil || r.Kvs[0].Lease != 0 {
		t.Fatalf("re-put key: %v %v, want lease 0", r, err)
	}
	ttl, err := c.TimeToLive(ctx, long.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 60 || ttl.TTL <= 0 || ttl.TTL > 60 || ttl.ID != long.ID {
		t.Fatalf("TimeToLive %+v, want granted 60 and 0 < TTL <= 60", ttl)
	}

	// Txn compares on a key's lease.
	tr, err := c.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue("a/1"), "=", long.ID)).Then(clientv3.OpGet("a/1")).Commit()
	if err != nil || !tr.Succeeded {
		t.Fatalf("compare lease of a/1 = %x: %+v %v, want success", long.ID, tr, err)
	}
	tr, err = c.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue("a/2"), "=", long.ID)).Commit()
	if err != nil || tr.Succeeded {
		t.Fatalf("compare lease of the detached a/2: %+v %v, want failure", tr, err)
	}

	// Keep-alives: a known lease answers its TTL, an unknown one clientv3
	// reports as not found.
	ka, err := c.KeepAliveOnce(ctx, long.ID)
	if err != nil || ka.TTL != 60 || ka.ID != long.ID {
		t.Fatalf("KeepAliveOnce: %+v %v, want TTL 60", ka, err)
	}
	if _, err := c.KeepAliveOnce(ctx, 0x999); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("KeepAliveOnce of an unknown lease: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if r, err := c.TimeToLive(ctx, 0x999); err != nil || r.TTL != -1 {
		t.Fatalf("TimeToLive of an unknown lease: %+v %v, want TTL -1", r, err)
	}

	ls, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []clientv3.LeaseID
	for _, l := range ls.Leases {
		ids = append(ids, l.ID)
	}
	slices.Sort(ids)
	want := []clientv3.LeaseID{long.ID, second.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("Leases %x, want %x", ids, want)
	}

	// Revoke deletes every attached key, at one revision.
	before, err := c.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	wc := c.Watch(ctx, "a/", clientv3.WithPrefix(), clientv3.WithRev(before.Header.Revision+1))
	rv, err := c.Revoke(ctx, long.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rv.Header.Revision != before.Header.Revision+1 {
		t.Fatalf("revoke at revision %d, want %d", rv.Header.Revision, before.Header.Revision+1)
	}
	evs := nextEvents(t, wc, 3)
	for i, k := range []string{"a/1", "a/3", "a/4"} {
		checkEvent(t, evs[i], mvccpb.DELETE, k, "", rv.Header.Revision)
	}
	if r, err := c.Get(ctx, "a/", clientv3.WithPrefix()); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Key) != "a/2" {
		t.Fatalf("after revoke: %v %v, want only a/2", r, err)
	}
	if _, err := c.Revoke(ctx, long.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("revoking twice: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if r, err := c.TimeToLive(ctx, long.ID); err != nil || r.TTL != -1 {
		t.Fatalf("TimeToLive of a revoked lease: %+v %v, want TTL -1", r, err)
	}
	// A lease without keys revokes without a revision.
	rv, err = c.Revoke(ctx, second.ID)
	if err != nil || rv.Header.Revision != before.Header.Revision+1 {
		t.Fatalf("revoking a lease without keys: %v %v, want revision %d", rv, err, before.Header.Revision+1)
	}

	// Expiry: a short lease's key goes once its TTL has passed.
	if _, err := leaseGrantID(ctx, c, short, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "e", "v", clientv3.WithLease(short)); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, "the expired lease's key to go", func() bool {
		r, err := c.Get(ctx, "e")
		return err == nil && len(r.Kvs) == 0
	})
	if r, err := c.TimeToLive(ctx, short); err != nil || r.TTL != -1 {
		t.Fatalf("TimeToLive of an expired lease: %+v %v, want TTL -1", r, err)
	}
}

// leaseGrantID grants a lease with a client-chosen ID, which clientv3's
// Grant cannot ask for.
func leaseGrantID(ctx context.Context, c *clientv3.Client, id clientv3.LeaseID, ttl int64) (*pb.LeaseGrantResponse, error) {
	r, err := pb.NewLeaseClient(c.ActiveConnection()).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: int64(id), TTL: ttl})
	return r, rpctypes.Error(err)
}

// TestLeaseKeepAliveStream keeps a lease of etcd's minimum TTL (2 s)
// alive with clientv3's keep-alive stream well past that TTL: every answer
// carries the full TTL, and the attached key survives.
func TestLeaseKeepAliveStream(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	ctx := ctxT(t)
	g, err := c.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "k", "v", clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	ch, err := c.KeepAlive(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	// clientv3 renews every TTL/3: seven answers span two TTLs, so the
	// lease would have expired without them.
	for i := 0; i < 7; i++ {
		ka, ok := <-ch
		if !ok {
			t.Fatalf("keep-alive channel closed after %d answers", i)
		}
		if ka.TTL != 2 || ka.ID != g.ID {
			t.Fatalf("keep-alive answer %d: %+v, want TTL 2", i, ka)
		}
	}
	r, err := c.Get(ctx, "k")
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("the kept-alive lease's key: %v %v", r, err)
	}
	if ttl, err := c.TimeToLive(ctx, g.ID); err != nil || ttl.TTL < 0 {
		t.Fatalf("TimeToLive of the kept-alive lease: %+v %v", ttl, err)
	}
}

// TestLeaseRestart checks that a member keeps its leases, their keys and
// their expiry across a restart.
func TestLeaseRestart(t *testing.T) {
	dir := t.TempDir()
	m := start(t, testConfig(t, dir))
	c := client(t, m)
	ctx := ctxT(t)
	long, err := c.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	short, err := c.Grant(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range []struct {
		k  string
		id clientv3.LeaseID
	}{{"l/1", long.ID}, {"l/2", long.ID}, {"s/1", short.ID}} {
		if _, err := c.Put(ctx, kv.k, "v", clientv3.WithLease(kv.id)); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m = start(t, testConfig(t, dir))
	c = client(t, m)
	if got := leaseKeys(t, c, long.ID); !slices.Equal(got, []string{"l/1", "l/2"}) {
		t.Fatalf("after restart the long lease has keys %q, want l/1 l/2", got)
	}
	if ttl, err := c.TimeToLive(ctx, long.ID); err != nil || ttl.GrantedTTL != 600 || ttl.TTL <= 0 {
		t.Fatalf("TimeToLive after restart: %+v %v", ttl, err)
	}
	if ka, err := c.KeepAliveOnce(ctx, long.ID); err != nil || ka.TTL != 600 {
		t.Fatalf("KeepAliveOnce after restart: %+v %v", ka, err)
	}
	kit.WaitFor(t, "the short lease to expire after the restart", func() bool {
		r, err := c.Get(ctx, "s/", clientv3.WithPrefix())
		return err == nil && len(r.Kvs) == 0
	})
	if r, err := c.Get(ctx, "l/", clientv3.WithPrefix()); err != nil || len(r.Kvs) != 2 {
		t.Fatalf("the long lease's keys after the short one expired: %v %v", r, err)
	}
	ls, err := c.Leases(ctx)
	if err != nil || len(ls.Leases) != 1 || ls.Leases[0].ID != long.ID {
		t.Fatalf("Leases after expiry: %+v %v, want only %x", ls, err, long.ID)
	}
}
