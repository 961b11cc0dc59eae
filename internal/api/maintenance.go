package api

import (
	"context"
	"log/slog"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/server"
)

// EtcdVersion is the version of the etcd API cairn speaks (that of the wire
// types it is built with). Maintenance.Status and /version report it as the
// server version, because clients use it to decide which features they may
// use.
var EtcdVersion = version.Version

// EtcdClusterVersion is the cluster version reported next to EtcdVersion:
// its major.minor with patch 0, as etcd reports a cluster's version.
var EtcdClusterVersion = version.Cluster(version.Version) + ".0"

// errNoLeaderText is etcd's text for a member without a leader, which Status
// lists among its errors.
const errNoLeaderText = "etcdserver: no leader"

// maintenanceService serves etcd's Maintenance service: Status, Alarm,
// Defragment, HashKV and MoveLeader; the rest answer codes.Unimplemented
// until cairn has them.
type maintenanceService struct {
	pb.UnimplementedMaintenanceServer
	b   Backend
	log *slog.Logger
}

func header(st server.Status) *pb.ResponseHeader {
	return &pb.ResponseHeader{
		ClusterId: st.ClusterID,
		MemberId:  st.MemberID,
		Revision:  st.Revision,
		RaftTerm:  st.RaftTerm,
	}
}

func (s *maintenanceService) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	st := s.b.Status()
	resp := &pb.StatusResponse{
		Header:           header(st),
		Version:          EtcdVersion,
		DbSize:           st.DBSize,
		DbSizeInUse:      st.DBSizeInUse,
		Leader:           st.Leader,
		RaftIndex:        st.RaftIndex,
		RaftTerm:         st.RaftTerm,
		RaftAppliedIndex: st.AppliedIndex,
		IsLearner:        st.IsLearner,
		DbSizeQuota:      st.DBSizeQuota,
		DowngradeInfo:    &pb.DowngradeInfo{},
	}
	if st.Leader == 0 {
		resp.Errors = append(resp.Errors, errNoLeaderText)
	}
	for _, a := range s.alarms() {
		resp.Errors = append(resp.Errors, a.String())
	}
	return resp, nil
}

func (s *maintenanceService) alarms() []*pb.AlarmMember {
	if a, ok := s.b.(Alarmer); ok {
		return a.Alarms()
	}
	return nil
}

func (s *maintenanceService) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	var resp *pb.AlarmResponse
	if a, ok := s.b.(Alarmer); ok {
		var err error
		if resp, err = a.Alarm(ctx, r); err != nil {
			return nil, toGRPCError(err)
		}
	} else if r.GetAction() == pb.AlarmRequest_GET {
		resp = &pb.AlarmResponse{}
	} else {
		return nil, status.Error(codes.Unimplemented, "cairn: this member keeps no alarms, so none can be activated or deactivated")
	}
	if resp.Header == nil {
		resp.Header = header(s.b.Status())
	}
	return resp, nil
}

// Defragment succeeds without doing anything. etcd defragments to give back
// the space bbolt's freed pages hold on to; Pebble reclaims space by
// compacting its sorted tables in the background as it goes, so a cairn
// database never needs defragmenting. The call is kept so that tools and
// operators' runbooks that defragment after a compaction keep working. Like
// etcd's, the response carries no header.
func (s *maintenanceService) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	s.log.Info("defragment requested; nothing to do: Pebble reclaims space by itself")
	return &pb.DefragmentResponse{}, nil
}

func (s *maintenanceService) Hash(context.Context, *pb.HashRequest) (*pb.HashResponse, error) {
	return nil, status.Error(codes.Unimplemented, "cairn: Maintenance.Hash is not implemented yet")
}

// HashKVer is implemented by a Backend that can hash its key history
// (Maintenance.HashKV); without it HashKV answers codes.Unimplemented.
type HashKVer interface {
	// HashKV hashes the key history up to revision rev (0: the current
	// one) from the compaction revision on; the header's revision is the
	// current one. Errors: mvcc.ErrCompacted, mvcc.ErrFutureRev, the
	// server's.
	HashKV(ctx context.Context, rev int64) (*pb.HashKVResponse, error)
}

// LeaderMover is implemented by a Backend that can hand its leadership to
// another member (Maintenance.MoveLeader); without it MoveLeader answers
// codes.Unimplemented.
type LeaderMover interface {
	// MoveLeader makes target the leader; it must be called on the
	// leader (server.ErrNotLeader otherwise) and returns once target
	// leads.
	MoveLeader(ctx context.Context, target uint64) error
}

var (
	_ HashKVer    = (*server.Server)(nil)
	_ LeaderMover = (*server.Server)(nil)
)

// HashKV answers with the hash of the key history as etcd computes it, so
// that members of one cluster (and an etcd member with the same history)
// can be compared. A negative revision is refused as a future one, as etcd
// refuses it.
func (s *maintenanceService) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	h, ok := s.b.(HashKVer)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "cairn: Maintenance.HashKV is not implemented by this member")
	}
	resp, err := h.HashKV(ctx, r.Revision)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}

func (s *maintenanceService) Snapshot(*pb.SnapshotRequest, grpc.ServerStreamingServer[pb.SnapshotResponse]) error {
	return status.Error(codes.Unimplemented, "cairn: Maintenance.Snapshot is not implemented yet")
}

// MoveLeader hands the leadership to the member named in the request. As
// in etcd it must be sent to the leader ("not leader" otherwise, which
// etcdctl avoids by finding the leader first), the target must be a voting
// member, and the response, sent once the target leads, has no header.
func (s *maintenanceService) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	lm, ok := s.b.(LeaderMover)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "cairn: Maintenance.MoveLeader is not implemented by this member")
	}
	if err := lm.MoveLeader(ctx, r.TargetID); err != nil {
		return nil, toGRPCError(err)
	}
	return &pb.MoveLeaderResponse{}, nil
}

func (s *maintenanceService) Downgrade(context.Context, *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	return nil, status.Error(codes.Unimplemented, "cairn: Maintenance.Downgrade is not implemented yet")
}
