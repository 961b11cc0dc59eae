package raftnode

import (
	"context"
	"io"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/storage"
)

// startLeaderNeedingSnapshot makes member 1 of {1, 2} the leader of a log
// compacted up to 10, with the test playing member 2: it grants the votes
// and rejects the first append as too far ahead, so the leader has to
// offer it a snapshot. It returns the MsgSnap.
func startLeaderNeedingSnapshot(t *testing.T, eng *storage.Engine, tr *recTransport) (*Node, *raftpb.Message) {
	t.Helper()
	ls, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Save(hardState(1, 1, 10), ents(1, 10, 1), true); err != nil {
		t.Fatal(err)
	}
	writeState(t, eng, 10, map[string]string{"ka": "1"}, &raftpb.ConfState{Voters: []uint64{1, 2}})
	if err := ls.Compact(10); err != nil {
		t.Fatal(err)
	}
	clk := clocktest.NewFake()
	n, err := Start(Config{
		ID:        1,
		Engine:    eng,
		Applied:   10,
		Transport: tr,
		NewTicker: clk.NewTicker,
	})
	if err != nil {
		t.Fatal(err)
	}
	from2 := func(typ raftpb.MessageType, term uint64) *raftpb.Message {
		return &raftpb.Message{Type: typ.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(term)}
	}
	tk, err := clk.NextTicker(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Tick until the election timeout has passed and member 1 asks for votes.
	seen := 0
	for i := 0; ; i++ {
		tr.mu.Lock()
		asked := len(tr.sent) > 0
		tr.mu.Unlock()
		if asked {
			break
		}
		if i == 100 {
			t.Fatal("no pre-vote request after 100 ticks")
		}
		if err := tk.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	m, seen := tr.await(t, "a pre-vote request", seen, func(m *raftpb.Message) bool { return m.GetType() == raftpb.MsgPreVote })
	n.Step(from2(raftpb.MsgPreVoteResp, m.GetTerm()))
	m, seen = tr.await(t, "a vote request", seen, func(m *raftpb.Message) bool { return m.GetType() == raftpb.MsgVote })
	n.Step(from2(raftpb.MsgVoteResp, m.GetTerm()))
	waitFor(t, "leadership", n.IsLeader)
	m, seen = tr.await(t, "an append to member 2", seen, func(m *raftpb.Message) bool { return m.GetType() == raftpb.MsgApp })
	rej := from2(raftpb.MsgAppResp, m.GetTerm())
	rej.Index, rej.Reject, rej.RejectHint, rej.LogTerm = new(m.GetIndex()), new(true), new(uint64(0)), new(uint64(0))
	n.Step(rej)
	m, _ = tr.await(t, "a snapshot for member 2", seen, func(m *raftpb.Message) bool { return m.GetType() == raftpb.MsgSnap })
	return n, m
}

func openSnapshots(eng *storage.Engine) int { return eng.DB().Metrics().Snapshots.Count }

// TestLeaderReleasesSnapshotAfterSend: the Pebble snapshot a leader takes
// for a follower pins everything deleted after it (no compaction may drop
// it), so the leader lets it go once the transfer is over, successful or
// not, not when the next snapshot happens to be taken.
func TestLeaderReleasesSnapshotAfterSend(t *testing.T) {
	for _, tc := range []struct {
		name   string
		open   bool // the transport opened and streamed the data
		status raft.SnapshotStatus
	}{
		{"sent", true, raft.SnapshotFinish},
		{"failed while streaming", true, raft.SnapshotFailure},
		{"failed before streaming", false, raft.SnapshotFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := openEngine(t, t.TempDir())
			defer eng.Close()
			tr := &recTransport{}
			n, msg := startLeaderNeedingSnapshot(t, eng, tr)
			defer n.Stop()
			index := msg.GetSnapshot().GetMetadata().GetIndex()
			if index != 10 || openSnapshots(eng) != 1 {
				t.Fatalf("snapshot at %d with %d Pebble snapshots open, want 10 and 1", index, openSnapshots(eng))
			}
			if tc.open {
				rc, _, err := n.OpenSnapshot(index)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					t.Fatal(err)
				}
				rc.Close()
			}
			n.ReportSnapshot(2, tc.status)
			waitFor(t, "the leader to close its Pebble snapshot", func() bool { return openSnapshots(eng) == 0 })
			if !n.IsLeader() {
				t.Fatal("member 1 lost its leadership; the snapshot was released for that reason")
			}
		})
	}
}
