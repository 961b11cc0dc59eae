package conformance

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/api"
	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/watch"
)

// The rest of api.Backend for the direct subject. It serves KV and
// Maintenance only: the calls a bare store cannot answer (leases,
// membership, hashes, backups, leader moves, alarms changes) fail with
// codes.Unimplemented, which the scenarios never send.

var _ api.Backend = (*directBackend)(nil)

func errDirectUnsupported(what string) error {
	return status.Errorf(codes.Unimplemented, "direct subject: %s is not supported", what)
}

func (d *directBackend) RangeEncoded(_ context.Context, r *pb.RangeRequest, alloc func(int) []byte) (*pb.RangeResponse, *mvcc.EncodedKVs, error) {
	return d.st.RangeEncoded(r, alloc)
}

func (d *directBackend) RangePage(_ context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return d.st.RangePage(r)
}

func (d *directBackend) ClusterID() uint64 { return 1 }
func (d *directBackend) MemberID() uint64  { return 1 }
func (d *directBackend) Term() uint64      { return 1 }
func (d *directBackend) IsLearner() bool   { return false }

func (d *directBackend) ResponseHeader() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: 1, MemberId: 1, RaftTerm: 1, Revision: d.st.Rev()}
}

// WatchHub is nil: the direct subject registers no Watch service.
func (d *directBackend) WatchHub() *watch.Hub { return nil }

func (d *directBackend) Alarms() []*pb.AlarmMember { return nil }

func (d *directBackend) Alarm(_ context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if r.Action != pb.AlarmRequest_GET {
		return nil, errDirectUnsupported("changing alarms")
	}
	return &pb.AlarmResponse{}, nil
}

func (d *directBackend) LeaseGrant(context.Context, *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return nil, errDirectUnsupported("LeaseGrant")
}

func (d *directBackend) LeaseRevoke(context.Context, *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return nil, errDirectUnsupported("LeaseRevoke")
}

func (d *directBackend) LeaseRenew(context.Context, int64) (int64, error) {
	return -1, errDirectUnsupported("LeaseRenew")
}

func (d *directBackend) LeaseTimeToLive(context.Context, *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	return nil, errDirectUnsupported("LeaseTimeToLive")
}

func (d *directBackend) LeaseLeases(context.Context, *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	return nil, errDirectUnsupported("LeaseLeases")
}

func (d *directBackend) MemberList(context.Context, bool) ([]membership.Member, error) {
	return nil, errDirectUnsupported("MemberList")
}

func (d *directBackend) MemberAdd(context.Context, []string, bool) (membership.Member, []membership.Member, error) {
	return membership.Member{}, nil, errDirectUnsupported("MemberAdd")
}

func (d *directBackend) MemberRemove(context.Context, uint64) ([]membership.Member, error) {
	return nil, errDirectUnsupported("MemberRemove")
}

func (d *directBackend) MemberUpdate(context.Context, uint64, []string) ([]membership.Member, error) {
	return nil, errDirectUnsupported("MemberUpdate")
}

func (d *directBackend) MemberPromote(context.Context, uint64) ([]membership.Member, error) {
	return nil, errDirectUnsupported("MemberPromote")
}

func (d *directBackend) Hash(context.Context) (*pb.HashResponse, error) {
	return nil, errDirectUnsupported("Hash")
}

func (d *directBackend) HashKV(context.Context, int64) (*pb.HashKVResponse, error) {
	return nil, errDirectUnsupported("HashKV")
}

func (d *directBackend) Snapshot(context.Context) (*server.SnapshotStream, error) {
	return nil, errDirectUnsupported("Snapshot")
}

func (d *directBackend) MoveLeader(context.Context, uint64) error {
	return errDirectUnsupported("MoveLeader")
}

// Defragment defragments the bare store, as a member's does.
func (d *directBackend) Defragment(ctx context.Context) error { return d.st.Defragment(ctx) }

// The direct subject's versions: a decided cluster version, no downgrade.
func (d *directBackend) ClusterVersion() string              { return "3.7.0" }
func (d *directBackend) StorageVersion() string              { return "3.7.0" }
func (d *directBackend) DowngradeInfo() membership.Downgrade { return membership.Downgrade{} }
func (d *directBackend) Downgrade(context.Context, pb.DowngradeRequest_DowngradeAction, string) (*pb.DowngradeResponse, error) {
	return nil, errDirectUnsupported("Downgrade")
}

// directAuth is the direct subject's auth: disabled, so every check
// passes, and the Auth RPCs answer codes.Unimplemented.
type directAuth struct {
	pb.UnimplementedAuthServer
}

func (directAuth) IsAdmin(context.Context) error                        { return nil }
func (directAuth) RequireUser(context.Context) error                    { return nil }
func (directAuth) WatchPermitted(context.Context, []byte, []byte) error { return nil }
