package api

import (
	"context"
	"io"
	"log/slog"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc"

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
// Defragment, Hash, HashKV, Snapshot, MoveLeader and Downgrade.
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
	resp.StorageVersion = s.b.StorageVersion()
	d := s.b.DowngradeInfo()
	resp.DowngradeInfo = &pb.DowngradeInfo{Enabled: d.Enabled, TargetVersion: d.TargetVersion}
	if st.Leader == 0 {
		resp.Errors = append(resp.Errors, errNoLeaderText)
	}
	for _, a := range s.b.Alarms() {
		resp.Errors = append(resp.Errors, a.String())
	}
	return resp, nil
}

func (s *maintenanceService) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	resp, err := s.b.Alarm(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	if resp.Header == nil {
		resp.Header = header(s.b.Status())
	}
	return resp, nil
}

// Defragment gives back the disk space of deleted keys and compacted
// history and answers once done, as etcd's does; reads and writes go on
// meanwhile. Like etcd's, the response carries no header.
func (s *maintenanceService) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := s.b.Defragment(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	return &pb.DefragmentResponse{}, nil
}

// Hash answers with a hash of the member's whole replicated state at the
// current revision. etcd hashes its bbolt file; cairn hashes its own
// state, so the hash compares cairn members with each other (and with
// `cairn snapshot status` of a backup), never with etcd.
func (s *maintenanceService) Hash(ctx context.Context, _ *pb.HashRequest) (*pb.HashResponse, error) {
	resp, err := s.b.Hash(ctx)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}

// HashKV answers with the hash of the key history as etcd computes it, so
// that members of one cluster (and an etcd member with the same history)
// can be compared. A negative revision is refused as a future one, as etcd
// refuses it.
func (s *maintenanceService) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	resp, err := s.b.HashKV(ctx, r.Revision)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}

// snapshotChunk is the size of one Snapshot response's blob, etcd's.
const snapshotChunk = 32 << 10

// Snapshot streams a backup of the member's state (cairn's format, see
// `go doc ./internal/raftnode`, not etcd's bbolt file) as etcd streams
// its own: blobs of 32 KiB, each with the bytes that remain after it and
// the storage version, the file ending with the sha256 digest of the rest,
// so that `etcdctl snapshot save` writes a file `cairn snapshot restore`
// can check. Unlike etcd's, the first response also carries a header
// whose revision is the backup's.
func (s *maintenanceService) Snapshot(_ *pb.SnapshotRequest, srv grpc.ServerStreamingServer[pb.SnapshotResponse]) error {
	st, err := s.b.Snapshot(srv.Context())
	if err != nil {
		return toGRPCError(err)
	}
	defer st.Close()
	hdr := st.Header
	var sent int64
	for sent < st.Size {
		// Send may keep the buffer until the message is written: a new one
		// each time.
		buf := make([]byte, min(snapshotChunk, st.Size-sent))
		n, err := io.ReadFull(st, buf)
		if err != nil {
			s.log.Warn("snapshot stream failed", "err", err, "sent-bytes", sent)
			return toGRPCError(err)
		}
		sent += int64(n)
		resp := &pb.SnapshotResponse{
			Header:         hdr,
			RemainingBytes: uint64(st.Size - sent),
			Blob:           buf[:n],
			Version:        EtcdClusterVersion,
		}
		hdr = nil
		if err := srv.Send(resp); err != nil {
			return err
		}
	}
	s.log.Info("sent a snapshot to a client", "bytes", sent, "revision", st.Header.GetRevision())
	return nil
}

// MoveLeader hands the leadership to the member named in the request. As
// in etcd it must be sent to the leader ("not leader" otherwise, which
// etcdctl avoids by finding the leader first), the target must be a voting
// member, and the response, sent once the target leads, has no header.
func (s *maintenanceService) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := s.b.MoveLeader(ctx, r.TargetID); err != nil {
		return nil, toGRPCError(err)
	}
	return &pb.MoveLeaderResponse{}, nil
}

// Downgrade validates, enables or cancels a downgrade of the cluster
// version, with etcd's semantics and errors (see server.Server.Downgrade).
// As in etcd the response's header is the member's when it answers.
func (s *maintenanceService) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	resp, err := s.b.Downgrade(ctx, r.Action, r.Version)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = header(s.b.Status())
	return resp, nil
}
