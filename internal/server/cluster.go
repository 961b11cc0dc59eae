package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/membership"
)

// reconfig changes the cluster's membership: it proposes the Cluster
// service's changes as raft ConfChanges after etcd's strict reconfig
// checks, forwards learner promotions to the leader (only it knows whether
// the learner has caught up), and publishes this member's own attributes
// once it runs. The changes are applied in apply_member.go; the result is
// the memberList.
type reconfig struct {
	s *Server
}

// The Cluster service's operations. Each change goes through raft as a
// ConfChange (see apply_member.go) and returns the member list as the
// change left it; errors are etcd's: membership's sentinels (member not
// found, exists, peer URL exists, not a learner, too many learners), the
// strict reconfig check's (ErrNotEnoughStartedMembers, ErrUnhealthy),
// ErrLearnerNotReady, ErrConfChangeInProgress and the proposal errors.

// MemberList returns the members as this member has applied them; with
// linearizable it first waits for a read-index round, so the list includes
// every change that completed before the call. Errors: those of a
// linearizable Range.
func (s *Server) MemberList(ctx context.Context, linearizable bool) ([]membership.Member, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	if linearizable {
		if err := s.reads.wait(ctx); err != nil {
			return nil, err
		}
	}
	return s.Members(), nil
}

// MemberAdd adds a member with peerURLs, a learner if isLearner, and
// returns it (with the ID it was given; no name or client URLs until it
// starts and publishes them) and the resulting member list. The new member
// then starts with InitialClusterState "existing".
func (s *Server) MemberAdd(ctx context.Context, peerURLs []string, isLearner bool) (membership.Member, []membership.Member, error) {
	if err := s.life.enter(); err != nil {
		return membership.Member{}, nil, err
	}
	defer s.life.leave()
	urls, err := membership.NormalizeURLs(peerURLs)
	if err != nil {
		return membership.Member{}, nil, err
	}
	id, err := membership.NewMemberID(urls, s.clock.Now())
	if err != nil {
		return membership.Member{}, nil, err
	}
	m := membership.Member{ID: id, PeerURLs: urls, IsLearner: isLearner}
	if err := s.reconfig.mayAdd(m); err != nil {
		return membership.Member{}, nil, err
	}
	typ := raftpb.ConfChangeAddNode
	if isLearner {
		typ = raftpb.ConfChangeAddLearnerNode
	}
	ms, err := s.reconfig.configure(ctx, typ, m, false)
	if err != nil {
		return membership.Member{}, nil, err
	}
	return m, ms, nil
}

// MemberRemove removes member id and returns the members left. A member
// that removes itself stops shortly after (with ErrRemoved); the others
// refuse its messages from then on. A follower that removes itself may
// learn of its removal from the leader refusing it before it applies the
// change, and stop at once: it still answers with the members left (its
// own list without it), not ErrStopped, as the removal took effect.
func (s *Server) MemberRemove(ctx context.Context, id uint64) ([]membership.Member, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	if err := s.reconfig.mayRemove(id); err != nil {
		return nil, err
	}
	ms, err := s.reconfig.configure(ctx, raftpb.ConfChangeRemoveNode, membership.Member{ID: id}, false)
	if err != nil && id == s.memberID && errors.Is(err, ErrStopped) && errors.Is(s.Err(), ErrRemoved) {
		for _, m := range s.members.all() {
			if m.ID != id {
				ms = append(ms, m)
			}
		}
		return ms, nil
	}
	return ms, err
}

// MemberUpdate replaces the peer URLs of member id.
func (s *Server) MemberUpdate(ctx context.Context, id uint64, peerURLs []string) ([]membership.Member, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	urls, err := membership.NormalizeURLs(peerURLs)
	if err != nil {
		return nil, err
	}
	m := membership.Member{ID: id, PeerURLs: urls}
	if cur, ok := s.members.get(id); ok {
		m.Name, m.ClientURLs, m.IsLearner = cur.Name, cur.ClientURLs, cur.IsLearner
	}
	return s.reconfig.configure(ctx, raftpb.ConfChangeUpdateNode, m, false)
}

// MemberPromote makes learner id a voting member. Only the leader knows
// whether the learner has caught up, so a follower forwards the request to
// it over the peer network, as etcd does. Errors: ErrLearnerNotReady until
// the learner's log is within 10% of the leader's, ErrMemberNotLearner,
// ErrIDNotFound, and those of MemberAdd.
func (s *Server) MemberPromote(ctx context.Context, id uint64) ([]membership.Member, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	return s.reconfig.promote(ctx, id)
}

