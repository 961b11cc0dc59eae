package raftnode

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/storage"
)

// The Ready loop's half of the crash-point harness: member 1 follows a
// leader (the test, as member 2) whose successors overwrite its
// uncommitted tail, while an apply loop applies what is committed in
// unsynced batches, as the server does. Crash clones are taken at random
// writes and syncs. After a restart from any of them, raft must start
// without a panic, and every entry the state machine holds must be the one
// the durable log holds at its index: an entry applied ahead of the write
// that made it durable can outlive that write. It runs with the log in the
// state engine and in an engine of its own (the same filesystem, so a
// clone captures both at one instant).

// applyRecorder applies entries as keys a<index> = <term>:<data>, with the
// applied index, in one unsynced batch per hand-off. busy counts hand-offs
// received and not yet applied.
func applyRecorder(t *testing.T, n *Node, eng *storage.Engine, stop <-chan struct{}, busy *atomic.Int64) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case c := <-n.Committed():
				busy.Add(1)
				if c.Snapshot != nil {
					if err := n.InstallSnapshot(c.Snapshot); err != nil {
						t.Error(err)
						return
					}
					n.AppliedTo(c.Snapshot.GetMetadata().GetIndex())
					busy.Add(-1)
					continue
				}
				b := eng.NewWriteBatch()
				for _, e := range c.Entries {
					b.Set(appliedKey(e.GetIndex()), fmt.Appendf(nil, "%d:%s", e.GetTerm(), e.GetData()), nil)
				}
				last := c.Entries[len(c.Entries)-1].GetIndex()
				b.SetAppliedIndex(last)
				if err := b.Commit(false); err != nil {
					t.Error(err)
					return
				}
				n.AppliedTo(last)
				busy.Add(-1)
			case <-stop:
				return
			case <-n.Done():
				return
			}
		}
	}()
	return done
}

func appliedKey(index uint64) []byte { return fmt.Appendf(nil, "a%08d", index) }

func crashNodeRun(t *testing.T, seed uint64, steps int, layout crashLayout) {
	rng := rand.New(rand.NewPCG(seed, 2))
	mem := vfs.NewCrashableMem()
	cfs := &crashFS{FS: mem, mem: mem, rng: rand.New(rand.NewPCG(seed, 3)), every: 5}
	eng, logEng, err := crashEngines(cfs, layout)
	if err != nil {
		t.Fatal(err)
	}
	defer closeCrashEngines(eng, logEng)
	if err := BindLog(eng, logEng); err != nil {
		t.Fatal(err)
	}
	writeState(t, eng, 0, nil, &raftpb.ConfState{Voters: []uint64{1, 2, 3}})
	// Raft needs a log to start from that is not empty.
	ls, err := openLogStore(eng, logEng)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Save(hardState(1, 2, 1), []*raftpb.Entry{ent(1, 1, "first")}, true); err != nil {
		t.Fatal(err)
	}
	// A slow disk: before some of the Ready loop's writes, the apply loop
	// gets to finish what it was handed, and the disk happens to keep its
	// unsynced batch (as an operating system's writeback may) before the
	// Ready's write reaches it.
	var (
		busy     atomic.Int64
		hookNode atomic.Pointer[Node]
		hookRng  = rand.New(rand.NewPCG(seed, 4)) // the Ready loop's alone
	)
	testHookBeforeSave = func() {
		nd := hookNode.Load()
		if nd == nil || hookRng.IntN(2) == 0 {
			return
		}
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); runtime.Gosched() {
			if len(nd.committedc) == 0 && busy.Load() == 0 {
				break
			}
		}
		if err := nd.cfg.Engine.Sync(); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookBeforeSave = nil }()
	tr := &recTransport{}
	n, err := Start(Config{ID: 1, Engine: eng, Log: logEng, Transport: tr,
		NewTicker: clocktest.NewFake().NewTicker /* never advanced: raft never ticks */})
	if err != nil {
		t.Fatal(err)
	}
	hookNode.Store(n)
	stop := make(chan struct{})
	applied := applyRecorder(t, n, eng, stop, &busy)
	cfs.armed.Store(true)

	// The leaders' log as member 1 has it, from index 1; its committed
	// prefix never changes.
	log := []leaderEntry{{1, "first"}}
	term, commit, seen := uint64(1), uint64(1), 0
	for step := 1; step <= steps; step++ {
		cfs.started.Store(int64(step))
		if step > 1 && rng.IntN(8) == 0 {
			// The leader has compacted what member 1 would need next: it
			// sends a snapshot of its state, committed up to a point past
			// member 1's log, which the transport stores before raft
			// gets the MsgSnap.
			for range 1 + rng.IntN(5) {
				log = append(log, leaderEntry{term, fmt.Sprintf("s%d-unsent", step)})
			}
			commit = uint64(len(log))
			kv := map[string]string{}
			for i, e := range log {
				kv[string(appliedKey(uint64(i+1)))] = e.applied()
			}
			md := &raftpb.SnapshotMetadata{Index: new(commit), Term: new(term), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}}}
			m := &raftpb.Message{Type: raftpb.MsgSnap.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(term),
				Snapshot: &raftpb.Snapshot{Metadata: md}}
			if err := n.ReceiveSnapshot(m, bytes.NewReader(snapshotStream(commit, term, kv))); err != nil {
				t.Fatal(err)
			}
			n.Step(m)
			_, seen = tr.await(t, fmt.Sprintf("the answer to the snapshot of step %d", step), seen, func(r *raftpb.Message) bool {
				return r.GetType() == raftpb.MsgAppResp && r.GetIndex() == commit && r.GetTerm() == term
			})
			cfs.done.Store(int64(step))
			continue
		}
		k := 1 + rng.IntN(4)
		overwrite := false
		if step == 1 || rng.IntN(3) == 0 {
			// A new leader: it keeps the committed prefix and maybe some of
			// the rest, and overwrites from there on, often committing
			// what it overwrites with in the same message.
			term++
			oldLast := uint64(len(log))
			keep := commit + rng.Uint64N(oldLast-commit+1)
			log = log[:keep]
			if keep < oldLast && rng.IntN(2) == 0 {
				k = 1 + rng.IntN(int(oldLast-keep))
				overwrite = true
			}
		}
		prev := uint64(len(log))
		prevTerm := uint64(0)
		if prev > 0 {
			prevTerm = log[prev-1].term
		}
		ents := make([]*raftpb.Entry, k)
		for i := range ents {
			// Entries of up to a few KiB spread the batches over the
			// write-ahead log's blocks, which a crash keeps or loses each.
			data := fmt.Sprintf("s%d-%s", step, strings.Repeat("x", rng.IntN(3000)))
			ents[i] = ent(prev+1+uint64(i), term, data)
			log = append(log, leaderEntry{term, data})
		}
		last := uint64(len(log))
		// Commit lags, leaving a tail for the next leader to overwrite.
		commit = max(commit, min(last, commit+rng.Uint64N(3)))
		if overwrite {
			commit = last
		}
		n.Step(&raftpb.Message{
			Type: raftpb.MsgApp.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(term),
			LogTerm: new(prevTerm), Index: new(prev), Commit: new(commit), Entries: ents,
		})
		_, seen = tr.await(t, fmt.Sprintf("the answer to step %d", step), seen, func(m *raftpb.Message) bool {
			return m.GetType() == raftpb.MsgAppResp && m.GetIndex() == last && m.GetTerm() == term
		})
		cfs.done.Store(int64(step))
	}
	waitFor(t, "the apply loop", func() bool { return n.applied.Load() >= commit })
	close(stop)
	<-applied
	n.Stop()
	if err := n.Err(); err != nil {
		t.Fatal(err)
	}

	cfs.mu.Lock()
	points := cfs.points
	cfs.mu.Unlock()
	t.Logf("seed %d: %d steps, %d crash points", seed, steps, len(points))
	for _, p := range points {
		checkNodeCrashPoint(t, seed, p, log[:commit], layout)
	}
}

