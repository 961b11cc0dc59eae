package lease

import (
	"fmt"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// This file holds the reads. They may run on any goroutine; they see the
// apply goroutine's lease changes as soon as they are made, and attached
// keys once their batch is committed.

// Info describes one lease as Lookup returns it.
type Info struct {
	ID int64
	// TTL is the granted TTL in seconds.
	TTL int64
	// Remaining is how long until the lease expires (never negative), on
	// the primary; on other members the lease's clock is stopped and
	// Remaining is -1.
	Remaining time.Duration
	// CheckpointedTTL is the last checkpointed remaining TTL in seconds,
	// 0 for none.
	CheckpointedTTL int64
}

// Lookup returns lease id, and whether it exists.
func (l *Lessor) Lookup(id int64) (Info, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.mu.leases[id]
	if le == nil {
		return Info{}, false
	}
	inf := Info{ID: id, TTL: le.ttl, Remaining: -1, CheckpointedTTL: le.remaining}
	if le.deadline != forever {
		inf.Remaining = time.Duration(max(0, le.deadline-l.now()))
	}
	return inf, true
}

// TimeToLive answers a LeaseTimeToLiveRequest, without its header: the
// remaining TTL in whole seconds (truncated, as etcd does), the granted
// TTL and, if asked, the attached keys in byte order (as committed).
// Errors: ErrLeaseNotFound; ErrNotPrimary on a member that is not the
// leader, which keeps no clocks (the server asks the leader instead).
func (l *Lessor) TimeToLive(r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	inf, ok := l.Lookup(r.ID)
	if !ok {
		return nil, ErrLeaseNotFound
	}
	if inf.Remaining < 0 {
		return nil, ErrNotPrimary
	}
	resp := &pb.LeaseTimeToLiveResponse{ID: r.ID, TTL: int64(inf.Remaining / time.Second), GrantedTTL: inf.TTL}
	if r.Keys {
		keys, err := l.Keys(r.ID)
		if err != nil {
			return nil, err
		}
		resp.Keys = keys
	}
	return resp, nil
}

// Keys returns the keys attached to lease id, in byte order, as of the
// last committed batch.
func (l *Lessor) Keys(id int64) ([][]byte, error) {
	keys, err := attachedKeys(l.eng.DB(), id)
	if err != nil {
		return nil, fmt.Errorf("lease: keys of %x: %w", id, err)
	}
	return keys, nil
}

// KeysIn returns the keys attached to lease id as b (an apply batch not
// yet committed) sees them, in byte order: what Keys will return once b
// is committed. Only the apply loop, which owns b, may call it.
func (l *Lessor) KeysIn(b *storage.Batch, id int64) ([][]byte, error) {
	keys, err := attachedKeys(b, id)
	if err != nil {
		return nil, fmt.Errorf("lease: keys of %x: %w", id, err)
	}
	return keys, nil
}

// Leases returns the IDs of every lease, soonest to expire first (ties,
// and every lease on a member that is not the leader, in ID order).
func (l *Lessor) Leases() []int64 {
	type entry struct{ deadline, id int64 }
	l.mu.Lock()
	es := make([]entry, 0, len(l.mu.leases))
	for _, le := range l.mu.leases {
		es = append(es, entry{le.deadline, le.id})
	}
	l.mu.Unlock()
	slices.SortFunc(es, func(a, b entry) int {
		if c := cmpInt64(a.deadline, b.deadline); c != 0 {
			return c
		}
		return cmpInt64(a.id, b.id)
	})
	ids := make([]int64, len(es))
	for i, e := range es {
		ids[i] = e.id
	}
	return ids
}
