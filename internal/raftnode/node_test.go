package raftnode

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/tests/kit"
)

// applier is a minimal apply loop: it records normal entries, applies conf
// changes, and persists the applied index like the server does.
type applier struct {
	t    *testing.T
	n    *Node
	eng  *storage.Engine
	mu   sync.Mutex
	data []string
	last uint64
	stop chan struct{}
	done chan struct{}
}

func startApplier(t *testing.T, n *Node, eng *storage.Engine) *applier {
	a := &applier{t: t, n: n, eng: eng, stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *applier) run() {
	defer close(a.done)
	for {
		select {
		case c := <-a.n.Committed():
			if c.Snapshot != nil {
				a.t.Error("single voter asked to install a snapshot")
				return
			}
			ents := c.Entries
			b := a.eng.NewBatch()
			for _, e := range ents {
				switch e.GetType() {
				case raftpb.EntryConfChange:
					var cc raftpb.ConfChange
					if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
						a.t.Error(err)
						return
					}
					cs, err := a.n.ApplyConfChange(&cc)
					if err != nil {
						return
					}
					if err := StageConfState(b, cs); err != nil {
						a.t.Error(err)
					}
				case raftpb.EntryNormal:
					if len(e.GetData()) > 0 {
						a.mu.Lock()
						a.data = append(a.data, string(e.GetData()))
						a.mu.Unlock()
					}
				}
			}
			last := ents[len(ents)-1].GetIndex()
			b.SetAppliedIndex(last)
			if err := b.Commit(false); err != nil {
				a.t.Error(err)
				return
			}
			a.mu.Lock()
			a.last = last
			a.mu.Unlock()
			a.n.AppliedTo(last)
		case <-a.stop:
			return
		case <-a.n.Done():
			return
		}
	}
}

func (a *applier) close() { close(a.stop); <-a.done }

func (a *applier) applied() ([]string, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.data...), a.last
}

// waitFor is the test kit's WaitFor (tests/kit): it polls cond until it
// holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	kit.WaitFor(t, what, cond)
}

func startNode(t *testing.T, eng *storage.Engine, onRead func([]raft.ReadState)) (*Node, *applier) {
	t.Helper()
	applied, err := eng.AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	n, err := Start(Config{
		ID:           1,
		Engine:       eng,
		Peers:        []raft.Peer{{ID: 1}},
		Applied:      applied,
		NewTicker:    clocktest.NewFake().NewTicker, // never advanced: raft never ticks
		OnReadStates: onRead,
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, startApplier(t, n, eng)
}

func TestNodeSingleVoterProposeRestart(t *testing.T) {
	dir := t.TempDir()
	eng := openEngine(t, dir)
	n, a := startNode(t, eng, nil)
	// No tick ever arrives: a sole voter elects itself at once.
	waitFor(t, "leadership", n.IsLeader)
	if st := n.Status(); st.Lead != 1 || st.Term < 1 || st.LeaderChanges != 1 {
		t.Fatalf("status after election = %+v", st)
	}
	for i := range 100 {
		n.Propose(Proposal{ID: uint64(i), Data: fmt.Appendf(nil, "p%d", i)})
	}
	waitFor(t, "100 applied proposals", func() bool { d, _ := a.applied(); return len(d) == 100 })
	data, last := a.applied()
	for i, d := range data {
		if d != fmt.Sprintf("p%d", i) {
			t.Fatalf("applied[%d] = %q: proposals reordered", i, d)
		}
	}
	if n.CommitIndex() < last {
		t.Fatalf("commit index %d below applied %d", n.CommitIndex(), last)
	}
	n.Stop()
	a.close()
	n.Stop() // idempotent
	if err := n.Err(); err != nil {
		t.Fatalf("Err after Stop = %v", err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: nothing is delivered twice, and new proposals continue the log.
	eng = openEngine(t, dir)
	defer eng.Close()
	n, a = startNode(t, eng, nil)
	defer func() { n.Stop(); a.close() }()
	waitFor(t, "leadership after restart", n.IsLeader)
	if n.Term() < 2 {
		t.Fatalf("term after restart = %d, want a new term", n.Term())
	}
	n.Propose(Proposal{ID: 1000, Data: []byte("after")})
	waitFor(t, "the new proposal", func() bool { d, _ := a.applied(); return len(d) == 1 })
	if d, l := a.applied(); d[0] != "after" || l <= last {
		t.Fatalf("after restart applied %q up to %d (before: %d)", d, l, last)
	}
}

func TestNodeReadIndex(t *testing.T) {
	eng := openEngine(t, t.TempDir())
	defer eng.Close()
	got := make(chan raft.ReadState, 10)
	n, a := startNode(t, eng, func(rs []raft.ReadState) {
		for _, r := range rs {
			got <- r
		}
	})
	defer func() { n.Stop(); a.close() }()
	waitFor(t, "leadership", n.IsLeader)
	n.Propose(Proposal{ID: 1, Data: []byte("x")})
	waitFor(t, "the proposal", func() bool { d, _ := a.applied(); return len(d) == 1 })
	_, applied := a.applied()
	n.ReadIndex([]byte("ctx-1"))
	select {
	case rs := <-got:
		if string(rs.RequestCtx) != "ctx-1" || rs.Index < applied {
			t.Fatalf("read state = {%d %q}, want ctx-1 at >= %d", rs.Index, rs.RequestCtx, applied)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no read state")
	}
}

func TestNodeCompactKeepsRunning(t *testing.T) {
	eng := openEngine(t, t.TempDir())
	defer eng.Close()
	n, a := startNode(t, eng, nil)
	defer func() { n.Stop(); a.close() }()
	waitFor(t, "leadership", n.IsLeader)
	for i := range 20 {
		n.Propose(Proposal{ID: uint64(i), Data: []byte("v")})
	}
	waitFor(t, "20 applied", func() bool { d, _ := a.applied(); return len(d) == 20 })
	_, applied := a.applied()
	if err := n.Compact(applied - 5); err != nil {
		t.Fatal(err)
	}
	if st := n.Status(); st.FirstIndex != applied-4 {
		t.Fatalf("FirstIndex after compaction = %d, want %d", st.FirstIndex, applied-4)
	}
	n.Propose(Proposal{ID: 99, Data: []byte("w")})
	waitFor(t, "a proposal after compaction", func() bool { d, _ := a.applied(); return len(d) == 21 })
}
