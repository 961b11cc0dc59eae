package server

import (
	"encoding/json"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"

	"github.com/cairn-db/cairn/internal/membership"
)

// loadOrBootstrap establishes who this member is and which cluster it
// belongs to. A new engine derives both from the configuration (etcd's
// derivation, so the IDs match etcd's for the same flags) and records them
// with one synced batch before raft starts; an existing engine reads them
// back and ignores the initial-cluster settings, as etcd does.
//
// It returns the raft peers to bootstrap a still-empty log with: the
// recorded founding members, so that a crash between recording them and
// raft's first write bootstraps the same log on restart.
func (s *Server) loadOrBootstrap() ([]raft.Peer, error) {
	cid, ok, err := membership.LoadClusterID(s.eng)
	if err != nil {
		return nil, err
	}
	if ok {
		id, ok, err := membership.LoadLocalID(s.eng)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errNoLocalMember
		}
		members, err := membership.LoadMembers(s.eng)
		if err != nil {
			return nil, err
		}
		s.clusterID, s.memberID = cid, id
		s.members.list = members
		return peersOf(members)
	}

	initial, err := membership.ParseInitialCluster(s.cfg.InitialCluster)
	if err != nil {
		return nil, err
	}
	members, err := membership.InitialMembers(initial, s.cfg.ClusterToken)
	if err != nil {
		return nil, err
	}
	own, err := membership.NormalizeURLs(s.cfg.PeerURLs)
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("server: couldn't find local name %q in the initial cluster configuration", s.cfg.Name)
	}
	if !slices.Equal(self.PeerURLs, own) {
		return nil, fmt.Errorf("server: --initial-cluster has %s=%v but --initial-advertise-peer-urls is %v",
			self.Name, self.PeerURLs, own)
	}
	if len(members) > 1 {
		// Needs the peer transport; until then a second voter would only
		// make the cluster unable to elect a leader.
		return nil, fmt.Errorf("server: an initial cluster of %d members is not supported yet: start a single member", len(members))
	}
	s.memberID = self.ID
	s.clusterID = membership.ClusterID(ids)
	b := s.eng.NewWriteBatch()
	if err := membership.StageClusterID(b, s.clusterID); err != nil {
		b.Discard()
		return nil, err
	}
	if err := membership.StageLocalID(b, s.memberID); err != nil {
		b.Discard()
		return nil, err
	}
	for _, m := range members {
		if err := membership.StageMember(b, m); err != nil {
			b.Discard()
			return nil, err
		}
	}
	if err := b.Commit(true); err != nil {
		return nil, fmt.Errorf("server: record membership: %w", err)
	}
	s.members.list = members
	s.lg.Info("bootstrapped a new cluster", "cluster-id", fmt.Sprintf("%x", s.clusterID),
		"member-id", fmt.Sprintf("%x", s.memberID), "initial-cluster", s.cfg.InitialCluster)
	return peersOf(members)
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
