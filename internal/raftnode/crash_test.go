package raftnode

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/raftlog"
	"github.com/cairn-db/cairn/internal/storage"
)

// The crash-point harness: a LogStore on Pebble's crashable in-memory
// filesystem runs a random sequence of what the Ready loop and the apply
// side do to it (appends, overwrites of an uncommitted tail, commit-only
// hard states, applied-index batches, compactions, snapshot receives and
// installs). A wrapper around the filesystem takes crash clones at random
// points of that work, from whichever goroutine is writing (Pebble writes
// its log on a goroutine of its own). A clone keeps what was synced and, at
// random, some of what was not. Each clone is then opened as a restart
// would (RecoverSnapshotInstall, OpenLogStore, Start), and its state must
// be one that the sequence passed through, no older than the last
// operation that promised durability and finished before the crash.
//
// The separate layout (--wal-dir) runs the same sequence with the log in an
// engine of its own, in another directory of the same crashable
// filesystem, so one clone captures both engines at the same instant. Its
// log and its state are durable separately: the log's part of the state
// must be one the sequence passed through since the last synced log write,
// the state's part one since the last state sync (a compaction's, an
// install's), and the two must restart together. Clones are also taken
// between a compaction's state sync and its log truncation.
//
// CAIRN_CRASH_SEED replays one seed; CAIRN_CRASH_RUNS runs more seeds than
// the quick sample go test runs by default.

// crashState is the durable state a LogStore and its engine are in after
// some prefix of the operations: what a restart must find.
type crashState struct {
	term, vote, commit    uint64
	truncIndex, truncTerm uint64
	// log holds entries truncIndex+1 .. truncIndex+len(log).
	log     []*raftpb.Entry
	voters  []uint64
	applied uint64
	kv      map[string]string
}

func (s *crashState) clone() *crashState {
	c := *s
	c.log = slices.Clone(s.log)
	c.voters = slices.Clone(s.voters)
	c.kv = maps.Clone(s.kv)
	return &c
}

func (s *crashState) last() uint64 { return s.truncIndex + uint64(len(s.log)) }

func (s *crashState) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "hs{term %d vote %d commit %d} trunc{%d %d} voters %v applied %d log [", s.term, s.vote, s.commit,
		s.truncIndex, s.truncTerm, s.voters, s.applied)
	for _, e := range s.log {
		fmt.Fprintf(&b, " %d/%d:%s", e.GetIndex(), e.GetTerm(), e.GetData())
	}
	keys := slices.Sorted(maps.Keys(s.kv))
	fmt.Fprintf(&b, " ] kv %v", keys)
	return b.String()
}

func (s *crashState) equal(o *crashState) bool { return s.equalLog(o) && s.equalState(o) }

// equalState compares the parts kept in the state engine.
func (s *crashState) equalState(o *crashState) bool {
	return s.applied == o.applied && slices.Equal(s.voters, o.voters) && maps.Equal(s.kv, o.kv)
}

// equalLog compares the parts kept in the log.
func (s *crashState) equalLog(o *crashState) bool {
	if s.term != o.term || s.vote != o.vote || s.commit != o.commit || s.truncIndex != o.truncIndex ||
		s.truncTerm != o.truncTerm || len(s.log) != len(o.log) {
		return false
	}
	for i := range s.log {
		a, b := s.log[i], o.log[i]
		if a.GetIndex() != b.GetIndex() || a.GetTerm() != b.GetTerm() || !bytes.Equal(a.GetData(), b.GetData()) {
			return false
		}
	}
	return true
}

// crashPoint is a clone and where the operations stood when it was taken:
// done operations had returned before it, started had begun by its end.
type crashPoint struct {
	fs            *vfs.MemFS
	done, started int
	what          string
}

// crashFS takes crash clones of a crashable MemFS just before some of the
// writes, syncs and directory changes made through it.
type crashFS struct {
	vfs.FS
	mem *vfs.MemFS

	done, started atomic.Int64 // maintained by the harness
	armed         atomic.Bool  // set once the initial state is durable
	mu            sync.Mutex
	rng           *rand.Rand // guarded by mu
	every         int        // a clone every this many events, on average
	points        []crashPoint
}

