package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// RangePage is Range for callers that page through a range (RangeStream):
// it reads only up to the request's limit, so the response's Count is not
// the range's total (see mvcc.Store.RangePage). Consistency, errors and the
// header are as Range's.
func (s *Server) RangePage(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
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
	resp, err := s.kv.RangePage(r)
	s.restoring.RUnlock()
	if err != nil {
		return nil, err
	}
	resp.Header = s.fillHeader(resp.Header)
	return resp, nil
}