// leaderEntry is an entry of the leaders' log.
type leaderEntry struct {
	term uint64
	data string
}

// applied is how the apply loop records the entry.
func (e leaderEntry) applied() string { return fmt.Sprintf("%d:%s", e.term, e.data) }

// checkNodeCrashPoint restarts from one clone. Every applied entry must be
// the committed one (committed holds the leaders' committed log) and, where
// the log still has it, the log's.
func checkNodeCrashPoint(t *testing.T, seed uint64, p crashPoint, committed []leaderEntry, layout crashLayout) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d, crash at %q in step %d (log %s): %s", seed, p.what, p.started, layout, fmt.Sprintf(format, args...))
	}
	eng, logEng, err := crashEngines(p.fs, layout)
	if err != nil {
		fail("reopen: %v", err)
	}
	defer closeCrashEngines(eng, logEng)
	if err := BindLog(eng, logEng); err != nil {
		fail("bind the log: %v", err)
	}
	applied, err := eng.AppliedIndex()
	if err != nil {
		fail("applied index: %v", err)
	}
	if _, err := recoverSnapshotInstall(eng, logEng, nil); err != nil {
		fail("finish an interrupted install: %v", err)
	}
	applied, err = eng.AppliedIndex()
	if err != nil {
		fail("applied index: %v", err)
	}
	ls, err := openLogStore(eng, logEng)
	if err != nil {
		fail("open the log: %v", err)
	}
	first, _ := ls.FirstIndex()
	short := func(s string) string { return s[:min(len(s), 12)] + "…" }
	if applied > uint64(len(committed)) {
		fail("applied index %d is beyond the last committed entry %d", applied, len(committed))
	}
	for i := uint64(1); i <= applied; i++ {
		v, err := eng.Get(appliedKey(i))
		if err != nil {
			fail("entry %d is applied but its effect is missing: %v", i, err)
		}
		if want := committed[i-1].applied(); string(v) != want {
			fail("the state machine applied entry %d as %q, the committed entry is %q", i, short(string(v)), short(want))
		}
		if i < first {
			continue // compacted: a snapshot covers it
		}
		ents, err := ls.Entries(i, i+1, ^uint64(0))
		if err != nil {
			fail("entry %d is applied but not in the log: %v", i, err)
		}
		if want := fmt.Sprintf("%d:%s", ents[0].GetTerm(), ents[0].GetData()); string(v) != want {
			fail("the state machine applied entry %d as %q, the durable log holds %q: applied ahead of the log",
				i, short(string(v)), short(want))
		}
	}
	var panicked any
	func() {
		defer func() { panicked = recover() }()
		n, err := Start(Config{ID: 1, Engine: eng, Log: logEng, Applied: applied,
			NewTicker: clocktest.NewFake().NewTicker /* never advanced: raft never ticks */})
		if err != nil {
			fail("restart: %v", err)
		}
		n.Stop()
	}()
	if panicked != nil {
		fail("raft panicked at restart: %v", panicked)
	}
}

func TestCrashPointsReadyLoop(t *testing.T) {
	forCrashSeeds(t, 3, func(t *testing.T, seed uint64, layout crashLayout) { crashNodeRun(t, seed, 40, layout) })
}
