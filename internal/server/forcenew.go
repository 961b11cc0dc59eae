package server

import (
	"fmt"

	"github.com/cairn-db/cairn/internal/raftnode"
)

// forceNewCluster carries out Config.ForceNewCluster before raft starts:
// on an existing data directory it rewrites the log so that this member
// restarts as the only member of its cluster (raftnode.ForceNewCluster);
// applying the removals the log then ends with drops the other members
// from the member list, as etcd does. The member keeps its member and
// cluster IDs and every entry its log had committed; what was not committed
// is lost, which is what a user accepts with the flag: the member takes
// whatever it last knew to be committed as the cluster's state.
//
// On a new data directory the flag means nothing (etcd ignores it too).
func (s *Server) forceNewCluster(applied uint64) error {
	if !s.cfg.ForceNewCluster {
		return nil
	}
	if !s.restarted {
		s.lg.Warn("ignoring --force-new-cluster: the data directory is new")
		return nil
	}
	removed, err := raftnode.ForceNewCluster(s.eng, s.logEng, s.memberID, applied)
	if err != nil {
		return fmt.Errorf("server: force a new cluster: %w", err)
	}
	ids := make([]string, len(removed))
	for i, id := range removed {
		ids[i] = fmt.Sprintf("%x", id)
	}
	s.lg.Warn("forcing a new cluster: restarting as its only member", "cluster-id", fmt.Sprintf("%x", s.clusterID),
		"local-member-id", fmt.Sprintf("%x", s.memberID), "applied-index", applied, "removing", ids)
	return nil
}
