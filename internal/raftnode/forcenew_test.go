package raftnode

import (
	"errors"
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// confEnt is a conf change entry.
func confEnt(t *testing.T, index, term uint64, typ raftpb.ConfChangeType, id uint64) *raftpb.Entry {
	t.Helper()
	data, err := proto.Marshal(&raftpb.ConfChange{Type: typ.Enum(), NodeId: new(id)})
	if err != nil {
		t.Fatal(err)
	}
	return &raftpb.Entry{Index: new(index), Term: new(term), Type: raftpb.EntryConfChange.Enum(), Data: data}
}

// forcedLog writes a log of entries 1..10 at term 2, committed up to
// commit, that starts with voters 1, 2, 3 and learner 5; entry 7 adds
// learner 4, entry 9 adds voter 6. Each case stores the conf state of its
// applied index.
func forcedLog(t *testing.T, commit uint64) *LogStore {
	t.Helper()
	eng := openEngine(t, t.TempDir())
	t.Cleanup(func() { eng.Close() })
	ls, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	es := ents(1, 10, 2)
	es[6] = confEnt(t, 7, 2, raftpb.ConfChangeAddLearnerNode, 4)
	es[8] = confEnt(t, 9, 2, raftpb.ConfChangeAddNode, 6)
	if err := ls.Save(hardState(2, 1, commit), es, true); err != nil {
		t.Fatal(err)
	}
	b := eng.NewWriteBatch()
	if err := StageConfState(b, &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{5}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	return ls
}

func TestForceNewCluster(t *testing.T) {
	for _, tc := range []struct {
		name            string
		commit, applied uint64
		want            []uint64
		wantCommit      uint64
	}{
		// Entry 9 is discarded with the uncommitted tail.
		{name: "uncommitted tail", commit: 8, applied: 5, want: []uint64{2, 3, 4, 5}, wantCommit: 8},
		// A hard state that lags the applied index: the commit index is
		// raised to it, so entry 7 counts.
		{name: "commit behind applied", commit: 3, applied: 7, want: []uint64{2, 3, 4, 5}, wantCommit: 7},
		// Entry 7 was never committed: learner 4 is not a member.
		{name: "conf change uncommitted", commit: 6, applied: 5, want: []uint64{2, 3, 5}, wantCommit: 6},
		{name: "whole log applied", commit: 10, applied: 10, want: []uint64{2, 3, 4, 5, 6}, wantCommit: 10},
		// Committed but not applied: the conf changes after the applied
		// index count.
		{name: "whole log committed", commit: 10, applied: 2, want: []uint64{2, 3, 4, 5, 6}, wantCommit: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := forcedLog(t, tc.commit)
			// The stored conf state is the one at the applied index.
			cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{5}}
			if tc.applied >= 7 {
				cs.Learners = append(cs.Learners, 4)
			}
			if tc.applied >= 9 {
				cs.Voters = append(cs.Voters, 6)
			}
			b := ls.eng.NewWriteBatch()
			if err := StageConfState(b, cs); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(true); err != nil {
				t.Fatal(err)
			}
			removed, err := ForceNewCluster(ls.eng, ls.logEng, 1, tc.applied)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(removed, tc.want) {
				t.Fatalf("removed %v, want %v", removed, tc.want)
			}
			after, err := OpenLogStore(ls.eng)
			if err != nil {
				t.Fatal(err)
			}
			last, _ := after.LastIndex()
			wantLast := tc.wantCommit + uint64(len(tc.want))
			if hs := after.HardState(); last != wantLast || hs.GetCommit() != wantLast || hs.GetTerm() != 2 || hs.GetVote() != 1 {
				t.Fatalf("last index %d, hard state %v; want last and commit %d at term 2, vote 1", last, hs, wantLast)
			}
			got, err := after.Entries(tc.wantCommit+1, wantLast+1, ^uint64(0))
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range got {
				cc := &raftpb.ConfChange{}
				if err := proto.Unmarshal(e.GetData(), cc); err != nil {
					t.Fatal(err)
				}
				if e.GetType() != raftpb.EntryConfChange || e.GetTerm() != 2 ||
					cc.GetType() != raftpb.ConfChangeRemoveNode || cc.GetNodeId() != tc.want[i] {
					t.Fatalf("entry %d is %v carrying %v, want the removal of %x at term 2", e.GetIndex(), e, cc, tc.want[i])
				}
			}
		})
	}
}

func TestForceNewClusterRefusals(t *testing.T) {
	ls := forcedLog(t, 8)
	if _, err := ForceNewCluster(ls.eng, ls.logEng, 5, 5); !errors.Is(err, ErrForceLearner) {
		t.Errorf("forcing learner 5: %v, want %v", err, ErrForceLearner)
	}
	if _, err := ForceNewCluster(ls.eng, ls.logEng, 9, 5); err == nil {
		t.Error("forcing member 9, which the log never had, succeeded")
	}
	// Neither refusal touched the log.
	after, err := OpenLogStore(ls.eng)
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := after.LastIndex(); last != 10 || after.HardState().GetCommit() != 8 {
		t.Fatalf("after refusals the log ends at %d, commit %d; want 10, 8", last, after.HardState().GetCommit())
	}
}
