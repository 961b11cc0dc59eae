package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// kvService serves etcd's KV service: each call is validated exactly as etcd
// validates it, handed to the backend, and the backend's error mapped through
// the one error table. The backend fills the response headers.
type kvService struct {
	pb.UnimplementedKVServer
	b         Backend
	maxTxnOps int
	// streamChunkBytes is the size RangeStream aims each chunk at.
	streamChunkBytes int
	// rangeInfo and rangeHandler are what kvRangeHandler hands the
	// interceptor, made once by registerKV rather than on every call.
	rangeInfo    grpc.UnaryServerInfo
	rangeHandler grpc.UnaryHandler
}

func (s *kvService) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	resp, err := s.b.Range(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}

func (s *kvService) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(r); err != nil {
		return nil, err
	}
	resp, err := s.b.Put(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}

func (s *kvService) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := checkDelete(r); err != nil {
		return nil, err
	}
	resp, err := s.b.DeleteRange(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}

func (s *kvService) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxn(r, s.maxTxnOps); err != nil {
		return nil, err
	}
	resp, err := s.b.Txn(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}

// Compact has no request validation in etcd either: the revision is checked
// against the store (ErrCompacted, ErrFutureRev) when it is applied.
func (s *kvService) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	resp, err := s.b.Compact(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}
