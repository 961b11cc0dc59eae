package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"

	"github.com/cairn-db/cairn/internal/membership"
)

// loadOrBootstrap establishes who this member is and which cluster it
// belongs to, and returns the raft peers to bootstrap a still-empty log
// with (none for a member joining a running cluster).
//
// A new engine in a new cluster derives both IDs from the configuration
// (etcd's derivation, so the IDs match etcd's for the same flags); one that
// joins an existing cluster asks the peers InitialCluster names for the
// cluster ID and the member list, and finds itself in it by its peer URLs.
// Either way it records the IDs and its seed (the founding members, or the
// members it was told about) in one synced batch before raft starts. The
// member list itself is replicated state: it fills as the bootstrap conf
// changes (or, for a joining member, the leader's log) are applied.
//
// An existing engine reads everything back and ignores the initial-cluster
// settings, as etcd does.
func (s *Server) loadOrBootstrap() ([]raft.Peer, error) {
	cid, ok, err := membership.LoadClusterID(s.eng)
	if err != nil {
		return nil, err
	}
	if ok {
		return s.restart(cid)
	}
	initial, err := membership.ParseInitialCluster(s.cfg.InitialCluster)
	if err != nil {
		return nil, err
	}
	own, err := membership.NormalizeURLs(s.cfg.PeerURLs)
	if err != nil {
		return nil, err
	}
	var seed membership.Seed
	if s.cfg.InitialClusterState == ClusterStateExisting {
		seed, err = s.joinSeed(initial, own)
	} else {
		seed, err = s.foundingSeed(initial, own)
	}
	if err != nil {
		return nil, err
	}
	b := s.eng.NewWriteBatch()
	err = errors.Join(
		membership.StageClusterID(b, s.clusterID),
		membership.StageLocalID(b, s.memberID),
		membership.StageSeed(b, seed),
	)
	if err != nil {
		b.Discard()
		return nil, err
	}
	if err := b.Commit(true); err != nil {
		return nil, fmt.Errorf("server: record membership: %w", err)
	}
	s.seed = seed
	s.lg.Info("bootstrapped a new member", "cluster-id", fmt.Sprintf("%x", s.clusterID),
		"member-id", fmt.Sprintf("%x", s.memberID), "initial-cluster", s.cfg.InitialCluster,
		"initial-cluster-state", s.cfg.InitialClusterState)
	if seed.Join {
		return nil, nil
	}
	return peersOf(seed.Members)
}

// foundingSeed names the founding members of a new cluster and this member
// among them.
func (s *Server) foundingSeed(initial map[string][]string, own []string) (membership.Seed, error) {
	members, err := membership.InitialMembers(initial, s.cfg.ClusterToken)
	if err != nil {
		return membership.Seed{}, err
	}
	var self *membership.Member
	ids := make([]uint64, len(members))
	for i := range members {
		ids[i] = members[i].ID
		if members[i].Name == s.cfg.Name {
			self = &members[i]
		}
	}
	if self == nil {
		return membership.Seed{}, fmt.Errorf("server: couldn't find local name %q in the initial cluster configuration", s.cfg.Name)
	}
	if !slices.Equal(self.PeerURLs, own) {
		return membership.Seed{}, fmt.Errorf("server: --initial-cluster has %s=%v but --initial-advertise-peer-urls is %v",
			self.Name, self.PeerURLs, own)
	}
	s.memberID = self.ID
	s.clusterID = membership.ClusterID(ids)
	return membership.Seed{Members: members}, nil
}

// joinSeed asks the running cluster who is in it; this member must already
// be there (added with MemberAdd), with exactly its peer URLs.
func (s *Server) joinSeed(initial map[string][]string, own []string) (membership.Seed, error) {
	var urls []string
	for _, us := range initial {
		for _, u := range us {
			if !slices.Contains(own, u) && !slices.Contains(urls, u) {
				urls = append(urls, u)
			}
		}
	}
	slices.Sort(urls)
	if len(urls) == 0 {
		return membership.Seed{}, errors.New("server: --initial-cluster names no other member to join")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	ci, err := s.fetchCluster(ctx, urls)
	if err != nil {
		return membership.Seed{}, err
	}
	for _, m := range ci.Members {
		if slices.Equal(m.PeerURLs, own) {
			s.memberID, s.clusterID = m.ID, ci.ClusterID
			return membership.Seed{Join: true, Members: ci.Members}, nil
		}
	}
	return membership.Seed{}, fmt.Errorf("server: the cluster has no member with peer URLs %v: add this member (MemberAdd) before starting it with --initial-cluster-state existing", own)
}

// restart reads back an existing member.
func (s *Server) restart(cid uint64) ([]raft.Peer, error) {
	id, ok, err := membership.LoadLocalID(s.eng)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errNoLocalMember
	}
	seed, hasSeed, err := membership.LoadSeed(s.eng)
	if err != nil {
		return nil, err
	}
	s.clusterID, s.memberID, s.seed = cid, id, seed
	if !hasSeed {
		// Recorded before seeds were: a single member whose bootstrap
		// staged the member list directly.
		members, err := membership.LoadMembers(s.eng)
		if err != nil {
			return nil, err
		}
		s.seed = membership.Seed{Members: members}
	}
	if s.seed.Join {
		return nil, nil
	}
	return peersOf(s.seed.Members)
}

// peersOf turns members into raft bootstrap peers; each conf change carries
// its member as context, so applying it records the member.
func peersOf(members []membership.Member) ([]raft.Peer, error) {
	peers := make([]raft.Peer, len(members))
	for i, m := range members {
		ctx, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("server: encode member: %w", err)
		}
		peers[i] = raft.Peer{ID: m.ID, Context: ctx}
	}
	return peers, nil
}
