package server

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// MoveLeader hands leadership to the voting member target, as the
// Maintenance service's MoveLeader does. It must be called on the leader
// (ErrNotLeader otherwise) and returns once target leads. Errors:
// ErrBadLeaderTransferee (not a member, or a learner),
// ErrTimeoutLeaderTransfer (target did not take over within the request
// timeout or ctx's deadline), ErrCanceled, ErrStopped.
func (s *Server) MoveLeader(ctx context.Context, target uint64) error {
	if err := s.life.enter(); err != nil {
		return err
	}
	defer s.life.leave()
	if !s.node.IsLeader() {
		return ErrNotLeader
	}
	if m, ok := s.members.get(target); !ok || m.IsLearner {
		return ErrBadLeaderTransferee
	}
	s.lg.Info("leadership transfer starting", "transferee", target)
	timeout := s.clock.After(s.cfg.RequestTimeout)
	changed := s.lead.changedC()
	s.node.TransferLeadership(target)
	for s.node.Lead() != target {
		select {
		case <-changed:
			changed = s.lead.changedC()
		case <-timeout:
			return ErrTimeoutLeaderTransfer
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return ErrTimeoutLeaderTransfer
			}
			return ErrCanceled
		case <-s.life.stopc:
			return ErrStopped
		}
	}
	s.lg.Info("leadership transfer finished", "leader", target)
	return nil
}

// HashKV returns the hash of the key history up to revision rev (0: the
// current one) from the compaction revision on, as the Maintenance
// service's HashKV does: members with the same history give the same hash.
// The header's revision is the store's current one. Errors:
// mvcc.ErrCompacted, mvcc.ErrFutureRev, ErrStopped.
func (s *Server) HashKV(ctx context.Context, rev int64) (*pb.HashKVResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	s.restoring.RLock()
	cur := s.kv.Rev()
	hash, compactRev, hashRev, err := s.kv.HashKV(rev)
	s.restoring.RUnlock()
	if err != nil {
		s.failOnMedia(err)
		return nil, err
	}
	return &pb.HashKVResponse{
		Header:          s.fillHeader(&pb.ResponseHeader{Revision: cur}),
		Hash:            hash,
		CompactRevision: compactRev,
		HashRevision:    hashRev,
	}, nil
}

// Defragment gives back the disk space of deleted keys and compacted
// history, as the Maintenance service's Defragment does, and returns when
// it is done. Unlike etcd's it is online: reads and writes go on meanwhile
// (mvcc.Store.Defragment). Afterwards the engine's size is measured
// afresh, so the quota and Status see what it gave back, and a NOSPACE
// alarm clears itself if the member is back under the quota's clear mark
// (see quota). Errors: ErrCanceled or ErrTimeout when ctx ends first,
// ErrStopped, and the engine's (wrapped).
func (s *Server) Defragment(ctx context.Context) error {
	if err := s.life.enter(); err != nil {
		return err
	}
	defer s.life.leave()
	// Stop waits for the requests inside enter: let it cut this one short.
	ctx, cancel := s.life.untilStop(ctx)
	defer cancel()
	s.metrics.defragInflight.Set(1)
	defer s.metrics.defragInflight.Set(0)
	start := time.Now()
	before := s.eng.Size()
	s.lg.Info("defragmenting", "size-bytes", before, "size-in-use-bytes", s.eng.SizeInUse())
	err := s.kv.Defragment(ctx)
	s.quota.measure()
	s.quota.kick()
	if err != nil {
		s.lg.Warn("defragment failed", "err", err)
		if s.life.stopping() {
			return ErrStopped
		}
		if ctx.Err() != nil {
			return ctxErr(ctx.Err())
		}
		return err
	}
	s.observeDefrag(start)
	s.lg.Info("defragmented", "size-before-bytes", before, "size-bytes", s.quota.measured.Load(),
		"size-in-use-bytes", s.eng.SizeInUse(), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}
