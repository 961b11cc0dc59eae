package api

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// snapshotMethod is the one streaming RPC a learner serves.
const snapshotMethod = "/etcdserverpb.Maintenance/Snapshot"

// learnerCheck and learnerStream refuse, on a learner, what etcd refuses
// there, with etcd's "rpc not supported for learner": everything but
// Maintenance.Status and serializable Ranges (unary) and
// Maintenance.Snapshot (streams). A learner's state may lag, and clients
// that balance over every endpoint rely on this answer to move on to a
// voter.
func learnerCheck(b Backend, req any) error {
	if b.IsLearner() && !servedByLearner(req) {
		return rpctypes.ErrGRPCNotSupportedForLearner
	}
	return nil
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