func (c *crashFS) maybeCrash(what string) {
	if !c.armed.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rng.IntN(c.every) != 0 {
		return
	}
	c.cloneLocked(what)
}

// crashNow takes a clone whatever the odds.
func (c *crashFS) crashNow(what string) {
	if !c.armed.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cloneLocked(what)
}

func (c *crashFS) cloneLocked(what string) {
	cfg := vfs.CrashCloneCfg{}
	if c.rng.IntN(2) == 0 {
		cfg.UnsyncedDataPercent = c.rng.IntN(101)
		cfg.RNG = rand.New(rand.NewPCG(c.rng.Uint64(), c.rng.Uint64()))
	}
	done := int(c.done.Load())
	clone := c.mem.CrashClone(cfg)
	started := int(c.started.Load())
	c.points = append(c.points, crashPoint{fs: clone, done: done, started: started,
		what: fmt.Sprintf("%s, %d%% of unsynced data kept", what, cfg.UnsyncedDataPercent)})
}

func (c *crashFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	c.maybeCrash("create " + name)
	f, err := c.FS.Create(name, cat)
	return c.wrap(name, f), err
}

func (c *crashFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := c.FS.OpenReadWrite(name, cat, opts...)
	return c.wrap(name, f), err
}

func (c *crashFS) ReuseForWrite(oldname, newname string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	c.maybeCrash("reuse " + oldname)
	f, err := c.FS.ReuseForWrite(oldname, newname, cat)
	return c.wrap(newname, f), err
}

func (c *crashFS) Rename(oldname, newname string) error {
	c.maybeCrash("rename " + oldname + " to " + newname)
	return c.FS.Rename(oldname, newname)
}

func (c *crashFS) Remove(name string) error {
	c.maybeCrash("remove " + name)
	return c.FS.Remove(name)
}

func (c *crashFS) MkdirAll(dir string, perm os.FileMode) error {
	c.maybeCrash("mkdir " + dir)
	return c.FS.MkdirAll(dir, perm)
}

func (c *crashFS) OpenDir(name string) (vfs.File, error) {
	f, err := c.FS.OpenDir(name)
	return c.wrap(name, f), err
}

func (c *crashFS) wrap(name string, f vfs.File) vfs.File {
	if f == nil {
		return nil
	}
	return &crashFile{File: f, fs: c, name: name}
}

type crashFile struct {
	vfs.File
	fs   *crashFS
	name string
}

func (f *crashFile) Write(p []byte) (int, error) {
	f.fs.maybeCrash("write " + f.name)
	return f.File.Write(p)
}

func (f *crashFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.maybeCrash("write " + f.name)
	return f.File.WriteAt(p, off)
}

func (f *crashFile) Sync() error {
	f.fs.maybeCrash("sync " + f.name)
	return f.File.Sync()
}

func (f *crashFile) SyncData() error {
	f.fs.maybeCrash("sync " + f.name)
	return f.File.SyncData()
}

func (f *crashFile) SyncTo(length int64) (bool, error) {
	f.fs.maybeCrash("sync " + f.name)
	return f.File.SyncTo(length)
}

const (
	crashDir    = "/member"
	crashWalDir = "/wal"
)

// crashEngines opens the engines of a crash run or a restart on fs: one,
// or a state and a log engine for the separate layout.
func crashEngines(fs vfs.FS, layout crashLayout) (eng *storage.Engine, log Log, err error) {
	eng, err = storage.Open(crashDir, storage.Options{FS: fs, CacheBytes: 1 << 20})
	if err != nil || layout == layoutShared {
		return eng, eng, err
	}
	if layout == layoutFiles {
		// Small segments, so that a run rolls over and removes many.
		log, err = raftlog.Open(fs, crashWalDir, raftlog.Options{SegmentBytes: 16 << 10})
	} else {
		log, err = storage.Open(crashWalDir, storage.Options{FS: fs, CacheBytes: 1 << 20})
	}
	if err != nil {
		eng.Close()
		return nil, nil, err
	}
	return eng, log, nil
}

// crashLayout is where a crash harness keeps the log: in the state's
// engine, in an engine of its own, or in segment files (see the package
// doc's Where the log is).
type crashLayout string

const (
	layoutShared   crashLayout = "shared"
	layoutSeparate crashLayout = "separate"
	layoutFiles    crashLayout = "files"
)

