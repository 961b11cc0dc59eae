package server

import (
	"fmt"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// installSnapshot replaces this member's state with the snapshot raft
// received from the leader (raftnode.InstallSnapshot describes the file
// and the crash-safe install, synced before it returns, so the Ready
// loop's acknowledgement of the snapshot, sent once appliedTo reports its
// index, never promises more than the disk holds). Readers of the store
// wait meanwhile; the mvcc store, the member list, the removed IDs, the
// alarms, the leases and the auth store are reloaded from the new state,
// and the peers follow the new member list. Only the apply loop calls it,
// with every earlier entry applied.
func (s *Server) installSnapshot(snap *raftpb.Snapshot) error {
	index := snap.GetMetadata().GetIndex()
	start := time.Now()
	s.restoring.Lock()
	err := s.kv.Restore(func() error { return s.node.InstallSnapshot(snap) })
	s.metrics.keys.reset()
	if err == nil {
		err = s.loadReplicated()
	}
	if err == nil {
		err = s.leases.lessor.Reload()
	}
	if err == nil {
		// The 'a' keyspace came with the checkpoint.
		err = s.auth.reload(s.eng)
	}
	s.restoring.Unlock()
	if err != nil {
		return fmt.Errorf("server: install snapshot %d: %w", index, err)
	}
	// The store jumped from its old revision to the snapshot's: watchers
	// catch up from the store over the revisions in between.
	s.hub.Notify(s.kv.Rev(), nil)
	ap := &s.ap
	ap.applied, ap.lastLogCompact = index, index
	s.appliedTo(index)
	s.syncPeers()
	s.quota.measure()
	s.lg.Info("installed a snapshot from the leader", "index", index, "revision", s.kv.Rev(),
		"duration", time.Since(start).Round(time.Millisecond))
	if s.ap.removed[s.memberID] {
		s.leaveCluster() // the snapshot includes this member's removal
	}
	return nil
}
