package server

import (
	"context"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
)

// publishRetry is how long publish waits before trying again.
const publishRetry = 500 * time.Millisecond

// publish records this member's name and client URLs in the member list,
// through raft, as etcd does when a member starts: that is how the other
// members learn them (MemberList's name and clientURLs) and how a member
// counts as started for the strict reconfig checks. It waits until this
// member is in its applied member list, skips the proposal when the list
// already holds the same attributes, and retries until it succeeds or the
// member stops.
func (rc *reconfig) publish() {
	s := rc.s
	defer s.life.wg.Done()
	for {
		changed := s.members.changedC()
		m, ok := s.members.get(s.memberID)
		if ok && m.Name == s.cfg.Name && slices.Equal(m.ClientURLs, s.cfg.ClientURLs) {
			return
		}
		var retry <-chan time.Time
		if ok {
			err := rc.proposeAttributes()
			if err == nil {
				s.lg.Info("published local member attributes to the cluster", "name", s.cfg.Name,
					"client-urls", s.cfg.ClientURLs)
				return
			}
			s.lg.Debug("publishing member attributes failed; retrying", "err", err)
			retry = s.clock.After(publishRetry)
		}
		select {
		case <-changed:
		case <-retry:
		case <-s.life.stopc:
			return
		}
	}
}

func (rc *reconfig) proposeAttributes() error {
	s := rc.s
	if err := s.life.enter(); err != nil {
		return err
	}
	defer s.life.leave()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := s.propose(ctx, &pb.InternalRaftRequest{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{
		Member_ID:        s.memberID,
		MemberAttributes: &membershippb.Attributes{Name: s.cfg.Name, ClientUrls: s.cfg.ClientURLs},
	}})
	return err
}
