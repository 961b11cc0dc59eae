package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"go.etcd.io/raft/v3"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/storage"
)

// identity is who this member is and what it knew of its cluster when it
// started. New reads or bootstraps it (bootstrap) before anything else
// runs, and it never changes after.
type identity struct {
	memberID, clusterID uint64
	// seed is what this member knew of the cluster when it started (see
	// membership.Seed).
	seed membership.Seed
	// restarted is set when the data directory already held the member.
	restarted bool
}

// bootstrap establishes who this member is and which cluster it belongs
// to, and returns the raft peers to bootstrap a still-empty log with (none
// for a member joining a running cluster).
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
func bootstrap(cfg Config, eng *storage.Engine, lg *slog.Logger) (identity, []raft.Peer, error) {
	cid, ok, err := membership.LoadClusterID(eng)
	if err != nil {
		return identity{}, nil, err
	}
	if ok {
		id, err := restartIdentity(eng, cid)
		if err != nil {
			return identity{}, nil, err
		}
		return peersOf(id)
	}
	initial, err := membership.ParseInitialCluster(cfg.InitialCluster)
	if err != nil {
		return identity{}, nil, err
	}
	own, err := membership.NormalizeURLs(cfg.PeerURLs)
	if err != nil {
		return identity{}, nil, err
	}
	var id identity
	if cfg.InitialClusterState == ClusterStateExisting {
		id, err = joinIdentity(cfg, initial, own)
	} else {
		id, err = foundingIdentity(cfg, initial, own)
	}
	if err != nil {
		return identity{}, nil, err
	}
	b := eng.NewWriteBatch()
	err = errors.Join(
		membership.StageClusterID(b, id.clusterID),
		membership.StageLocalID(b, id.memberID),
		membership.StageSeed(b, id.seed),
	)
	if err != nil {
		b.Discard()
		return identity{}, nil, err
	}
	if err := b.Commit(true); err != nil {
		return identity{}, nil, fmt.Errorf("server: record membership: %w", err)
	}
	lg.Info("bootstrapped a new member", "cluster-id", fmt.Sprintf("%x", id.clusterID),
		"member-id", fmt.Sprintf("%x", id.memberID), "initial-cluster", cfg.InitialCluster,
		"initial-cluster-state", cfg.InitialClusterState)
	return peersOf(id)
}

// foundingIdentity names the founding members of a new cluster and this
// member among them.
func foundingIdentity(cfg Config, initial map[string][]string, own []string) (identity, error) {
	members, err := membership.InitialMembers(initial, cfg.ClusterToken)
	if err != nil {
		return identity{}, err
	}
	var self *membership.Member
	ids := make([]uint64, len(members))
	for i := range members {
		ids[i] = members[i].ID
		if members[i].Name == cfg.Name {
			self = &members[i]
		}
	}
	if self == nil {
		return identity{}, fmt.Errorf("server: couldn't find local name %q in the initial cluster configuration", cfg.Name)
	}
	if !slices.Equal(self.PeerURLs, own) {
		return identity{}, fmt.Errorf("server: --initial-cluster has %s=%v but --initial-advertise-peer-urls is %v",
			self.Name, self.PeerURLs, own)
	}
	return identity{memberID: self.ID, clusterID: membership.ClusterID(ids), seed: membership.Seed{Members: members}}, nil
}

// joinIdentity asks the running cluster who is in it; this member must
// already be there (added with MemberAdd), with exactly its peer URLs.
func joinIdentity(cfg Config, initial map[string][]string, own []string) (identity, error) {
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
		return identity{}, errors.New("server: --initial-cluster names no other member to join")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.RequestTimeout)
	defer cancel()
	ci, err := fetchCluster(ctx, peerClient(cfg), urls)
	if err != nil {
		return identity{}, err
	}
	for _, m := range ci.Members {
		if slices.Equal(m.PeerURLs, own) {
			return identity{memberID: m.ID, clusterID: ci.ClusterID, seed: membership.Seed{Join: true, Members: ci.Members}}, nil
		}
	}
	return identity{}, fmt.Errorf("server: the cluster has no member with peer URLs %v: add this member (MemberAdd) before starting it with --initial-cluster-state existing", own)
}

// restartIdentity reads back an existing member of cluster cid.
func restartIdentity(eng *storage.Engine, cid uint64) (identity, error) {
	id, ok, err := membership.LoadLocalID(eng)
	if err != nil {
		return identity{}, err
	}
	if !ok {
		return identity{}, errNoLocalMember
	}
	seed, hasSeed, err := membership.LoadSeed(eng)
	if err != nil {
		return identity{}, err
	}
	if !hasSeed {
		// Recorded before seeds were: a single member whose bootstrap
		// staged the member list directly.
		members, err := membership.LoadMembers(eng)
		if err != nil {
			return identity{}, err
		}
		seed = membership.Seed{Members: members}
	}
	return identity{memberID: id, clusterID: cid, seed: seed, restarted: true}, nil
}

// peersOf returns id with the raft bootstrap peers of its seed: none for a
// member joining a running cluster, else the founding members, each conf
// change carrying its member as context, so applying it records the
// member.
func peersOf(id identity) (identity, []raft.Peer, error) {
	if id.seed.Join {
		return id, nil, nil
	}
	peers := make([]raft.Peer, len(id.seed.Members))
	for i, m := range id.seed.Members {
		ctx, err := json.Marshal(m)
		if err != nil {
			return identity{}, nil, fmt.Errorf("server: encode member: %w", err)
		}
		peers[i] = raft.Peer{ID: m.ID, Context: ctx}
	}
	return id, peers, nil
}

var errNoLocalMember = errors.New("server: the data directory records a cluster but not which member it is")
