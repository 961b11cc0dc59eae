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
func ForceNewCluster(state, log *storage.Engine, self, applied uint64) ([]uint64, error) {
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

	// The entries and the hard state live in the log's engine.
	b := log.NewWriteBatch()
	var lo, hi [entryKeyLen]byte
	if last > commit {
		if err := b.DeleteRange(entryKey(lo[:], commit+1), entryKey(hi[:], last+1), nil); err != nil {
			b.Discard()
			return nil, fmt.Errorf("raftnode: stage discarding uncommitted entries: %w", err)
		}
	}
	index := commit
	for _, id := range remove {
		data, err := proto.Marshal(&raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: new(id)})
		if err != nil {
			b.Discard()
			return nil, fmt.Errorf("raftnode: encode conf change: %w", err)
		}
		index++
		e := &raftpb.Entry{Index: new(index), Term: new(hs.GetTerm()), Type: raftpb.EntryConfChange.Enum(), Data: data}
		v := make([]byte, entryValueLen(e))
		encodeEntryValue(v, e)
		if err := b.Set(entryKey(lo[:], index), v, nil); err != nil {
			b.Discard()
			return nil, fmt.Errorf("raftnode: stage conf change: %w", err)
		}
	}
	var v [24]byte
	encodeHardState(v[:], &raftpb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(index)})
	if err := b.Set(keyHardState, v[:], nil); err != nil {
		b.Discard()
		return nil, fmt.Errorf("raftnode: stage hard state: %w", err)
	}
	if err := b.Commit(true); err != nil {
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
