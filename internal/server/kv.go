package server

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/raftnode"
)

// Range reads keys. Unless r.Serializable, the read is linearizable: it
// waits for a read-index round (shared with concurrent reads) to confirm
// this member's applied state is current. Errors: mvcc.ErrCompacted,
// mvcc.ErrFutureRev, ErrTimeout, ErrCanceled, ErrStopped.
func (s *Server) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if !r.Serializable {
		if err := s.reads.wait(ctx); err != nil {
			return nil, err
		}
	}
	s.restoring.RLock()
	resp, err := s.kv.Range(r)
	s.restoring.RUnlock()
	if err != nil {
		return nil, err
	}
	resp.Header = s.fillHeader(resp.Header)
	return resp, nil
}

// Put writes a key through raft. Errors: ErrNoSpace, mvcc.ErrLeaseNotFound,
// mvcc.ErrKeyNotFound (ignore_value/ignore_lease on an absent key), and the
// proposal errors (see propose).
func (s *Server) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := s.checkQuota(putCost(r)); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &pb.InternalRaftRequest{Put: r})
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, res.err
	}
	resp := res.resp.(*pb.PutResponse)
	resp.Header = s.fillHeader(resp.Header)
	return resp, nil
}

// DeleteRange deletes keys through raft.
func (s *Server) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	res, err := s.propose(ctx, &pb.InternalRaftRequest{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, res.err
	}
	resp := res.resp.(*pb.DeleteRangeResponse)
	resp.Header = s.fillHeader(resp.Header)
	return resp, nil
}

// Txn runs a transaction. One that only reads (mvcc.TxnReadOnly) is served
// from this member's store as etcd serves it: after a read-index round
// unless every range in it is serializable, never through the log. Any
// other goes through raft; one that puts anything fails with ErrNoSpace
// while the quota is exceeded.
func (s *Server) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if mvcc.TxnReadOnly(r) {
		if !txnSerializable(r) {
			if err := s.reads.wait(ctx); err != nil {
				return nil, err
			}
		}
		s.restoring.RLock()
		resp, err := s.kv.ReadTxn(r)
		s.restoring.RUnlock()
		if err != nil {
			return nil, err
		}
		resp.Header = s.fillHeader(resp.Header)
		return resp, nil
	}
	if err := s.checkQuota(txnCost(r)); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &pb.InternalRaftRequest{Txn: r})
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, res.err
	}
	resp := res.resp.(*pb.TxnResponse)
	resp.Header = s.fillHeader(resp.Header)
	return resp, nil
}

// Compact compacts the key history up to r.Revision through raft. With
// r.Physical it returns only once the compacted history is removed from
// the engine. Errors: mvcc.ErrCompacted, mvcc.ErrFutureRev, and the
// proposal errors.
func (s *Server) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	res, err := s.propose(ctx, &pb.InternalRaftRequest{Compaction: r})
	if err != nil {
		return nil, err
	}
	if r.Physical && res.compacted != nil {
		// As etcd does, wait even when the revision was already compacted:
		// the caller asked for the removal to be done.
		select {
		case <-res.compacted:
		case <-ctx.Done():
			return nil, ctxErr(ctx.Err())
		case <-s.stopc:
			return nil, ErrStopped
		}
	}
	if res.err != nil {
		return nil, res.err
	}
	resp := res.resp.(*pb.CompactionResponse)
	resp.Header = s.fillHeader(resp.Header)
	return resp, nil
}

// txnSerializable reports whether every op of both branches is a
// serializable range, etcd's rule for answering a read-only txn without a
// read-index round (a txn without ops qualifies).
func txnSerializable(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if rr := op.GetRequestRange(); rr == nil || !rr.Serializable {
				return false
			}
		}
	}
	return true
}

// fillHeader completes a response header that carries the revision.
func (s *Server) fillHeader(h *pb.ResponseHeader) *pb.ResponseHeader {
	if h == nil {
		h = &pb.ResponseHeader{Revision: s.kv.Rev()}
	}
	h.ClusterId = s.clusterID
	h.MemberId = s.memberID
	h.RaftTerm = s.node.Term()
	return h
}

// propose sends r through raft and waits for its result. Errors:
// ErrTooManyRequests (apply is far behind commit), ErrRequestTooLarge, a
// timeout (no result within the request timeout; the request may still be
// applied: ErrTimeout or one of its variants, see timeoutError),
// ErrCanceled (ctx ended first; likewise), ErrStopped, and raft's
// ErrProposalDropped (raft refused it, so it will never apply). The caller
// holds enter.
func (s *Server) propose(ctx context.Context, r *pb.InternalRaftRequest) (result, error) {
	if s.stopping() {
		return result{}, ErrStopped
	}
	if c, a := s.node.CommitIndex(), s.applied.Load(); c > a && c-a > maxApplyLag {
		return result{}, ErrTooManyRequests
	}
	id := s.ids.next()
	r.Header = &pb.RequestHeader{ID: id}
	data, err := proto.Marshal(r)
	if err != nil {
		return result{}, err
	}
	if len(data) > int(s.cfg.MaxRequestBytes) {
		return result{}, ErrRequestTooLarge
	}
	return s.await(ctx, id, func() { s.node.Propose(raftnode.Proposal{ID: id, Data: data}) })
}

// await registers a waiter for proposal id, calls send, and waits for the
// apply loop's answer, the caller's context, the request timeout or Stop.
func (s *Server) await(ctx context.Context, id uint64, send func()) (result, error) {
	ch := s.waits.register(id)
	start := s.clock.Now()
	if !s.cfg.hooks.skipPropose {
		send()
	}
	s.metrics.proposalsPending.Inc()
	defer s.metrics.proposalsPending.Dec()

	got := func(res result) (result, error) {
		s.waits.release(ch)
		if errors.Is(res.err, ErrStopped) {
			return result{}, ErrStopped
		}
		if res.dropped {
			s.metrics.proposalsFailed.Inc()
			return result{}, res.err
		}
		return res, nil
	}
	select {
	case res := <-ch:
		return got(res)
	case <-ctx.Done():
		s.waits.cancel(id, ch)
		s.metrics.proposalsFailed.Inc()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return result{}, s.timeoutError(start)
		}
		return result{}, ErrCanceled
	case <-s.clock.After(s.cfg.RequestTimeout):
		s.waits.cancel(id, ch)
		s.metrics.proposalsFailed.Inc()
		return result{}, s.timeoutError(start)
	case <-s.stopc:
		if !s.waits.cancel(id, ch) {
			// Applied just before the stop (a member applying its own
			// removal stops soon after): the request took effect, and
			// its result is in the channel or about to be.
			return got(<-ch)
		}
		return result{}, ErrStopped
	}
}

// onDropped answers proposals raft refused (raft.ErrProposalDropped, as
// etcd returns it): they were never appended, so they will never apply.
func (s *Server) onDropped(ids []uint64, err error) {
	if errors.Is(err, raftnode.ErrConfChangeInProgress) {
		err = ErrConfChangeInProgress
	}
	for _, id := range ids {
		s.waits.trigger(id, result{err: err, dropped: true})
	}
	s.lg.Debug("raft dropped proposals", "count", len(ids), "err", err)
}

func ctxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ErrCanceled
}