// promote is MemberPromote for a caller that holds enter: here if this
// member leads, else forwarded to the leader until it answers for good.
func (rc *reconfig) promote(ctx context.Context, id uint64) ([]membership.Member, error) {
	s := rc.s
	ms, err := rc.promoteHere(ctx, id)
	if !errors.Is(err, ErrNotLeader) {
		return ms, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	for {
		if lead := s.node.Lead(); lead != 0 && lead != s.memberID {
			if m, ok := s.members.get(lead); ok {
				ms, err := rc.promoteRemote(ctx, m.PeerURLs, id)
				if err == nil || definitePromoteError(err) {
					return ms, err
				}
				s.lg.Debug("forwarding a promotion to the leader failed; retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, ErrTimeout
			}
			return nil, ErrCanceled
		case <-s.lead.changedC():
		case <-s.clock.After(time.Duration(s.cfg.TickMs) * time.Millisecond):
		case <-s.life.stopc:
			return nil, ErrStopped
		}
	}
}

// definitePromoteError reports whether a forwarded promotion failed for a
// reason retrying will not fix.
func definitePromoteError(err error) bool {
	for _, e := range promoteErrors {
		if errors.Is(err, e) {
			return !errors.Is(e, ErrNotLeader) && !errors.Is(e, ErrTimeout)
		}
	}
	return false
}

// readyPercent is how close a learner's log must be to the leader's for
// promotion (etcd's threshold).
const readyPercent = 0.9

// promoteHere promotes learner id if this member is the leader (ErrNotLeader
// otherwise). The caller holds enter.
func (rc *reconfig) promoteHere(ctx context.Context, id uint64) ([]membership.Member, error) {
	s := rc.s
	if err := rc.learnerReady(ctx, id); err != nil {
		return nil, err
	}
	if !s.cfg.DisableStrictReconfigCheck {
		voters, started := s.members.startedVoters(0)
		// The learner counts as started and as one more voter.
		if started+1 < (voters+1)/2+1 {
			return nil, ErrNotEnoughStartedMembers
		}
	}
	return rc.configure(ctx, raftpb.ConfChangeAddNode, membership.Member{ID: id}, true)
}

// learnerReady checks, on the leader, that learner id's log has caught up.
func (rc *reconfig) learnerReady(ctx context.Context, id uint64) error {
	s := rc.s
	if !s.node.IsLeader() {
		return ErrNotLeader
	}
	st, err := s.node.RaftStatus(ctx.Done())
	if err != nil {
		return ErrStopped
	}
	if st.Progress == nil {
		return ErrNotLeader
	}
	pr, ok := st.Progress[id]
	if !ok {
		return membership.ErrIDNotFound
	}
	if m, ok := s.members.get(id); ok && !m.IsLearner {
		return membership.ErrMemberNotLearner
	}
	leader, ok := st.Progress[st.ID]
	if !ok || float64(pr.Match) < float64(leader.Match)*readyPercent {
		return ErrLearnerNotReady
	}
	return nil
}

// mayAdd is etcd's strict reconfig check for an addition: a new voter
// must leave a quorum of started voters, and this member must be connected
// to a quorum of the enlarged cluster.
func (rc *reconfig) mayAdd(m membership.Member) error {
	s := rc.s
	if s.cfg.DisableStrictReconfigCheck {
		return nil
	}
	if !m.IsLearner {
		voters, started := s.members.startedVoters(0)
		// A one-member cluster may always grow (restoring from a backup).
		if !(started == 1 && voters == 1) && started < (voters+1)/2+1 {
			return ErrNotEnoughStartedMembers
		}
	}
	ids := s.members.voters()
	if len(ids) > 1 && s.peers.connectedSince(s.clock.Now().Add(-healthInterval), ids) < (len(ids)+1)/2+1 {
		return ErrUnhealthy
	}
	return nil
}

// mayRemove is etcd's strict reconfig check for a removal: the voters
// left must include a quorum of started ones, and, unless the member is
// down already, this member must stay connected to a quorum.
func (rc *reconfig) mayRemove(id uint64) error {
	s := rc.s
	if s.cfg.DisableStrictReconfigCheck {
		return nil
	}
	if m, ok := s.members.get(id); ok && m.IsLearner {
		return nil
	}
	voters, started := s.members.startedVoters(id)
	if started < voters/2+1 {
		return ErrNotEnoughStartedMembers
	}
	if id != s.memberID && s.peers.tr.ActiveSince(id).IsZero() {
		return nil // a member that is down is not part of the active quorum
	}
	ids := s.members.voters()
	active := s.peers.connectedSince(s.clock.Now().Add(-healthInterval), ids)
	if active-1 < 1+(len(ids)-1)/2 {
		return ErrUnhealthy
	}
	return nil
}

// configure proposes a conf change of typ for m and waits until it is
// applied here and raft has taken it in (so a next change is not refused
// as concurrent). The caller holds enter.
func (rc *reconfig) configure(ctx context.Context, typ raftpb.ConfChangeType, m membership.Member, promote bool) ([]membership.Member, error) {
	s := rc.s
	if s.life.stopping() {
		return nil, ErrStopped
	}
	var data []byte
	if typ != raftpb.ConfChangeRemoveNode {
		var err error
		data, err = json.Marshal(membership.ChangeContext{Member: m, IsPromote: promote})
		if err != nil {
			return nil, fmt.Errorf("server: encode member: %w", err)
		}
	}
	id := s.ids.next()
	cc := &raftpb.ConfChange{Id: new(id), Type: typ.Enum(), NodeId: new(m.ID), Context: data}
	res, err := s.await(ctx, id, func() { s.node.ProposeConfChange(id, cc) })
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, res.err
	}
	// The change is applied; waiting until raft knows it only keeps the
	// next change from being refused as pending. A member stopping in the
	// meantime (say it removed itself) does not undo it: report it done,
	// as etcd answers a leader that removed itself.
	_ = s.node.WaitAdvanced(res.index, s.life.stopc)
	return res.members, nil
}

// leaveCluster stops the member after it applied its own removal, with a
// delay that lets it pass the news on (as a leader, the commit of its
// removal), as etcd does.
func (s *Server) leaveCluster() {
	s.lg.Warn("this member was removed from the cluster; stopping")
	s.life.wg.Add(1)
	go func() {
		defer s.life.wg.Done()
		select {
		case <-s.clock.After(removedStopDelay):
			s.fail(ErrRemoved)
		case <-s.life.stopc:
		}
	}()
}

// removedStopDelay is how long a removed member keeps running (etcd's).
const removedStopDelay = time.Second
