package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/audit"
	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/mvcc"
)

// RangeEncoded is Range with the KeyValues of a key-ordered, unfiltered
// range returned in wire form (see mvcc.Store.RangeEncoded): the response
// then has no Kvs, and kvs, written between its header and its more and
// count fields, completes it. For other requests kvs is nil and the
// response is Range's. Consistency, permissions, errors and the header
// are Range's.
// alloc gives the chunks, as for mvcc.Store.RangeEncoded.
func (s *Server) RangeEncoded(ctx context.Context, r *pb.RangeRequest, alloc func(n int) []byte) (*pb.RangeResponse, *mvcc.EncodedKVs, error) {
	if err := s.life.enter(); err != nil {
		return nil, nil, err
	}
	defer s.life.leave()
	var (
		resp *pb.RangeResponse
		kvs  *mvcc.EncodedKVs
	)
	err := s.auth.checkedRead(ctx, &audit.Event{Method: "Range", Key: r.Key, RangeEnd: r.RangeEnd}, func(st *auth.Store, ai auth.AuthInfo) error {
		return st.IsRangePermitted(ai, r.Key, r.RangeEnd)
	}, func() (err error) {
		resp, err = readStore(s, ctx, r.Serializable, func() (*pb.RangeResponse, error) {
			resp, encoded, err := s.kv.RangeEncoded(r, alloc)
			kvs = encoded
			return resp, err
		})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	s.metrics.rangeTotal.Inc()
	return resp, kvs, nil
}
