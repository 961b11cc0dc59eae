package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/storage"
)

// Membership changes are raft ConfChange entries (version 1), carrying the
// member as membership.ChangeContext, as etcd proposes them. ConfChangeV2
// would add joint consensus, which only pays off when several voters change
// at once; cairn, like etcd's API, changes one member at a time, where the
// simple protocol is safe (raft refuses a second change until the first is
// applied) and leaves no joint configuration to exit.
//
// Every member validates a change against its applied member list before
// applying it (membership.Validate). A refused change still goes to raft,
// as a change of node 0 that alters nothing, so raft stops waiting for it;
// its proposer gets the refusal.

// applyConfChange applies one conf change entry, staging the new raft
// ConfState and member list in b. It returns the proposal's ID and result;
// an error means the entry cannot be applied at all (fatal).
func (s *Server) applyConfChange(b *storage.Batch, e *raftpb.Entry) (uint64, result, error) {
	cc := &raftpb.ConfChange{}
	if err := proto.Unmarshal(e.GetData(), cc); err != nil {
		return 0, result{}, fmt.Errorf("decode conf change: %w", err)
	}
	ch, err := changeOf(cc)
	if err != nil {
		return 0, result{}, err
	}
	ap := &s.ap
	verr := membership.Validate(ap.members, ap.removed, ch, s.cfg.MaxLearners)
	apply := cc
	if verr != nil {
		apply = proto.CloneOf(cc)
		apply.NodeId = new(uint64(0))
	}
	cs, err := s.node.ApplyConfChange(apply)
	if err != nil {
		return 0, result{}, err
	}
	if err := raftnode.StageConfState(b, cs); err != nil {
		return 0, result{}, err
	}
	s.node.LogStore().SetConfState(cs)
	if verr != nil {
		s.lg.Warn("refused a membership change", "type", cc.GetType().String(),
			"member-id", fmt.Sprintf("%x", cc.GetNodeId()), "err", verr)
		return cc.GetId(), result{err: verr, members: slices.Clone(ap.members)}, nil
	}
	if err := s.stageChange(b, ch); err != nil {
		return 0, result{}, err
	}
	s.lg.Info("applied a membership change", "type", cc.GetType().String(),
		"member-id", fmt.Sprintf("%x", ch.Member.ID), "peer-urls", ch.Member.PeerURLs)
	return cc.GetId(), result{members: slices.Clone(ap.members)}, nil
}

// changeOf reads the membership change a conf change makes.
func changeOf(cc *raftpb.ConfChange) (membership.Change, error) {
	var ctx membership.ChangeContext
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode, raftpb.ConfChangeUpdateNode:
		if err := json.Unmarshal(cc.GetContext(), &ctx); err != nil {
			return membership.Change{}, fmt.Errorf("decode conf change context: %w", err)
		}
		if ctx.Member.ID != cc.GetNodeId() {
			return membership.Change{}, fmt.Errorf("conf change for member %x carries member %x", cc.GetNodeId(), ctx.Member.ID)
		}
	}
	ch := membership.Change{Member: ctx.Member}
	ch.Member.ID = cc.GetNodeId()
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode:
		ch.Kind = membership.KindAdd
		if ctx.IsPromote {
			ch.Kind = membership.KindPromote
		}
		ch.Member.IsLearner = false
	case raftpb.ConfChangeAddLearnerNode:
		ch.Kind = membership.KindAdd
		ch.Member.IsLearner = true
	case raftpb.ConfChangeRemoveNode:
		ch.Kind = membership.KindRemove
	case raftpb.ConfChangeUpdateNode:
		ch.Kind = membership.KindUpdate
	default:
		return ch, fmt.Errorf("unknown conf change type %v", cc.GetType())
	}
	return ch, nil
}

// stageChange applies a validated change to the apply loop's member list
// and stages it in b.
func (s *Server) stageChange(b *storage.Batch, ch membership.Change) error {
	ap := &s.ap
	ap.membersChanged = true
	i := slices.IndexFunc(ap.members, func(m membership.Member) bool { return m.ID == ch.Member.ID })
	switch ch.Kind {
	case membership.KindAdd:
		ap.members = append(ap.members, ch.Member)
		slices.SortFunc(ap.members, func(a, b membership.Member) int {
			switch {
			case a.ID < b.ID:
				return -1
			case a.ID > b.ID:
				return 1
			}
			return 0
		})
		return membership.StageMember(b, ch.Member)
	case membership.KindPromote:
		ap.members[i].IsLearner = false
		return membership.StageMember(b, ap.members[i])
	case membership.KindUpdate:
		ap.members[i].PeerURLs = ch.Member.PeerURLs
		return membership.StageMember(b, ap.members[i])
	case membership.KindRemove:
		ap.members = slices.Delete(ap.members, i, i+1)
		ap.removed[ch.Member.ID] = true
		if ch.Member.ID == s.memberID {
			ap.removedSelf = true
		}
		return errors.Join(membership.StageRemoveMember(b, ch.Member.ID), membership.StageRemoved(b, ch.Member.ID))
	}
	return fmt.Errorf("unknown change kind %d", ch.Kind)
}

// applyMemberAttributes records the name and client URLs a member
// published. A member that is gone by now is skipped.
func (s *Server) applyMemberAttributes(b *storage.Batch, r *membershippb.ClusterMemberAttrSetRequest) error {
	ap := &s.ap
	i := slices.IndexFunc(ap.members, func(m membership.Member) bool { return m.ID == r.Member_ID })
	if i < 0 {
		s.lg.Info("skipped the attributes of a member not in the cluster", "member-id", fmt.Sprintf("%x", r.Member_ID))
		return nil
	}
	m := &ap.members[i]
	m.Name = r.GetMemberAttributes().GetName()
	m.ClientURLs = slices.Clone(r.GetMemberAttributes().GetClientUrls())
	ap.membersChanged = true
	return membership.StageMember(b, *m)
}

// reloadMembers loads the member list and removed IDs from the engine into
// the apply loop's state and publishes them.
func (s *Server) reloadMembers() error {
	ms, err := membership.LoadMembers(s.eng)
	if err != nil {
		return err
	}
	removed, err := membership.LoadRemoved(s.eng)
	if err != nil {
		return err
	}
	s.ap.members, s.ap.removed = ms, removed
	s.publishMembers()
	return nil
}

// publishMembers copies the apply loop's member list to the readers'.
func (s *Server) publishMembers() {
	removed := make(map[uint64]bool, len(s.ap.removed))
	for id := range s.ap.removed {
		removed[id] = true
	}
	s.members.replace(slices.Clone(s.ap.members), removed)
}
