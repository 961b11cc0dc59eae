package api

import (
	"context"
	"errors"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/cairn-db/cairn/internal/lease"
	"github.com/cairn-db/cairn/internal/mvcc"
)

// RegisterLease registers etcd's Lease service, served by b, on gs. Call it
// before gs serves (for example right after NewGRPCServer).
func RegisterLease(gs *grpc.Server, b Backend) {
	pb.RegisterLeaseServer(gs, &leaseService{b: b})
}

// leaseService serves etcd's Lease service. Like etcd it validates nothing
// but the TTL (which etcd checks when the grant is applied; checking it
// first saves a trip through consensus and answers the same), and turns
// the two "not found" answers that are not errors in etcd's API — a
// keep-alive's TTL 0 and TimeToLive's TTL -1 — into responses.
type leaseService struct {
	pb.UnimplementedLeaseServer
	b Backend
}

// leaseErrors maps the lease package's errors to etcd's statuses; the rest
// go through the package's one table (toGRPCError).
var leaseErrors = []struct {
	err  error
	grpc error
}{
	{lease.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
	{lease.ErrLeaseExists, rpctypes.ErrGRPCLeaseExist},
	{lease.ErrLeaseTTLTooLarge, rpctypes.ErrGRPCLeaseTTLTooLarge},
	// Only the leader keeps lease clocks. etcd forwards to it and, when
	// leadership moves under a request, answers "leader changed", which
	// clients retry.
	{lease.ErrNotPrimary, rpctypes.ErrGRPCLeaderChanged},
}

func toLeaseGRPCError(err error) error {
	for _, e := range leaseErrors {
		if errors.Is(err, e.err) {
			return e.grpc
		}
	}
	return toGRPCError(err)
}

// leaseNotFound reports whether err says the lease does not exist; mvcc's
// error of the same text counts too.
func leaseNotFound(err error) bool {
	return errors.Is(err, lease.ErrLeaseNotFound) || errors.Is(err, mvcc.ErrLeaseNotFound)
}

func (s *leaseService) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if r.TTL > lease.MaxTTL {
		return nil, rpctypes.ErrGRPCLeaseTTLTooLarge
	}
	resp, err := s.b.LeaseGrant(ctx, r)
	if err != nil {
		return nil, toLeaseGRPCError(err)
	}
	return resp, nil
}

func (s *leaseService) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	resp, err := s.b.LeaseRevoke(ctx, r)
	if err != nil {
		return nil, toLeaseGRPCError(err)
	}
	return resp, nil
}

func (s *leaseService) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	resp, err := s.b.LeaseTimeToLive(ctx, r)
	if leaseNotFound(err) {
		return &pb.LeaseTimeToLiveResponse{Header: s.b.ResponseHeader(), ID: r.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, toLeaseGRPCError(err)
	}
	return resp, nil
}

func (s *leaseService) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	resp, err := s.b.LeaseLeases(ctx, r)
	if err != nil {
		return nil, toLeaseGRPCError(err)
	}
	if resp.Leases == nil {
		resp.Leases = []*pb.LeaseStatus{}
	}
	return resp, nil
}

// LeaseKeepAlive answers each keep-alive on the stream with the lease's
// renewed TTL, or TTL 0 for a lease that does not exist (the stream stays
// open). Any other failure ends the stream with its status; clients open a
// new one. The stream also ends when the client closes its side or its
// context ends.
func (s *leaseService) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	errc := make(chan error, 1)
	go func() { errc <- s.keepAlive(stream) }()
	select {
	case err := <-errc:
		return err
	case <-stream.Context().Done():
		// The receiving goroutine ends with the stream, which gRPC tears
		// down once this returns.
		return stream.Context().Err()
	}
}

func (s *leaseService) keepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// The header is taken before renewing, as etcd does, so its
		// revision is never later than the renewal: a client that sees a
		// lease renewed at revision R knows it was not revoked at or
		// before R.
		resp := &pb.LeaseKeepAliveResponse{Header: s.b.ResponseHeader(), ID: req.ID}
		ttl, err := s.b.LeaseRenew(stream.Context(), req.ID)
		switch {
		case leaseNotFound(err):
			resp.TTL = 0
		case err != nil:
			return toLeaseGRPCError(err)
		default:
			resp.TTL = ttl
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
