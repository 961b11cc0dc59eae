package api

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
)

// grpcErrors is the one table that turns the errors of the layers below into
// the gRPC statuses etcd sends for them. clientv3 turns each of those statuses
// back into its typed error by the status message, so the right-hand side is
// always one of rpctypes' ErrGRPC* values, never a fresh status.
//
// Entries are matched with errors.Is, so a lower layer may wrap its sentinel
// with context and still be mapped.
var grpcErrors = []struct {
	err  error
	grpc error
}{
	{mvcc.ErrCompacted, rpctypes.ErrGRPCCompacted},
	{mvcc.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
	{mvcc.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
	{mvcc.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},

	{membership.ErrIDRemoved, rpctypes.ErrGRPCMemberNotFound},
	{membership.ErrIDNotFound, rpctypes.ErrGRPCMemberNotFound},
	{membership.ErrIDExists, rpctypes.ErrGRPCMemberExist},
	{membership.ErrPeerURLExists, rpctypes.ErrGRPCPeerURLExist},
	{membership.ErrMemberNotLearner, rpctypes.ErrGRPCMemberNotLearner},
	{membership.ErrTooManyLearners, rpctypes.ErrGRPCTooManyLearners},
	// etcd has no error of its own for removing the last voter: its
	// quorum checks refuse the removal first, as this.
	{membership.ErrLastVoter, rpctypes.ErrGRPCMemberNotEnoughStarted},

	{server.ErrRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
	{server.ErrNoSpace, rpctypes.ErrGRPCNoSpace},
	{server.ErrCorrupt, rpctypes.ErrGRPCCorrupt},
	// etcd answers this one with a plain error, not a status, so gRPC
	// sends it as codes.Unknown with etcd's text; clientv3 still maps it
	// by that text. Sending the same keeps clients' handling the same.
	{server.ErrTooManyRequests, rpctypes.ErrTooManyRequests},
	{server.ErrNoLeader, rpctypes.ErrGRPCNoLeader},
	{server.ErrStopped, rpctypes.ErrGRPCStopped},
	{server.ErrTimeout, rpctypes.ErrGRPCTimeout},
	{server.ErrTimeoutDueToLeaderFail, rpctypes.ErrGRPCTimeoutDueToLeaderFail},
	{server.ErrTimeoutDueToConnectionLost, rpctypes.ErrGRPCTimeoutDueToConnectionLost},
	{server.ErrTimeoutWaitAppliedIndex, rpctypes.ErrGRPCTimeoutWaitAppliedIndex},
	{server.ErrLeaderChanged, rpctypes.ErrGRPCLeaderChanged},
	{server.ErrNotLeader, rpctypes.ErrGRPCNotLeader},
	{server.ErrBadLeaderTransferee, rpctypes.ErrGRPCBadLeaderTransferee},
	// etcd sends this one as a plain error too (codes.Unknown, its text).
	{server.ErrTimeoutLeaderTransfer, status.Error(codes.Unknown, server.ErrTimeoutLeaderTransfer.Error())},
	{server.ErrLearnerNotReady, rpctypes.ErrGRPCLearnerNotReady},
	{server.ErrNotEnoughStartedMembers, rpctypes.ErrGRPCMemberNotEnoughStarted},
	{server.ErrUnhealthy, rpctypes.ErrGRPCUnhealthy},
	// etcd has no such error (a second change in flight times out there);
	// Unavailable tells clients it is worth retrying.
	{server.ErrConfChangeInProgress, status.Error(codes.Unavailable, server.ErrConfChangeInProgress.Error())},
	// A removed member stops; until it has, it answers as a stopping one.
	{server.ErrRemoved, rpctypes.ErrGRPCStopped},
	{server.ErrCanceled, rpctypes.ErrGRPCCanceled},

	{server.ErrWrongDowngradeVersionFormat, rpctypes.ErrGRPCWrongDowngradeVersionFormat},
	{server.ErrInvalidDowngradeTargetVersion, rpctypes.ErrGRPCInvalidDowngradeTargetVersion},
	{server.ErrClusterVersionUnavailable, rpctypes.ErrGRPCClusterVersionUnavailable},
	{server.ErrDowngradeInProcess, rpctypes.ErrGRPCDowngradeInProcess},
	{server.ErrNoInflightDowngrade, rpctypes.ErrGRPCNoInflightDowngrade},
}

// toGRPCError maps an error from the server to the status a client sees.
// Context errors pass through unchanged so that gRPC reports them as
// Canceled / DeadlineExceeded with its own text, as etcd lets it do; a status
// error passes through as it is; anything the table does not know becomes
// codes.Unknown with the error's text.
func toGRPCError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	for _, e := range grpcErrors {
		if errors.Is(err, e.err) {
			return e.grpc
		}
	}
	for _, e := range authGRPCErrors {
		if errors.Is(err, e.err) {
			return e.grpc
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unknown, err.Error())
}
