package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/cairn-db/cairn/internal/server"
)

// Learnerer is implemented by a Backend that can be a learner: a member
// that receives the log but does not vote. Without it the member is taken
// for a voter.
type Learnerer interface {
	// IsLearner reports whether this member is a learner now. It is called
	// on every request, so it must be cheap.
	IsLearner() bool
}

var _ Learnerer = (*server.Server)(nil)

// snapshotMethod is the one streaming RPC a learner serves.
const snapshotMethod = "/etcdserverpb.Maintenance/Snapshot"

// learnerUnary and learnerStream refuse, on a learner, what etcd refuses
// there, with etcd's "rpc not supported for learner": everything but
// Maintenance.Status and serializable Ranges (unary) and
// Maintenance.Snapshot (streams). A learner's state may lag, and clients
// that balance over every endpoint rely on this answer to move on to a
// voter.
func learnerUnary(b Backend) grpc.UnaryServerInterceptor {
	l, ok := b.(Learnerer)
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if ok && l.IsLearner() && !servedByLearner(req) {
			return nil, rpctypes.ErrGRPCNotSupportedForLearner
		}
		return handler(ctx, req)
	}
}

func learnerStream(b Backend) grpc.StreamServerInterceptor {
	l, ok := b.(Learnerer)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if ok && info.FullMethod != snapshotMethod && l.IsLearner() {
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
