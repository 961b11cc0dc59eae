package server

import (
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/lease"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/storage"
)

// The lease requests of the apply loop, as internal/lease's package doc
// prescribes: each changes the lessor into the entry's batch, and a revoke
// deletes the lease's keys through the same mvcc.Write. applyEntry passes
// every request's new events to lessor.ApplyEvents afterwards, so a
// revoke's deletes go there too.

// applyGrant grants a lease. Refused with ErrNoSpace while the NOSPACE
// alarm is raised, as etcd refuses it.
func (lk *leaseKeeper) applyGrant(w *mvcc.Write, b *storage.Batch, r *pb.LeaseGrantRequest) (result, error) {
	if lk.s.alarms.spaceExceeded() {
		return result{err: ErrNoSpace}, nil
	}
	ttl, err := lk.lessor.Grant(b, r.ID, r.TTL)
	if err != nil {
		return leaseRequestError(err)
	}
	return result{resp: &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: w.Rev()}, ID: r.ID, TTL: ttl}}, nil
}

// applyRevoke revokes a lease and deletes its keys in one txn, so they
// all go at one revision (none if the lease had no keys).
func (lk *leaseKeeper) applyRevoke(w *mvcc.Write, b *storage.Batch, r *pb.LeaseRevokeRequest) (result, error) {
	keys, err := lk.lessor.Revoke(b, r.ID)
	if err != nil {
		return leaseRequestError(err)
	}
	if len(keys) > 0 {
		if _, err := w.Txn(lease.DeleteTxn(keys)); err != nil {
			return result{}, err
		}
	}
	return result{resp: &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: w.Rev()}}}, nil
}

// applyCheckpoint records the leader's checkpoints of remaining TTLs.
func (lk *leaseKeeper) applyCheckpoint(w *mvcc.Write, b *storage.Batch, r *pb.LeaseCheckpointRequest) (result, error) {
	for _, cp := range r.Checkpoints {
		if err := lk.lessor.Checkpoint(b, cp.ID, cp.Remaining_TTL); err != nil {
			return result{}, err
		}
	}
	return result{resp: &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{Revision: w.Rev()}}}, nil
}

// leaseRequestError sorts a lessor error like requestError sorts mvcc's.
func leaseRequestError(err error) (result, error) {
	for _, re := range []error{lease.ErrLeaseNotFound, lease.ErrLeaseExists, lease.ErrLeaseTTLTooLarge} {
		if errors.Is(err, re) {
			return result{err: err}, nil
		}
	}
	return result{}, err
}
