package raftnode

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/storage"
)

// ErrForceLearner is returned by ForceNewCluster for a member that is a
// learner: it cannot be the only voter of a new cluster.
var ErrForceLearner = errors.New("raftnode: a learner cannot be forced into a new cluster; promote it or force a voter")

// ForceNewCluster rewrites the raft log so that member self, started on
// it, is the only member of its cluster (etcd's --force-new-cluster). state
// is the state engine and log the engine holding the log (the same engine
// without --wal-dir). It is called before Start, with nothing else using
// either; applied is the state engine's applied index.
//
// As etcd does, it discards the entries after the commit index (raised to
// applied first: the applied index may be ahead of a commit index the last
// hard state did not carry), works out the members the committed log leaves
// in the configuration (the conf state at applied, then the conf changes
// committed after it), and appends one committed ConfChangeRemoveNode for
// every member but self, at the current term. Started on the log, raft
// hands those entries to the apply loop like any committed entries;
// applying them removes the members from the member list and from raft's
// configuration, after which self elects itself alone.
//
// It returns the IDs it removed (sorted). A member whose configuration has
// no other member gets no entries and is left as it was.
func ForceNewCluster(state *storage.Engine, log Log, self, applied uint64) ([]uint64, error) {
	ls, err := OpenSeparateLogStore(state, log)
	if err != nil {
		return nil, err
	}
	hs := ls.HardState()
	first, _ := ls.FirstIndex()
	last, _ := ls.LastIndex()
	commit := max(hs.GetCommit(), applied)
	if commit > last || applied+1 < first {
		return nil, fmt.Errorf("raftnode: applied index %d and commit index %d do not fit the log [%d, %d]", applied, commit, first, last)
	}
	_, cs, _ := ls.InitialState()
	voters := map[uint64]bool{}
	for _, id := range cs.GetVoters() {
		voters[id] = true
	}
	for _, id := range cs.GetLearners() {
		voters[id] = false
	}
	if commit > applied {
		ents, err := ls.Entries(applied+1, commit+1, math.MaxUint64)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if err := replayConfChange(voters, e); err != nil {
				return nil, err
			}
		}
	}
	if isVoter, ok := voters[self]; ok && !isVoter {
		return nil, ErrForceLearner
	} else if !ok {
		return nil, fmt.Errorf("raftnode: member %x is not in the configuration its log commits", self)
	}
	var remove []uint64
	for _, id := range slices.Sorted(maps.Keys(voters)) {
		if id != self {
			remove = append(remove, id)
		}
	}

	// The removals replace the entries after the commit index. With none
	// to append, the entry at the commit index is written again, which
	// drops those after it too, or, if it was compacted, the log is reset
	// to it.
	index := commit
	var ents []*raftpb.Entry
	for _, id := range remove {
		data, err := proto.Marshal(&raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: new(id)})
		if err != nil {
			return nil, fmt.Errorf("raftnode: encode conf change: %w", err)
		}
		index++
		ents = append(ents, &raftpb.Entry{Index: new(index), Term: new(hs.GetTerm()), Type: raftpb.EntryConfChange.Enum(), Data: data})
	}
	if len(ents) == 0 && last > commit {
		if commit == first-1 {
			_, truncTerm := ls.truncation()
			if err := ls.back.reset(commit, truncTerm); err != nil {
				return nil, fmt.Errorf("raftnode: discard uncommitted entries: %w", err)
			}
		} else if ents, err = ls.Entries(commit, commit+1, math.MaxUint64); err != nil {
			return nil, err
		}
	}
	newHS := &raftpb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(index)}
	if err := ls.back.save(newHS, ents, last, true); err != nil {
		return nil, fmt.Errorf("raftnode: persist the forced configuration: %w", err)
	}
	return remove, nil
}

// replayConfChange applies the conf change in e, if it is one, to the
// member set voters (true: a voter, false: a learner).
func replayConfChange(voters map[uint64]bool, e *raftpb.Entry) error {
	var changes []*raftpb.ConfChangeSingle
	switch e.GetType() {
	case raftpb.EntryConfChange:
		cc := &raftpb.ConfChange{}
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			return fmt.Errorf("raftnode: decode conf change at %d: %w", e.GetIndex(), err)
		}
		changes = []*raftpb.ConfChangeSingle{{Type: cc.Type, NodeId: cc.NodeId}}
	case raftpb.EntryConfChangeV2:
		cc := &raftpb.ConfChangeV2{}
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			return fmt.Errorf("raftnode: decode conf change at %d: %w", e.GetIndex(), err)
		}
		changes = cc.GetChanges()
	default:
		return nil
	}
	for _, c := range changes {
		id := c.GetNodeId()
		if id == 0 {
			continue // node 0 is no member: the change alters nothing
		}
		switch c.GetType() {
		case raftpb.ConfChangeAddNode:
			voters[id] = true
		case raftpb.ConfChangeAddLearnerNode:
			voters[id] = false
		case raftpb.ConfChangeRemoveNode:
			delete(voters, id)
		}
	}
	return nil
}
