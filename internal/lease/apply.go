package lease

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// This file holds the apply side: the calls that change replicated state.
// The apply goroutine makes them, in log order, into the batch that also
// carries the entry's mvcc writes and applied index, so every member makes
// the same changes at the same index.

// Grant creates lease id with ttl seconds (raised to the minimum TTL) into
// b and returns the granted TTL. Errors, in etcd's order: ErrLeaseNotFound
// for id 0 (the server picks an ID before proposing, see the package doc),
// ErrLeaseTTLTooLarge, ErrLeaseExists; on those nothing is written. On the
// primary the lease's clock starts now; elsewhere it waits for Promote.
func (l *Lessor) Grant(b *storage.Batch, id, ttl int64) (int64, error) {
	if id == 0 {
		return 0, ErrLeaseNotFound
	}
	if ttl > MaxTTL {
		return 0, ErrLeaseTTLTooLarge
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.mu.leases[id]; ok {
		return 0, ErrLeaseExists
	}
	ttl = max(ttl, l.opts.MinTTL)
	if err := b.Set(recordKey(id), encodeRecord(ttl, 0), nil); err != nil {
		return 0, fmt.Errorf("lease: grant %x: %w", id, err)
	}
	le := &lease{id: id, ttl: ttl, deadline: forever, expIdx: -1, cpIdx: -1}
	l.mu.leases[id] = le
	l.mu.peak = max(l.mu.peak, len(l.mu.leases))
	if l.mu.primary {
		l.startClockLocked(le, l.now(), 0)
	}
	return ttl, nil
}

// Revoke removes lease id and its attachments from b and returns the keys
// that were attached to it, sorted. The caller must delete exactly those
// keys in ONE mvcc write (a Txn of DeleteRange ops in this order) in the
// same batch, right after Revoke, and then pass that write's events to
// ApplyEvents like any other's; they detach nothing, as the lease is gone.
// A lease with no keys takes no revision: the Txn is then empty.
//
// Errors: ErrLeaseNotFound; any other error is the storage's and leaves
// b unusable.
func (l *Lessor) Revoke(b *storage.Batch, id int64) ([][]byte, error) {
	if !l.Exists(id) {
		return nil, ErrLeaseNotFound
	}
	// Only the apply goroutine removes leases, so id cannot go while the
	// keys are read without the lock (which Renew and reads need).
	keys, err := attachedKeys(b, id)
	if err != nil {
		return nil, fmt.Errorf("lease: revoke %x: %w", id, err)
	}
	for _, k := range keys {
		if err := b.Delete(attachKey(id, k), nil); err != nil {
			return nil, fmt.Errorf("lease: revoke %x: %w", id, err)
		}
	}
	if err := b.Delete(recordKey(id), nil); err != nil {
		return nil, fmt.Errorf("lease: revoke %x: %w", id, err)
	}
	l.mu.Lock()
	if le := l.mu.leases[id]; le != nil {
		l.forgetLocked(le)
	}
	l.mu.Unlock()
	return keys, nil
}

// DeleteTxn returns the one txn that deletes a revoked lease's keys: a
// DeleteRange of each key, in the order given (Revoke's, sorted), so the
// deletes take one revision and every member writes the same events.
func DeleteTxn(keys [][]byte) *pb.TxnRequest {
	ops := make([]*pb.RequestOp, len(keys))
	for i, k := range keys {
		ops[i] = &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{
			RequestDeleteRange: &pb.DeleteRangeRequest{Key: k},
		}}
	}
	return &pb.TxnRequest{Success: ops}
}

// Checkpoint records lease id's remaining TTL (seconds; 0 clears it) in b,
// so that a new leader, or this member after a restart, restarts the
// lease's clock from it instead of from the full TTL. A lease that no
// longer exists is ignored, as in etcd: its checkpoint raced its revoke.
func (l *Lessor) Checkpoint(b *storage.Batch, id, remaining int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.mu.leases[id]
	if le == nil {
		return nil
	}
	if err := b.Set(recordKey(id), encodeRecord(le.ttl, remaining), nil); err != nil {
		return fmt.Errorf("lease: checkpoint %x: %w", id, err)
	}
	// The clock is left alone: a checkpoint only matters when the clock
	// next restarts (Promote, Reload).
	le.remaining = remaining
	if l.mu.primary {
		l.scheduleCheckpointLocked(le, l.now())
	}
	return nil
}

// ApplyEvents attaches and detaches keys as a write's events say: a put
// with a lease attaches the key to it, a put with a different lease or
// none detaches it from the old one (PrevKv tells which), and a delete
// detaches it. Call it after every mvcc request with that request's events
// (Write.Events()[seen:]), before applying the next request: a later
// Revoke in the same batch must see the attachments.
//
// A put naming a lease that does not exist is a broken invariant (mvcc
// checks Exists first) and is returned as an error wrapping
// ErrLeaseNotFound; so is a storage error. Either leaves b unusable.
func (l *Lessor) ApplyEvents(b *storage.Batch, evs []*mvccpb.Event) error {
	for _, ev := range evs {
		var old, cur int64
		if ev.PrevKv != nil {
			old = ev.PrevKv.Lease
		}
		if ev.Type == mvccpb.Event_PUT {
			cur = ev.Kv.Lease
		}
		if old == cur {
			continue
		}
		key := ev.Kv.Key
		// A detach from a lease that is gone needs nothing: Revoke removed
		// its attachments, and these are the deletes of its keys.
		if old != 0 && l.Exists(old) {
			if err := b.Delete(attachKey(old, key), nil); err != nil {
				return fmt.Errorf("lease: detach %q from %x: %w", key, old, err)
			}
		}
		if cur != 0 {
			if !l.Exists(cur) {
				return fmt.Errorf("lease: attach %q to %x: %w", key, cur, ErrLeaseNotFound)
			}
			if err := b.Set(attachKey(cur, key), nil, nil); err != nil {
				return fmt.Errorf("lease: attach %q to %x: %w", key, cur, err)
			}
		}
	}
	return nil
}

// Exists reports whether lease id is granted, counting the apply
// goroutine's changes not yet committed. It is mvcc.Options.LeaseExists.
func (l *Lessor) Exists(id int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.mu.leases[id]
	return ok
}

// iterable is what attachedKeys reads: the engine's DB or an indexed batch.
type iterable interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// attachedKeys returns the keys attached to lease id in r, sorted.
func attachedKeys(r iterable, id int64) ([][]byte, error) {
	p := attachPrefix(id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, bytes.Clone(it.Key()[len(p):]))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return keys, nil
}