// separate reports whether the log and the state are durable separately.
func (l crashLayout) separate() bool { return l != layoutShared }

func closeCrashEngines(eng *storage.Engine, logEng Log) error {
	var err error
	if logEng != Log(eng) {
		err = logEng.Close()
	}
	if cerr := eng.Close(); err == nil {
		err = cerr
	}
	return err
}

// snapshotStream encodes a snapshot stream at index and term holding kv
// and the applied index, as a leader's OpenSnapshot would.
func snapshotStream(index, term uint64, kv map[string]string) []byte {
	b := streamHeader(index, term)
	var applied [8]byte
	binary.BigEndian.PutUint64(applied[:], index)
	recs := map[string]string{string(appliedIndexKey): string(applied[:])}
	maps.Copy(recs, kv)
	for _, k := range slices.Sorted(maps.Keys(recs)) {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(recs[k])))
		b = append(b, recs[k]...)
	}
	b = binary.AppendUvarint(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(len(recs)))
}

// crashRun runs one seeded sequence of ops and checks every crash point.
func crashRun(t *testing.T, seed uint64, ops int, layout crashLayout) {
	separate := layout.separate()
	rng := rand.New(rand.NewPCG(seed, 0))
	mem := vfs.NewCrashableMem()
	cfs := &crashFS{FS: mem, mem: mem, rng: rand.New(rand.NewPCG(seed, 1)), every: 6}
	eng, logEng, err := crashEngines(cfs, layout)
	if err != nil {
		t.Fatal(err)
	}
	if err := BindLog(eng, logEng); err != nil {
		t.Fatal(err)
	}
	ls, err := openLogStore(eng, logEng)
	if err != nil {
		t.Fatal(err)
	}
	if separate {
		ls.testHookCompact = func() {
			if rng.IntN(2) == 0 {
				cfs.crashNow("between the state sync and the log truncation")
			}
		}
	}

	// The member starts as etcd's bootstrap leaves it: voter 1 alone.
	cur := &crashState{voters: []uint64{1}, kv: map[string]string{}}
	b := eng.NewWriteBatch()
	if err := StageConfState(b, &raftpb.ConfState{Voters: cur.voters}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	ls.SetConfState(&raftpb.ConfState{Voters: cur.voters})
	cfs.armed.Store(true)

	// states[j] is the durable state after j operations; synced[j] says
	// whether operation j (1-based) promised durability when it returned,
	// of the log (synced[j].log) and of the state (synced[j].state), which
	// are one promise when they share an engine.
	states := []*crashState{cur.clone()}
	synced := []durability{{log: true, state: true}}
	// latest is the hard state raft last handed over; pending is set while
	// the stored one lags it (a commit-only change, kept in memory).
	latest := [3]uint64{}
	pending := false
	nextKV := 0
	for j := 1; j <= ops; j++ {
		cfs.started.Store(int64(j))
		sync := durability{}
		switch op := rng.IntN(10); {
		case op < 4: // a Ready: entries (maybe replacing an uncommitted tail) and a hard state
			start := cur.last() + 1
			if over := cur.last() - max(latest[2], cur.truncIndex); over > 0 && rng.IntN(3) == 0 {
				start -= 1 + rng.Uint64N(over)
			}
			changed := false
			if rng.IntN(4) == 0 || latest[0] == 0 {
				latest[0]++
				latest[1] = 1
				changed = true
			}
			n := 1 + rng.Uint64N(4)
			var ents []*raftpb.Entry
			for i := start; i < start+n; i++ {
				ents = append(ents, ent(i, latest[0], fmt.Sprintf("j%d", j)))
			}
			if c := min(start+n-1, latest[2]+rng.Uint64N(n+1)); c > latest[2] {
				latest[2] = c
				changed = true
			}
			// Raft hands over an empty hard state when it did not change;
			// the store then writes a pending commit-only one, if any.
			var hs *raftpb.HardState
			if changed || rng.IntN(2) == 0 {
				hs = hardState(latest[0], latest[1], latest[2])
			}
			if err := ls.Save(hs, ents, true); err != nil {
				t.Fatal(err)
			}
			cur.log = append(cur.log[:start-1-cur.truncIndex], ents...)
			if hs != nil || pending {
				cur.term, cur.vote, cur.commit = latest[0], latest[1], latest[2]
			}
			pending = false
			sync = durability{log: true, state: !separate}
		case op < 5: // a commit-only hard state: not written
			if c := min(cur.last(), latest[2]+1+rng.Uint64N(3)); c > latest[2] && latest[0] > 0 {
				latest[2] = c
				if err := ls.Save(hardState(latest[0], latest[1], latest[2]), nil, false); err != nil {
					t.Fatal(err)
				}
				pending = true
			}
		case op < 7: // the apply side applies what is committed, unsynced
			if to := latest[2]; to > cur.applied {
				b := eng.NewWriteBatch()
				k := fmt.Sprintf("k%04d", nextKV)
				nextKV++
				b.Set([]byte(k), []byte(strconv.FormatUint(to, 10)), nil)
				b.SetAppliedIndex(to)
				if err := b.Commit(false); err != nil {
					t.Fatal(err)
				}
				cur.kv[k] = strconv.FormatUint(to, 10)
				cur.applied = to
			}
		case op < 9: // compaction up to the applied index, unsynced
			if cur.applied > cur.truncIndex {
				to := cur.truncIndex + 1 + rng.Uint64N(cur.applied-cur.truncIndex)
				term := cur.log[to-1-cur.truncIndex].GetTerm()
				if err := ls.Compact(to); err != nil {
					t.Fatal(err)
				}
				cur.log = cur.log[to-cur.truncIndex:]
				cur.truncIndex, cur.truncTerm = to, term
				// Separate: the state was synced before the truncation.
				sync.state = separate
			}
		default: // a snapshot from a leader further ahead: received, installed
			if latest[0] == 0 {
				break
			}
			index := max(cur.last(), cur.commit) + 1 + rng.Uint64N(5)
			term := latest[0]
			kv := map[string]string{}
			for range 1 + rng.IntN(3) {
				kv[fmt.Sprintf("k%04d", nextKV)] = "snap"
				nextKV++
			}
			voters := []uint64{1, 2, 3}[:1+rng.IntN(3)]
			md := &raftpb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: &raftpb.ConfState{Voters: voters}}
			snap := &raftpb.Snapshot{Metadata: md}
			if err := ls.ReceiveSnapshot(&raftpb.Message{Snapshot: snap}, bytes.NewReader(snapshotStream(index, term, kv))); err != nil {
				t.Fatal(err)
			}
			if err := ls.InstallSnapshot(snap); err != nil {
				t.Fatal(err)
			}
			cur.log = nil
			cur.truncIndex, cur.truncTerm = index, term
			cur.voters = voters
			cur.kv = kv
			cur.applied = index
			latest[2] = max(latest[2], index)
			sync = durability{log: true, state: true}
		}
		states = append(states, cur.clone())
		synced = append(synced, sync)
		cfs.done.Store(int64(j))
	}
	if err := closeCrashEngines(eng, logEng); err != nil {
		t.Fatal(err)
	}
	cfs.mu.Lock()
	points := cfs.points
	cfs.mu.Unlock()
	if len(points) == 0 {
		t.Fatalf("seed %d: no crash point was taken", seed)
	}
	t.Logf("seed %d: %d operations, %d crash points", seed, ops, len(points))
	for _, p := range points {
		checkCrashPoint(t, seed, p, states, synced, layout)
	}
}

