package server

import "errors"

// Errors returned by the server. Their text is etcdserver's, except
// ErrNoSpace, which carries the text clients receive for it; the api maps
// each to the rpctypes status clients expect. mvcc's errors pass through
// unchanged.
var (
	// ErrRequestTooLarge: the marshaled request exceeds MaxRequestBytes.
	ErrRequestTooLarge = errors.New("etcdserver: request is too large")
	// ErrTimeout: the request did not complete within the request timeout.
	// Its outcome is unknown: it may still be applied.
	ErrTimeout = errors.New("etcdserver: request timed out")
	// ErrCanceled: the caller's context ended before the request completed.
	// Its outcome is unknown.
	ErrCanceled = errors.New("etcdserver: request cancelled")
	// ErrStopped: the server stopped (or is stopping).
	ErrStopped = errors.New("etcdserver: server stopped")
	// ErrNoLeader: no leader is known. The server itself waits for a leader
	// until the request times out; the api returns this error for requests
	// that ask to fail fast without one.
	ErrNoLeader = errors.New("etcdserver: no leader")
	// ErrTooManyRequests: the applied index trails the committed index by
	// more than 5000 entries.
	ErrTooManyRequests = errors.New("etcdserver: too many requests")
	// ErrNoSpace: the engine exceeds its quota, or the NOSPACE alarm is
	// active; writes that add data are refused.
	ErrNoSpace = errors.New("etcdserver: mvcc: database space exceeded")
	// ErrUnsupportedRequest: a committed request of a kind this member
	// cannot apply (for example written by a newer version).
	ErrUnsupportedRequest = errors.New("etcdserver: unknown method")

	// ErrTimeoutDueToLeaderFail: the request timed out, and a new leader
	// was elected since it started.
	ErrTimeoutDueToLeaderFail = errors.New("etcdserver: request timed out, possibly due to previous leader failure")
	// ErrTimeoutDueToConnectionLost: the request timed out, and this member
	// lost its connection to the leader (or, as leader, to a quorum) since
	// it started.
	ErrTimeoutDueToConnectionLost = errors.New("etcdserver: request timed out, possibly due to connection lost")
	// ErrTimeoutWaitAppliedIndex: the leader could not apply what was
	// committed in time to answer a keep-alive or TimeToLive.
	ErrTimeoutWaitAppliedIndex = errors.New("etcdserver: request timed out, waiting for the applied index took too long")
	// ErrTimeoutLeaderTransfer: MoveLeader did not see the new leader in
	// time.
	ErrTimeoutLeaderTransfer = errors.New("etcdserver: request timed out, leader transfer took too long")
	// ErrLeaderChanged: the leader changed while a linearizable read
	// waited for it; the read may be retried.
	ErrLeaderChanged = errors.New("etcdserver: leader changed")
	// ErrNotLeader: the request (MoveLeader) must be sent to the leader.
	ErrNotLeader = errors.New("etcdserver: not leader")
	// ErrBadLeaderTransferee: MoveLeader's target is not a voting member.
	ErrBadLeaderTransferee = errors.New("etcdserver: bad leader transferee")
	// ErrLearnerNotReady: the learner to promote has not caught up with
	// the leader's log.
	ErrLearnerNotReady = errors.New("etcdserver: can only promote a learner member which is in sync with leader")
	// ErrNotEnoughStartedMembers: with the change, fewer than a quorum of
	// the voting members would have started (strict reconfig check).
	ErrNotEnoughStartedMembers = errors.New("etcdserver: re-configuration failed due to not enough started members")
	// ErrUnhealthy: this member is not connected to enough peers for the
	// change to keep a quorum (strict reconfig check).
	ErrUnhealthy = errors.New("etcdserver: unhealthy cluster")
	// ErrConfChangeInProgress: the leader refused a membership change
	// because the previous one is not applied yet; retry. (etcd lets such a
	// change time out instead.)
	ErrConfChangeInProgress = errors.New("etcdserver: a membership change is already in progress")
	// ErrRemoved: this member was removed from the cluster; it stops.
	ErrRemoved = errors.New("the member has been permanently removed from the cluster")
)
