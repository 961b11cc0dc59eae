package raftnode

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/storage"
)

// recTransport records what the node sends and lets a test wait for it.
type recTransport struct {
	mu   sync.Mutex
	sent []*raftpb.Message
}

func (r *recTransport) Send(msgs []*raftpb.Message) {
	r.mu.Lock()
	r.sent = append(r.sent, msgs...)
	r.mu.Unlock()
}

// await waits for a message sent after the first skip ones that match
// returns true for, and returns it with the count to skip next time.
func (r *recTransport) await(t *testing.T, what string, skip int, match func(*raftpb.Message) bool) (*raftpb.Message, int) {
	t.Helper()
	var found *raftpb.Message
	n := skip
	waitFor(t, what, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for ; n < len(r.sent); n++ {
			if match(r.sent[n]) {
				found = r.sent[n]
				n++
				return true
			}
		}
		return false
	})
	return found, n
}

// durableTerm reads the term of entry index straight from the engine, the
// durable log, or 0 if there is no such entry.
func durableTerm(t *testing.T, eng *storage.Engine, index uint64) uint64 {
	t.Helper()
	var kb [entryKeyLen]byte
	v, err := eng.Get(entryKey(kb[:], index))
	if err != nil {
		return 0
	}
	_, term, _, err := decodeEntryValue(v)
	if err != nil {
		t.Error(err)
	}
	return term
}

// startFollower starts member 1 of {1, 2, 3} on eng with a log of entries
// 1-3 at term 1 and 4-6 at term 2, committed and applied up to 3.
func startFollower(t *testing.T, eng *storage.Engine, tr Transport) *Node {
	t.Helper()
	ls, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Save(hardState(2, 2, 3), append(ents(1, 3, 1), ents(4, 6, 2)...), true); err != nil {
		t.Fatal(err)
	}
	writeState(t, eng, 3, nil, &raftpb.ConfState{Voters: []uint64{1, 2, 3}})
	n, err := Start(Config{
		ID:        1,
		Engine:    eng,
		Applied:   3,
		Transport: tr,
		NewTicker: clocktest.NewFake().NewTicker, /* never advanced: raft never ticks */
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFollowerAppliesOnlyDurableEntries: a new leader overwrites the
// follower's uncommitted tail and commits the new entries in the same
// message. The committed entries exist only in the Ready's own write, so
// none of them may reach the apply side before that write: a crash in
// between would leave the log holding the old entries below a commit
// index that the state machine already applied the new ones at.
func TestFollowerAppliesOnlyDurableEntries(t *testing.T) {
	eng := openEngine(t, t.TempDir())
	defer eng.Close()

	// Whatever was handed to the apply side when the Ready's write is about
	// to start must already be in the durable log, with the same term.
	var (
		mu     sync.Mutex
		early  []*raftpb.Entry
		ahead  []string
		hooked *Node
	)
	testHookBeforeSave = func() {
		mu.Lock()
		defer mu.Unlock()
		for {
			select {
			case c := <-hooked.committedc:
				for _, e := range c.Entries {
					if got := durableTerm(t, eng, e.GetIndex()); got != e.GetTerm() {
						ahead = append(ahead, e.String())
					}
					early = append(early, e)
				}
				continue
			default:
			}
			return
		}
	}
	defer func() { testHookBeforeSave = nil }()
	tr := &recTransport{}
	mu.Lock()
	n := startFollower(t, eng, tr)
	hooked = n
	mu.Unlock()
	defer n.Stop()

	n.Step(&raftpb.Message{
		Type: raftpb.MsgApp.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(3)),
		LogTerm: new(uint64(1)), Index: new(uint64(3)), Commit: new(uint64(5)),
		Entries: []*raftpb.Entry{ent(4, 3, "new4"), ent(5, 3, "new5")},
	})
	tr.await(t, "the follower's append response", 0, func(m *raftpb.Message) bool {
		return m.GetType() == raftpb.MsgAppResp && m.GetIndex() == 5 && !m.GetReject()
	})
	mu.Lock()
	got := append([]*raftpb.Entry(nil), early...)
	mu.Unlock()
	for len(got) < 2 {
		select {
		case c := <-n.Committed():
			got = append(got, c.Entries...)
		case <-time.After(10 * time.Second):
			t.Fatalf("committed entries 4 and 5 were not handed to the apply side; got %v", got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ahead) > 0 {
		t.Fatalf("entries handed to the apply side before the log held them: %v", ahead)
	}
	for i, e := range got {
		if e.GetIndex() != uint64(4+i) || e.GetTerm() != 3 {
			t.Fatalf("committed entry %d = %v, want index %d term 3", i, e, 4+i)
		}
	}
	if a, b := durableTerm(t, eng, 5), durableTerm(t, eng, 6); a != 3 || b != 0 {
		t.Fatalf("durable log: entry 5 at term %d, entry 6 at term %d; want 3 and none", a, b)
	}
}

// TestFollowerDropsSnapshotItNeverReceived: a MsgSnap is only good with
// the data the transport stored beside it (ReceiveSnapshot). One that
// arrives without it, from a broken or hostile peer, must not reach raft:
// raft would take the snapshot, and the member would fail to install it
// and stop. The same message once the data is there goes through.
func TestFollowerDropsSnapshotItNeverReceived(t *testing.T) {
	eng := openEngine(t, t.TempDir())
	defer eng.Close()
	tr := &recTransport{}
	n := startFollower(t, eng, tr)
	defer n.Stop()
	snaps := make(chan *raftpb.Snapshot, 1)
	go func() {
		for {
			select {
			case c := <-n.Committed():
				if c.Snapshot != nil {
					snaps <- c.Snapshot
					return
				}
			case <-n.Done():
				return
			}
		}
	}()
	msgSnap := &raftpb.Message{
		Type: raftpb.MsgSnap.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(3)),
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index: new(uint64(20)), Term: new(uint64(3)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}},
		}},
	}
	n.Step(msgSnap)
	n.Step(&raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(3)), Commit: new(uint64(3))})
	var handed *raftpb.Snapshot
	waitFor(t, "the heartbeat's answer (or the snapshot)", func() bool {
		select {
		case handed = <-snaps:
			return true
		default:
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for _, m := range tr.sent {
			if m.GetType() == raftpb.MsgHeartbeatResp {
				return true
			}
		}
		return false
	})
	if handed != nil {
		t.Fatalf("a snapshot that was never received went to the apply side: %v", handed.GetMetadata())
	}
	select {
	case s := <-snaps:
		t.Fatalf("a snapshot that was never received went to the apply side: %v", s.GetMetadata())
	default:
	}
	if st := n.Status(); st.Commit != 3 || st.LastIndex != 6 {
		t.Fatalf("after the dropped snapshot: commit %d, last index %d; want 3 and 6", st.Commit, st.LastIndex)
	}

	// The data arrives (the transport stored it): now raft gets it.
	dir := filepath.Join(eng.Dir(), snapDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, snapFileName(20, 3)), []byte("stand-in"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Step(msgSnap)
	select {
	case s := <-snaps:
		if s.GetMetadata().GetIndex() != 20 {
			t.Fatalf("snapshot at %d, want 20", s.GetMetadata().GetIndex())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a received snapshot never reached the apply side")
	}
}