// durability is what an operation promised durable when it returned.
type durability struct{ log, state bool }

// checkCrashPoint restarts from one clone and checks that it holds a state
// the sequence passed through, at or after the last durable operation that
// had returned; with a separate log, the log's and the state's parts each
// so, on their own.
func checkCrashPoint(t *testing.T, seed uint64, p crashPoint, states []*crashState, synced []durability, layout crashLayout) {
	separate := layout.separate()
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d, crash at %q after %d operations (%d started, log %s): %s", seed, p.what, p.done, p.started, layout, fmt.Sprintf(format, args...))
	}
	loLog, loState := p.done, p.done
	for !synced[loLog].log {
		loLog--
	}
	for !synced[loState].state {
		loState--
	}
	eng, logEng, err := crashEngines(p.fs, layout)
	if err != nil {
		fail("reopen: %v", err)
	}
	defer closeCrashEngines(eng, logEng)
	if err := BindLog(eng, logEng); err != nil {
		fail("bind the log: %v", err)
	}
	if _, err := recoverSnapshotInstall(eng, logEng, nil); err != nil {
		fail("finish an interrupted install: %v", err)
	}
	got, err := readCrashState(eng, logEng)
	if err != nil {
		fail("read the state: %v", err)
	}
	// A shared engine has one durable prefix: log and state from the same
	// operation.
	logOK, stateOK := false, false
	for m := min(loLog, loState); m <= p.started && m < len(states); m++ {
		l := m >= loLog && got.equalLog(states[m])
		st := m >= loState && got.equalState(states[m])
		if !separate && l && st || separate && l {
			logOK = true
		}
		if !separate && l && st || separate && st {
			stateOK = true
		}
	}
	if logOK && stateOK {
		// A restart must get raft running on it without a panic, and
		// accept the pair.
		n, err := Start(Config{ID: 1, Engine: eng, Log: logEng, Join: true, Applied: got.applied,
			NewTicker: clocktest.NewFake().NewTicker /* never advanced: raft never ticks */})
		if err != nil {
			fail("restart: %v", err)
		}
		n.Stop()
		return
	}
	var want bytes.Buffer
	for m := min(loLog, loState); m <= p.started && m < len(states); m++ {
		fmt.Fprintf(&want, "\n  after %d: %v", m, states[m])
	}
	fail("the restart found\n  %v\nwhich is none of the states it may be in (log matched %v, state matched %v; log durable from %d, state from %d):%s",
		got, logOK, stateOK, loLog, loState, want.String())
}

