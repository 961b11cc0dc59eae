package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// snapshotMethod is the one streaming RPC a learner serves.
const snapshotMethod = "/etcdserverpb.Maintenance/Snapshot"

// learnerUnary and learnerStream refuse, on a learner, what etcd refuses
// there, with etcd's "rpc not supported for learner": everything but
// Maintenance.Status and serializable Ranges (unary) and
// Maintenance.Snapshot (streams). A learner's state may lag, and clients
// that balance over every endpoint rely on this answer to move on to a
// voter.
func learnerUnary(b Backend) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if b.IsLearner() && !servedByLearner(req) {
			return nil, rpctypes.ErrGRPCNotSupportedForLearner
		}
		return handler(ctx, req)
	}
}

func learnerStream(b Backend) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != snapshotMethod && b.IsLearner() {
			return rpctypes.ErrGRPCNotSupportedForLearner
		}
		return handler(srv, ss)
	}
}

func servedByLearner(req any) bool {
	switch r := req.(type) {
	case *pb.StatusRequest:
		return true
	case *pb.RangeRequest:
		return r.Serializable
	}
	return false
}
