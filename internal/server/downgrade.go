package server

import (
	"context"
	"errors"

	"github.com/coreos/go-semver/semver"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/version"
)

// Downgrade's errors, with etcd's texts (clientv3 matches them by text).
var (
	ErrWrongDowngradeVersionFormat   = errors.New("etcdserver: wrong downgrade target version format")
	ErrInvalidDowngradeTargetVersion = errors.New("etcdserver: invalid downgrade target version")
	ErrClusterVersionUnavailable     = errors.New("etcdserver: cluster version not found during downgrade")
	ErrDowngradeInProcess            = errors.New("etcdserver: cluster has a downgrade job in progress")
	ErrNoInflightDowngrade           = errors.New("etcdserver: no inflight downgrade job")
	// ErrUnknownMethod answers a Downgrade action etcd does not know.
	ErrUnknownMethod = errors.New("etcdserver: unknown method")
)

// Downgrade serves Maintenance.Downgrade with etcd's semantics:
//
//   - VALIDATE checks, after a read-index round, that target (major.minor
//     or a full version; the patch is ignored) is the cluster version's
//     one lower minor version and that no downgrade is in progress.
//   - ENABLE validates the same way, then records the downgrade job
//     through raft; the leader then lowers the cluster version to target.
//   - CANCEL records through raft that the job is over (the leader then
//     raises the cluster version back). With no job in progress etcd
//     succeeds all the same, and so does cairn.
//
// The response carries the cluster version ("major.minor") as the member
// sees it when it answers, and no header (the API fills it). Errors:
// ErrWrongDowngradeVersionFormat, ErrClusterVersionUnavailable,
// ErrInvalidDowngradeTargetVersion, ErrDowngradeInProcess,
// ErrUnknownMethod, and those of a read or a proposal.
func (s *Server) Downgrade(ctx context.Context, action pb.DowngradeRequest_DowngradeAction, target string) (*pb.DowngradeResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	switch action {
	case pb.DowngradeRequest_VALIDATE:
		tv, err := parseDowngradeTarget(target)
		if err != nil {
			return nil, err
		}
		if s.versions.cluster() == "" {
			return nil, ErrClusterVersionUnavailable
		}
		resp := s.downgradeResponse()
		if err := s.validateDowngrade(ctx, tv); err != nil {
			return nil, err
		}
		return resp, nil
	case pb.DowngradeRequest_ENABLE:
		tv, err := parseDowngradeTarget(target)
		if err != nil {
			return nil, err
		}
		if err := s.validateDowngrade(ctx, tv); err != nil {
			return nil, err
		}
		if err := s.proposeDowngrade(ctx, &membershippb.DowngradeInfoSetRequest{Enabled: true, Ver: tv.String()}); err != nil {
			return nil, err
		}
		return s.downgradeResponse(), nil
	case pb.DowngradeRequest_CANCEL:
		if err := s.reads.wait(ctx); err != nil {
			return nil, err
		}
		if s.versions.downgrade().Enabled {
			if err := s.proposeDowngrade(ctx, &membershippb.DowngradeInfoSetRequest{Enabled: false}); err != nil {
				s.lg.Warn("failed to cancel downgrade", "err", err)
			}
		} else {
			s.lg.Warn("failed to cancel downgrade", "err", ErrNoInflightDowngrade)
		}
		return s.downgradeResponse(), nil
	default:
		return nil, ErrUnknownMethod
	}
}

// validateDowngrade waits for a read-index round, so that it judges the
// cluster version and downgrade job as of now, then checks tv against them.
func (s *Server) validateDowngrade(ctx context.Context, tv *semver.Version) error {
	if err := s.reads.wait(ctx); err != nil {
		return err
	}
	cur := s.versions.cluster()
	if cur == "" {
		return ErrClusterVersionUnavailable
	}
	cv, err := semver.NewVersion(cur)
	if err != nil {
		return err
	}
	if !validDowngrade(cv, tv) {
		return ErrInvalidDowngradeTargetVersion
	}
	if s.versions.downgrade().Enabled {
		return ErrDowngradeInProcess
	}
	return nil
}

func (s *Server) proposeDowngrade(ctx context.Context, r *membershippb.DowngradeInfoSetRequest) error {
	res, err := s.propose(ctx, &pb.InternalRaftRequest{DowngradeInfoSet: r})
	if err != nil {
		return err
	}
	return res.err
}

// downgradeResponse is a Downgrade response carrying the cluster version as
// this member sees it now.
func (s *Server) downgradeResponse() *pb.DowngradeResponse {
	resp := &pb.DowngradeResponse{}
	if cv := s.versions.cluster(); cv != "" {
		resp.Version = version.Cluster(cv)
	}
	return resp
}

// parseDowngradeTarget reads a downgrade target as etcd does: a full
// version or major.minor, kept as major.minor.
func parseDowngradeTarget(v string) (*semver.Version, error) {
	ver, err := semver.NewVersion(v)
	if err != nil {
		if ver, err = semver.NewVersion(v + ".0"); err != nil {
			return nil, ErrWrongDowngradeVersionFormat
		}
	}
	return majorMinor(ver), nil
}