// readCrashState reads what a restart finds through the LogStore and the
// state engine.
func readCrashState(eng *storage.Engine, logEng Log) (*crashState, error) {
	ls, err := openLogStore(eng, logEng)
	if err != nil {
		return nil, err
	}
	hs, cs, _ := ls.InitialState()
	first, _ := ls.FirstIndex()
	last, _ := ls.LastIndex()
	s := &crashState{term: hs.GetTerm(), vote: hs.GetVote(), commit: hs.GetCommit(), voters: cs.GetVoters(), kv: map[string]string{}}
	s.truncIndex = first - 1
	if s.truncTerm, err = ls.Term(s.truncIndex); err != nil {
		return nil, err
	}
	if last >= first {
		if s.log, err = ls.Entries(first, last+1, ^uint64(0)); err != nil {
			return nil, err
		}
	}
	if s.applied, err = eng.AppliedIndex(); err != nil {
		return nil, err
	}
	it, err := eng.DB().NewIter(nil)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if k := it.Key(); k[0] == 'k' {
			s.kv[string(k)] = string(it.Value())
		}
	}
	return s, it.Error()
}

func TestCrashPoints(t *testing.T) {
	forCrashSeeds(t, 4, func(t *testing.T, seed uint64, layout crashLayout) { crashRun(t, seed, 100, layout) })
}

// forCrashSeeds runs run once per seed (runs of them, one with -short;
// CAIRN_CRASH_RUNS sets how many, CAIRN_CRASH_SEED replays one) for each
// log layout: the log in the state's engine ("shared"), in an engine of
// its own ("separate") and in segment files ("files"). Each seed is logged
// for replay.
func forCrashSeeds(t *testing.T, runs int, run func(t *testing.T, seed uint64, layout crashLayout)) {
	if testing.Short() {
		runs = 1
	}
	if v, err := strconv.Atoi(os.Getenv("CAIRN_CRASH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	seeds := make([]uint64, runs)
	base := uint64(time.Now().UnixNano())
	for i := range seeds {
		seeds[i] = base + uint64(i)
	}
	if v, err := strconv.ParseUint(os.Getenv("CAIRN_CRASH_SEED"), 10, 64); err == nil {
		seeds = []uint64{v}
	}
	for _, layout := range []crashLayout{layoutShared, layoutSeparate, layoutFiles} {
		t.Run(string(layout), func(t *testing.T) {
			for _, seed := range seeds {
				t.Logf("seed %d (replay with CAIRN_CRASH_SEED=%d)", seed, seed)
				run(t, seed, layout)
			}
		})
	}
}
