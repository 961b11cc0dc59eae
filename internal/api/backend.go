package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/watch"
)

// Backend is everything the API asks of a cairn member: exactly the methods
// its services, interceptors and HTTP endpoints call, and no more.
// *server.Server provides it; the API's tests use a fake of their own.
//
// Every method may be called from many goroutines at once. Responses come
// with their headers filled (cluster id, member id, revision, raft term)
// unless a method says otherwise, and errors are those of the layers below
// (mvcc, lease, membership, server), which the API maps to etcd's gRPC
// statuses in one table (errors.go); an error that already is a gRPC status
// reaches the client as it is.
type Backend interface {
	// Range reads keys; linearizably unless r.Serializable.
	Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error)
	// RangePage is Range for a caller that pages through a range
	// (RangeStream): it reads only up to r.Limit keys, so the response's
	// Count is not the range's total.
	RangePage(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error)
	// RangeEncoded is Range for the KV service's unary Range: when it
	// returns kvs (not nil), the response has no Kvs and kvs holds them
	// already encoded, chunks taken from alloc (see
	// mvcc.Store.RangeEncoded). A backend may always answer kvs nil and
	// Range's response.
	RangeEncoded(ctx context.Context, r *pb.RangeRequest, alloc func(n int) []byte) (*pb.RangeResponse, *mvcc.EncodedKVs, error)
	// Put, DeleteRange, Txn and Compact go through consensus.
	Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error)
	DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error)
	Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error)
	Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error)

	// WatchHub is the hub every watch stream of the member is served
	// from. It is asked for once, when the Watch service is registered,
	// and must not be nil.
	WatchHub() *watch.Hub

	// LeaseGrant grants a lease through consensus, picking an ID when
	// r.ID is 0. Errors: lease.ErrLeaseExists, lease.ErrLeaseTTLTooLarge,
	// and the server's.
	LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error)
	// LeaseRevoke revokes a lease, deleting its keys, through consensus.
	// Errors: lease.ErrLeaseNotFound, and the server's.
	LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error)
	// LeaseRenew renews a lease on the leader and returns its TTL.
	// Errors: lease.ErrLeaseNotFound (answered as TTL 0, as etcd does),
	// lease.ErrNotPrimary, and the server's.
	LeaseRenew(ctx context.Context, id int64) (int64, error)
	// LeaseTimeToLive reports a lease's remaining and granted TTL (and
	// keys, if asked), as the leader sees them. Errors:
	// lease.ErrLeaseNotFound (answered as TTL -1, as etcd does),
	// lease.ErrNotPrimary, and the server's.
	LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error)
	// LeaseLeases lists every lease.
	LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error)

	// MemberList returns the members, sorted by ID. With linearizable it
	// first waits for this member to have applied everything committed
	// when the call began (a read-index round), so a change acknowledged
	// anywhere before is in the list.
	MemberList(ctx context.Context, linearizable bool) ([]membership.Member, error)
	// MemberAdd adds a member with the given (normalized) peer URLs, as a
	// voter or as a learner, and returns it (with the ID the cluster gave
	// it) and the new list. The membership changes go through consensus,
	// are validated against the member list as it is when they apply, and
	// return the list as it is once the change is applied on this member.
	MemberAdd(ctx context.Context, peerURLs []string, isLearner bool) (membership.Member, []membership.Member, error)
	// MemberRemove removes member id.
	MemberRemove(ctx context.Context, id uint64) ([]membership.Member, error)
	// MemberUpdate replaces member id's peer URLs (normalized).
	MemberUpdate(ctx context.Context, id uint64, peerURLs []string) ([]membership.Member, error)
	// MemberPromote makes learner id a voter, once it has caught up with
	// the leader.
	MemberPromote(ctx context.Context, id uint64) ([]membership.Member, error)

	// Status reports the member's raft and storage state as of now.
	Status() server.Status
	// Alarms lists the active alarms (NOSPACE when the quota is exceeded,
	// CORRUPT, ...).
	Alarms() []*pb.AlarmMember
	// Alarm gets, activates or deactivates alarms as etcd does. The
	// response may come without a header; the API then adds one.
	Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error)
	// Hash hashes the member's replicated state at the current revision,
	// which the header carries (see server.Server.Hash).
	Hash(ctx context.Context) (*pb.HashResponse, error)
	// HashKV hashes the key history up to revision rev (0: the current
	// one) from the compaction revision on; the header's revision is the
	// current one. Errors: mvcc.ErrCompacted, mvcc.ErrFutureRev, the
	// server's.
	HashKV(ctx context.Context, rev int64) (*pb.HashKVResponse, error)
	// Snapshot starts a backup of the member's state as it is now; the
	// caller closes the stream.
	Snapshot(ctx context.Context) (*server.SnapshotStream, error)
	// MoveLeader makes target the leader; it must be called on the
	// leader (server.ErrNotLeader otherwise) and returns once target
	// leads.
	MoveLeader(ctx context.Context, target uint64) error
	// Defragment gives back the disk space of deleted data and returns
	// once done; reads and writes go on meanwhile.
	Defragment(ctx context.Context) error

	// ClusterVersion and StorageVersion are "major.minor.0", "" until the
	// cluster version is decided.
	ClusterVersion() string
	StorageVersion() string
	// DowngradeInfo is the downgrade job in progress, zero if none.
	DowngradeInfo() membership.Downgrade
	// Downgrade validates, enables or cancels a downgrade of the cluster.
	Downgrade(ctx context.Context, action pb.DowngradeRequest_DowngradeAction, target string) (*pb.DowngradeResponse, error)

	// The rest fill response headers and answer the interceptors'
	// questions on every request, so they must be cheap.

	// ClusterID and MemberID identify the member.
	ClusterID() uint64
	MemberID() uint64
	// Term is the current raft term.
	Term() uint64
	// ResponseHeader returns a header describing the member now: cluster
	// and member IDs, raft term and the current revision.
	ResponseHeader() *pb.ResponseHeader
	// Leader returns the leader's member id, 0 when none is known.
	Leader() uint64
	// IsLearner reports whether this member is a learner now: a member
	// that receives the log but does not vote.
	IsLearner() bool

	// AuthBackend is etcd's Auth service and the access checks (auth.go).
	// Every method above that takes a context also takes the caller's
	// credentials from it and applies etcd's permission checks, answering
	// internal/auth's errors.
	AuthBackend
}

// A member is the Backend.
var _ Backend = (*server.Server)(nil)
