package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/cairn-db/cairn/internal/membership"
)

// RegisterCluster registers etcd's Cluster service, served by b, on gs.
// Call it before gs serves (for example right after NewGRPCServer).
func RegisterCluster(gs *grpc.Server, b Backend) {
	pb.RegisterClusterServer(gs, &clusterService{b: b})
}

// clusterService serves etcd's Cluster service. It checks the peer URLs a
// request carries; everything that depends on the member list (an ID or a
// URL already taken, an unknown ID, too many learners, promoting a voter)
// is decided by the backend against the list as it is when the change
// applies, so two racing changes cannot both pass.
type clusterService struct {
	pb.UnimplementedClusterServer
	b Backend
}

// header is etcd's header for Cluster responses: no revision, as etcd
// sends none (membership is not part of the key space).
func (s *clusterService) header() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: s.b.ClusterID(), MemberId: s.b.MemberID(), RaftTerm: s.b.Term()}
}

func (s *clusterService) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	urls, err := membership.NormalizeURLs(r.PeerURLs)
	if err != nil {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	added, members, err := s.b.MemberAdd(ctx, urls, r.IsLearner)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &pb.MemberAddResponse{
		Header: s.header(),
		// As etcd: the new member as requested (no name or client URLs
		// yet: it publishes them once it runs).
		Member:  &pb.Member{ID: added.ID, PeerURLs: added.PeerURLs, IsLearner: added.IsLearner},
		Members: protoMembers(members),
	}, nil
}

func (s *clusterService) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	members, err := s.b.MemberRemove(ctx, r.ID)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &pb.MemberRemoveResponse{Header: s.header(), Members: protoMembers(members)}, nil
}

// MemberUpdate checks the new peer URLs as MemberAdd does. etcd takes them
// unchecked and only fails later, when peers cannot dial the member; a
// malformed URL is refused here instead, with MemberAdd's error.
func (s *clusterService) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	urls, err := membership.NormalizeURLs(r.PeerURLs)
	if err != nil {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	members, err := s.b.MemberUpdate(ctx, r.ID, urls)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &pb.MemberUpdateResponse{Header: s.header(), Members: protoMembers(members)}, nil
}

func (s *clusterService) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	members, err := s.b.MemberList(ctx, r.Linearizable)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &pb.MemberListResponse{Header: s.header(), Members: protoMembers(members)}, nil
}

func (s *clusterService) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	members, err := s.b.MemberPromote(ctx, r.ID)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &pb.MemberPromoteResponse{Header: s.header(), Members: protoMembers(members)}, nil
}

func protoMembers(ms []membership.Member) []*pb.Member {
	out := make([]*pb.Member, len(ms))
	for i, m := range ms {
		out[i] = &pb.Member{
			ID:         m.ID,
			Name:       m.Name,
			PeerURLs:   m.PeerURLs,
			ClientURLs: m.ClientURLs,
			IsLearner:  m.IsLearner,
		}
	}
	return out
}
