package lockelect

import (
	"context"
	"errors"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// lockCall records one Lock answer.
func (r *recorder) lockResult(what string, resp *v3lockpb.LockResponse, err error) {
	if err != nil {
		r.logf("%s: %s", what, r.err(err))
		return
	}
	r.logf("%s: key=%s", what, r.key(resp.Key))
}

// lock calls Lock and records the answer.
func (r *recorder) lock(t *testing.T, what, name string, lease int64) *v3lockpb.LockResponse {
	t.Helper()
	resp, err := r.svc.lock.Lock(testCtx(t), &v3lockpb.LockRequest{Name: r.name(name), Lease: lease})
	r.lockResult(what, resp, err)
	return resp
}

// lockAsync starts Lock in the background and waits until its key is
// queued, that is until n keys exist under the name.
func (r *recorder) lockAsync(t *testing.T, ctx context.Context, name string, lease int64, n int) <-chan result[*v3lockpb.LockResponse] {
	t.Helper()
	ch := async(func() (*v3lockpb.LockResponse, error) {
		return r.svc.lock.Lock(ctx, &v3lockpb.LockRequest{Name: r.name(name), Lease: lease})
	})
	r.waitKeys(t, name+"/", n)
	return ch
}

// unlock calls Unlock and records the outcome.
func (r *recorder) unlock(t *testing.T, what string, key []byte) {
	t.Helper()
	_, err := r.svc.lock.Unlock(testCtx(t), &v3lockpb.UnlockRequest{Key: key})
	if err != nil {
		r.logf("%s: %s", what, r.err(err))
		return
	}
	r.logf("%s: ok", what)
}

// TestLockMatchesEtcd runs the same Lock and Unlock calls against etcd's
// Lock service and ours and compares what a client sees: keys, lock keys'
// revisions and leases, queueing order, and errors.
func TestLockMatchesEtcd(t *testing.T) {
	compareWithEtcd(t, func(t *testing.T, r *recorder) {
		a, b, c := r.grant(t, "A"), r.grant(t, "B"), r.grant(t, "C")
		gone := r.grant(t, "gone")
		r.revoke(t, gone)

		// Uncontended, then again with the same lease: one acquisition.
		ha := r.lock(t, "lock A", "l", a)
		r.lock(t, "lock A again", "l", a)
		r.keys(t, "l/")

		// Lease 0: the service grants a lease of its own.
		h0 := r.lock(t, "lock lease 0", "z", 0)
		r.keys(t, "z/")
		r.unlock(t, "unlock lease-0 key", h0.GetKey())

		r.lock(t, "lock with revoked lease", "l", gone)

		// Queued behind A: B waits, C gives up and leaves the queue.
		bch := r.lockAsync(t, testCtx(t), "l", b, 2)
		cctx, cancel := context.WithCancel(testCtx(t))
		cch := r.lockAsync(t, cctx, "l", c, 3)
		cancel()
		resp, err := await(t, cch, "cancelled Lock")
		r.lockResult("lock C cancelled", resp, err)
		r.waitKeys(t, "l/", 2)
		r.keys(t, "l/")

		r.unlock(t, "unlock A", ha.GetKey())
		resp, err = await(t, bch, "Lock B")
		r.lockResult("lock B after A unlocked", resp, err)
		r.unlock(t, "unlock B", resp.GetKey())
		r.unlock(t, "unlock B again", resp.GetKey())
		r.unlock(t, "unlock empty key", nil)
		r.keys(t, "l/")

		// Unlock deletes whatever key it is given.
		if _, err := r.svc.kv.Put(testCtx(t), string(r.name("l/plain")), "v"); err != nil {
			t.Fatal(err)
		}
		r.unlock(t, "unlock plain key", r.name("l/plain"))
		r.keys(t, "l/")

		// The waiter's lease is revoked: no grant, ever.
		ha = r.lock(t, "lock A", "m", a)
		d := r.grant(t, "D")
		dch := r.lockAsync(t, testCtx(t), "m", d, 2)
		r.revoke(t, d)
		r.unlock(t, "unlock A", ha.GetKey())
		resp, err = await(t, dch, "Lock D")
		r.lockResult("lock D, lease revoked while waiting", resp, err)
		r.keys(t, "m/")

		// The holder's lease is revoked: the next waiter gets the lock.
		e, g := r.grant(t, "E"), r.grant(t, "G")
		r.lock(t, "lock E", "n", e)
		gch := r.lockAsync(t, testCtx(t), "n", g, 2)
		r.revoke(t, e)
		resp, err = await(t, gch, "Lock G")
		r.lockResult("lock G after E's lease revoked", resp, err)
		r.keys(t, "n/")
	})
}

// TestCancelDuringEnqueueLeavesQueue cancels a Lock's context while the
// write that queues its key is in flight (after the write is applied,
// before its answer arrives): the key must leave the queue, or it would
// block every later Lock until its lease ends. This was a flake of
// TestLockMatchesEtcd under -race before enqueue.
func TestCancelDuringEnqueueLeavesQueue(t *testing.T) {
	f := newFixture(t)
	lease := f.grant(t, 60)
	key := ownKey("cancelled/", lease)
	ctx, cancel := context.WithCancel(testCtx(t))
	_, err := enqueue(ctx, f.kv, key, func(tctx context.Context) (*clientv3.TxnResponse, error) {
		resp, err := f.kv.Txn(tctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, "", clientv3.WithLease(clientv3.LeaseID(lease)))).
			Commit()
		cancel() // the caller gives up while the answer is on its way
		return resp, err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("enqueue after cancel: got %v, want %v", err, context.Canceled)
	}
	got, err := f.kv.Get(testCtx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 0 {
		t.Fatalf("the cancelled caller's key %q stayed in the queue", key)
	}
}
