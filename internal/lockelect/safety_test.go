package lockelect

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// locker takes and releases one lock name for one contender.
type locker interface {
	lock(ctx context.Context) (key string, err error)
	unlock(ctx context.Context, key string) error
}

// serviceLocker locks through a Lock service (ours or etcd's).
type serviceLocker struct {
	svc   v3lockpb.LockClient
	name  string
	lease int64
}

func (l serviceLocker) lock(ctx context.Context) (string, error) {
	resp, err := l.svc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(l.name), Lease: l.lease})
	return string(resp.GetKey()), err
}

func (l serviceLocker) unlock(ctx context.Context, key string) error {
	_, err := l.svc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: []byte(key)})
	return err
}

// mutexLocker locks with clientv3's concurrency.Mutex, straight on KV.
type mutexLocker struct{ m *concurrency.Mutex }

func (l mutexLocker) lock(ctx context.Context) (string, error) {
	err := l.m.Lock(ctx)
	return l.m.Key(), err
}

func (l mutexLocker) unlock(ctx context.Context, _ string) error { return l.m.Unlock(ctx) }

// TestLockMutualExclusion has many contenders take one lock repeatedly, most
// through our Lock service, some through etcd's and some with clientv3's
// concurrency.Mutex (all queue on the same keys), and checks that no two
// hold it at once, that the fencing tokens (the lock keys' create
// revisions) grow with every grant, and that each holder's fenced write
// succeeds.
func TestLockMutualExclusion(t *testing.T) {
	f := newFixture(t)
	const name, rounds = "mutex", 5
	var lockers []locker
	for i := range 10 {
		lease := f.grant(t, 60)
		switch {
		case i < 6:
			lockers = append(lockers, serviceLocker{f.ours.lock, name, lease})
		case i < 8:
			lockers = append(lockers, serviceLocker{f.etcd.lock, name, lease})
		default:
			s, err := concurrency.NewSession(f.kv, concurrency.WithLease(clientv3.LeaseID(lease)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Orphan() })
			lockers = append(lockers, mutexLocker{concurrency.NewMutex(s, name)})
		}
	}

	var (
		holders atomic.Int32
		mu      sync.Mutex
		last    int64 // newest fencing token granted, under mu
		grants  int   // under mu
	)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i, l := range lockers {
		wg.Go(func() {
			for j := range rounds {
				key, err := l.lock(ctx)
				if err != nil {
					t.Errorf("contender %d: lock: %v", i, err)
					return
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("contender %d: %d holders at once", i, n)
				}
				resp, err := f.kv.Get(ctx, key)
				if err != nil || len(resp.Kvs) == 0 {
					t.Errorf("contender %d: lock key %q while holding: %v, %v", i, key, resp, err)
					return
				}
				token := resp.Kvs[0].CreateRevision
				mu.Lock()
				if token <= last {
					t.Errorf("contender %d: fencing token %d after %d", i, token, last)
				}
				last = token
				grants++
				mu.Unlock()
				// The write a real holder would guard with its token.
				tr, err := f.kv.Txn(ctx).
					If(clientv3.Compare(clientv3.CreateRevision(key), "=", token)).
					Then(clientv3.OpPut(name+"-data", fmt.Sprintf("%d/%d", i, j))).
					Commit()
				if err != nil || !tr.Succeeded {
					t.Errorf("contender %d: fenced write: %v, %v", i, tr, err)
				}
				holders.Add(-1)
				if err := l.unlock(ctx, key); err != nil {
					t.Errorf("contender %d: unlock: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if want := len(lockers) * rounds; grants != want {
		t.Errorf("%d grants, want %d", grants, want)
	}
}

// TestNoGrantAfterLeaseExpiry checks the lease-alive guarantee with a lease
// that really expires (TTL 1 s, not kept alive) while its owner waits behind
// a holder, the order of events in etcd issue #11456: the waiter's key goes
// with its lease, then the holder releases. Lock must answer "mutex: session
// is expired" and Campaign "election: not leader", never a grant.
func TestNoGrantAfterLeaseExpiry(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	holder := f.grant(t, 60)
	held, err := f.ours.lock.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("l"), Lease: holder})
	if err != nil {
		t.Fatal(err)
	}
	leading, err := f.ours.elect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: holder, Value: []byte("h")})
	if err != nil {
		t.Fatal(err)
	}

	short := f.grant(t, 1)
	lch := async(func() (*v3lockpb.LockResponse, error) {
		return f.ours.lock.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("l"), Lease: short})
	})
	cch := async(func() (*v3electionpb.CampaignResponse, error) {
		return f.ours.elect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: short, Value: []byte("s")})
	})
	for _, p := range []string{"l/", "e/"} {
		f.waitKeys(t, p, 2) // queued
	}
	for _, p := range []string{"l/", "e/"} {
		f.waitKeys(t, p, 1) // expired with the lease
	}
	if _, err := f.ours.lock.Unlock(ctx, &v3lockpb.UnlockRequest{Key: held.Key}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ours.elect.Resign(ctx, &v3electionpb.ResignRequest{Leader: leading.Leader}); err != nil {
		t.Fatal(err)
	}

	if resp, err := await(t, lch, "Lock with an expiring lease"); errText(err) != ErrSessionExpired.Error() {
		t.Errorf("Lock whose lease expired while waiting = %v, %v; want %q", resp, err, ErrSessionExpired)
	}
	if resp, err := await(t, cch, "Campaign with an expiring lease"); errText(err) != ErrElectionNotLeader.Error() {
		t.Errorf("Campaign whose lease expired while waiting = %v, %v; want %q", resp, err, ErrElectionNotLeader)
	}
	for _, p := range []string{"l/", "e/"} {
		f.waitKeys(t, p, 0)
	}
}
