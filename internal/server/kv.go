package server

import (
	"context"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/audit"
	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/mvcc"
)

// Range reads keys. Unless r.Serializable, the read is linearizable: it
// waits for a read-index round (shared with concurrent reads) to confirm
// this member's applied state is current. Errors: mvcc.ErrCompacted,
// mvcc.ErrFutureRev, ErrTimeout, ErrCanceled, ErrStopped.
func (s *Server) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return s.rangeWith(ctx, r, s.kv.Range)
}

// RangePage is Range for callers that page through a range (RangeStream):
// it reads only up to the request's limit, so the response's Count is not
// the range's total (see mvcc.Store.RangePage). Consistency, errors and the
// header are as Range's.
func (s *Server) RangePage(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return s.rangeWith(ctx, r, s.kv.RangePage)
}

// rangeWith is Range reading the store with read.
func (s *Server) rangeWith(ctx context.Context, r *pb.RangeRequest, read func(*pb.RangeRequest) (*pb.RangeResponse, error)) (*pb.RangeResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	var resp *pb.RangeResponse
	err := s.auth.checkedRead(ctx, &audit.Event{Method: "Range", Key: r.Key, RangeEnd: r.RangeEnd}, func(st *auth.Store, ai auth.AuthInfo) error {
		return st.IsRangePermitted(ai, r.Key, r.RangeEnd)
	}, func() (err error) {
		resp, err = readStore(s, ctx, r.Serializable, func() (*pb.RangeResponse, error) { return read(r) })
		return err
	})
	if err != nil {
		return nil, err
	}
	s.metrics.rangeTotal.Inc()
	return resp, nil
}

// Put writes a key through raft. Errors: ErrNoSpace, mvcc.ErrLeaseNotFound,
// mvcc.ErrKeyNotFound (ignore_value/ignore_lease on an absent key), and the
// proposal errors (see propose).
func (s *Server) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	p := putProposals.Get().(*putProposal)
	p.req.Put, p.req.Header = r, &p.hdr
	resp, err := write[*pb.PutResponse](s, ctx, &p.req, putCost(r))
	p.req.Reset()
	p.hdr.Reset()
	putProposals.Put(p)
	return resp, err
}

// putProposal is the request a Put proposes, with its header: nothing
// keeps either once the proposal is marshalled and answered (raft gets
// the bytes), so Put takes them from putProposals instead of allocating
// two messages for every put.
type putProposal struct {
	req pb.InternalRaftRequest
	hdr pb.RequestHeader
}

var putProposals = sync.Pool{New: func() any { return new(putProposal) }}

// DeleteRange deletes keys through raft.
func (s *Server) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	return write[*pb.DeleteRangeResponse](s, ctx, &pb.InternalRaftRequest{DeleteRange: r}, 0)
}

// Txn runs a transaction. One that only reads (mvcc.TxnReadOnly) is served
// from this member's store as etcd serves it: after a read-index round
// unless every range in it is serializable, never through the log. Any
// other goes through raft; one that puts anything fails with ErrNoSpace
// while the quota is exceeded.
func (s *Server) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	if mvcc.TxnReadOnly(r) {
		var resp *pb.TxnResponse
		ev := audit.Event{Method: "Txn"}
		if s.auth.audit != nil {
			ev.Key, ev.RangeEnd = firstTxnRange(r)
		}
		err := s.auth.checkedRead(ctx, &ev, func(st *auth.Store, ai auth.AuthInfo) error {
			err := s.checkTxn(nil, st, ai, r)
			if err != nil && s.auth.audit != nil {
				s.locateTxnDenial(&ev, st, ai, r)
			}
			return err
		}, func() (err error) {
			resp, err = readStore(s, ctx, txnSerializable(r), func() (*pb.TxnResponse, error) { return s.kv.ReadTxn(r) })
			return err
		})
		if err != nil {
			return nil, err
		}
		s.metrics.countReadTxn(r, resp)
		return resp, nil
	}
	return proposed[*pb.TxnResponse](s, ctx, &pb.InternalRaftRequest{Txn: r}, txnCost(r), nil)
}

// Compact compacts the key history up to r.Revision through raft. With
// r.Physical it returns only once the compacted history is removed from
// the engine. Errors: mvcc.ErrCompacted, mvcc.ErrFutureRev, and the
// proposal errors.
func (s *Server) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	return proposed[*pb.CompactionResponse](s, ctx, &pb.InternalRaftRequest{Compaction: r}, 0, func(res result) error {
		if !r.Physical || res.compacted == nil {
			return nil
		}
		// As etcd does, wait even when the revision was already compacted:
		// the caller asked for the removal to be done.
		select {
		case <-res.compacted:
			return nil
		case <-ctx.Done():
			return ctxErr(ctx.Err())
		case <-s.life.stopc:
			return ErrStopped
		}
	})
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
