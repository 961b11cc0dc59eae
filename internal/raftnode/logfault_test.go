package raftnode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/storage"
)

// faultDisk is an in-memory disk whose operations a test can fail.
type faultDisk struct {
	mem   *vfs.MemFS
	fault atomic.Pointer[func(errorfs.Op) error]
	hits  atomic.Int64
}

func (d *faultDisk) fs() vfs.FS {
	return errorfs.Wrap(d.mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if f := d.fault.Load(); f != nil {
			if err := (*f)(op); err != nil {
				d.hits.Add(1)
				return err
			}
		}
		return nil
	}))
}

func (d *faultDisk) set(f func(errorfs.Op) error) {
	if f == nil {
		d.fault.Store(nil)
		return
	}
	d.fault.Store(&f)
}

// logFaultApplier applies committed entries as the server does, as far as
// the log is concerned: conf changes, and the applied index in the state
// engine's batch; it stops at the first error, as the server's apply loop
// does.
type logFaultApplier struct {
	n    *Node
	eng  *storage.Engine
	mu   sync.Mutex
	last uint64
	err  error
	done chan struct{}
}

func (a *logFaultApplier) run(stop <-chan struct{}) {
	defer close(a.done)
	for {
		select {
		case c := <-a.n.Committed():
			b := a.eng.NewBatch()
			for _, e := range c.Entries {
				if e.GetType() != raftpb.EntryConfChange {
					continue
				}
				var cc raftpb.ConfChange
				err := proto.Unmarshal(e.GetData(), &cc)
				var cs *raftpb.ConfState
				if err == nil {
					cs, err = a.n.ApplyConfChange(&cc)
				}
				if err == nil {
					err = StageConfState(b, cs)
				}
				if err != nil {
					b.Discard()
					a.setErr(err)
					return
				}
			}
			last := c.Entries[len(c.Entries)-1].GetIndex()
			b.SetAppliedIndex(last)
			if err := b.Commit(false); err != nil {
				a.setErr(err)
				return
			}
			a.mu.Lock()
			a.last = last
			a.mu.Unlock()
			a.n.AppliedTo(last)
		case <-stop:
			return
		case <-a.n.Done():
			return
		}
	}
}

func (a *logFaultApplier) setErr(err error) {
	a.mu.Lock()
	a.err = err
	a.mu.Unlock()
}

func (a *logFaultApplier) applied() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// TestLogWriteFailureStopsNode fails the raft log's write-ahead log (a
// write or a sync, EIO or ENOSPC) under a single voter taking proposals,
// in both layouts: the Ready loop must stop with an ErrLogStorage error
// that names the directory, the cause and the remedy, never panic, never
// apply an entry it did not persist; restarted on the disk as a power cut
// leaves it (synced data only), every applied entry is in the log.
func TestLogWriteFailureStopsNode(t *testing.T) {
	for _, layout := range []crashLayout{layoutShared, layoutSeparate, layoutFiles} {
		separate := layout.separate()
		for _, tc := range []struct {
			name  string
			kinds []errorfs.OpKind
			errno syscall.Errno
		}{
			{"EIO writing", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}, syscall.EIO},
			{"ENOSPC writing", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}, syscall.ENOSPC},
			{"EIO syncing", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}, syscall.EIO},
		} {
			name := tc.name + " (log " + string(layout) + ")"
			t.Run(name, func(t *testing.T) {
				d := &faultDisk{mem: vfs.NewCrashableMem()}
				eng, logEng, err := crashEngines(d.fs(), layout)
				if err != nil {
					t.Fatal(err)
				}
				if separate {
					if err := BindLog(eng, logEng); err != nil {
						t.Fatal(err)
					}
				}
				n, err := Start(Config{ID: 1, Engine: eng, Log: logEng, Peers: []raft.Peer{{ID: 1}},
					NewTicker: clocktest.NewFake().NewTicker})
				if err != nil {
					t.Fatal(err)
				}
				a := &logFaultApplier{n: n, eng: eng, done: make(chan struct{})}
				stop := make(chan struct{})
				go a.run(stop)
				waitFor(t, "leadership", n.IsLeader)
				for i := range 50 {
					n.Propose(Proposal{ID: uint64(i), Data: fmt.Appendf(nil, "p%d", i)})
				}
				waitFor(t, "50 applied proposals", func() bool { return a.applied() >= 51 })

				logDir := logEng.Dir()
				d.set(func(op errorfs.Op) error {
					if !slices.Contains(tc.kinds, op.Kind) || !strings.HasPrefix(op.Path, logDir+"/") || !strings.HasSuffix(op.Path, ".log") {
						return nil
					}
					return &os.PathError{Op: "fault", Path: op.Path, Err: tc.errno}
				})
				// Proposals until the loop stops: a failed unsynced write
				// shows at the next sync at the latest.
				for i := 50; ; i++ {
					n.Propose(Proposal{ID: uint64(i), Data: fmt.Appendf(nil, "p%d", i)})
					if waitDone(n) {
						break
					}
				}
				err = n.Err()
				if !errors.Is(err, ErrLogStorage) || !errors.Is(err, tc.errno) {
					t.Fatalf("the loop stopped with %v, want ErrLogStorage caused by %v", err, tc.errno)
				}
				for _, want := range []string{logDir, "restart"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("the error does not say %q: %v", want, err)
					}
				}
				t.Logf("stopped with: %v", err)
				close(stop)
				<-a.done
				applied := a.applied()
				n.Stop()
				// Closing a broken engine may report the failure; it must
				// return.
				closeCrashEngines(eng, logEng)

				// A power cut after the failure: only synced data stays.
				d.mem = d.mem.CrashClone(vfs.CrashCloneCfg{})
				d.set(nil)
				eng, logEng, err = crashEngines(d.fs(), layout)
				if err != nil {
					t.Fatal(err)
				}
				defer closeCrashEngines(eng, logEng)
				ls, err := OpenSeparateLogStore(eng, logEng)
				if err != nil {
					t.Fatal(err)
				}
				if last, _ := ls.LastIndex(); last < applied {
					t.Fatalf("the log ends at %d after the restart, below the applied index %d before the failure", last, applied)
				}
				t.Logf("applied %d before the failure; the log holds %d after a power cut", applied, func() uint64 { l, _ := ls.LastIndex(); return l }())
			})
		}
	}
}

// waitDone reports whether n's loop stopped within a short while.
func waitDone(n *Node) bool {
	select {
	case <-n.Done():
		return true
	default:
	}
	ch := make(chan struct{})
	go func() { defer close(ch); n.RaftStatus(nil) }()
	<-ch
	select {
	case <-n.Done():
		return true
	default:
		return false
	}
}

// TestLogReadFailureStopsNode restarts a single voter whose committed
// entries are not applied yet, on a disk where reading those entries
// fails (EIO on the first half of the log's table, where the oldest
// entries are; the hard state and the last entry, which Start reads, are
// in the second half). Raft panics on any read error of its storage: the
// Ready loop must stop with an ErrLogStorage error that names the
// directory and the cause instead, and the process go on.
func TestLogReadFailureStopsNode(t *testing.T) {
	for _, separate := range []bool{false, true} {
		t.Run(fmt.Sprintf("separate=%v", separate), func(t *testing.T) {
			d := &faultDisk{mem: vfs.NewMem()}
			eng, logEng, err := crashEngines(d.fs(), map[bool]crashLayout{false: layoutShared, true: layoutSeparate}[separate])
			if err != nil {
				t.Fatal(err)
			}
			if separate {
				if err := BindLog(eng, logEng); err != nil {
					t.Fatal(err)
				}
			}
			// 200 committed entries of 4 KiB each (incompressible, a
			// block each), none applied, and a single voter.
			ls, err := OpenSeparateLogStore(eng, logEng)
			if err != nil {
				t.Fatal(err)
			}
			const n = 200
			rng := rand.New(rand.NewPCG(1, 2))
			var es []*raftpb.Entry
			for i := uint64(1); i <= n; i++ {
				data := make([]byte, 4<<10)
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				es = append(es, &raftpb.Entry{Index: new(i), Term: new(uint64(1)), Data: data})
			}
			if err := ls.Save(hardState(1, 1, n), es, true); err != nil {
				t.Fatal(err)
			}
			if err := logEng.(*storage.Engine).DB().Flush(); err != nil {
				t.Fatal(err)
			}
			// After the flush: in the table of its own that the next open
			// writes, not among the entries.
			b := eng.NewBatch()
			if err := StageConfState(b, &raftpb.ConfState{Voters: []uint64{1}}); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(true); err != nil {
				t.Fatal(err)
			}
			logDir := logEng.Dir()
			if err := closeCrashEngines(eng, logEng); err != nil {
				t.Fatal(err)
			}

			eng, logEng, err = crashEngines(d.fs(), map[bool]crashLayout{false: layoutShared, true: layoutSeparate}[separate])
			if err != nil {
				t.Fatal(err)
			}
			defer closeCrashEngines(eng, logEng)
			var table string
			var size int64
			names, err := d.mem.List(logDir + "/db")
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range names {
				if strings.HasSuffix(name, ".sst") {
					fi, err := d.mem.Stat(logDir + "/db/" + name)
					if err != nil {
						t.Fatal(err)
					}
					if fi.Size() > size {
						table, size = logDir+"/db/"+name, fi.Size()
					}
				}
			}
			if size < n<<12 {
				t.Fatalf("the log's largest table %q is %d bytes, want the entries' %d", table, size, n<<12)
			}
			d.set(func(op errorfs.Op) error {
				if op.Path == table && (op.Kind == errorfs.OpFileReadAt || op.Kind == errorfs.OpFileRead) && op.Offset < size/2 {
					return &os.PathError{Op: "read", Path: op.Path, Err: syscall.EIO}
				}
				return nil
			})
			node, err := Start(Config{ID: 1, Engine: eng, Log: logEng, Applied: 0,
				NewTicker: clocktest.NewFake().NewTicker})
			if err != nil {
				t.Fatalf("Start, which reads only the end of the log: %v", err)
			}
			// Nobody applies: the loop stops on its first Ready, whose
			// committed entries it cannot read.
			<-node.Done()
			err = node.Err()
			if !errors.Is(err, ErrLogStorage) || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), logDir) {
				t.Fatalf("the loop stopped with %v, want ErrLogStorage naming %s caused by EIO", err, logDir)
			}
			if d.hits.Load() == 0 {
				t.Fatal("no read failed")
			}
			t.Logf("stopped with: %v", err)
		})
	}
}

// TestLogDamageStopsNode checks that a committed entry whose stored bytes
// do not decode stops the member with ErrLogStorage, naming the log's
// directory and the entry, instead of raft's panic on the read.
func TestLogDamageStopsNode(t *testing.T) {
	eng, err := storage.Open("/data", storage.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ls, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Save(hardState(1, 1, 10), ents(1, 10, 1), true); err != nil {
		t.Fatal(err)
	}
	b := eng.NewWriteBatch()
	if err := StageConfState(b, &raftpb.ConfState{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	var k [entryKeyLen]byte
	if err := b.Set(entryKey(k[:], 4), []byte{7, 1, 'x'}, nil); err != nil { // entry type 7 does not exist
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	node, err := Start(Config{ID: 1, Engine: eng, Applied: 0, NewTicker: clocktest.NewFake().NewTicker})
	if err != nil {
		t.Fatalf("Start, which reads only the end of the log: %v", err)
	}
	<-node.Done()
	err = node.Err()
	if !errors.Is(err, ErrLogStorage) || !strings.Contains(err.Error(), "/data") || !strings.Contains(err.Error(), "entry 4") {
		t.Fatalf("the loop stopped with %v, want ErrLogStorage naming /data and entry 4", err)
	}
	t.Logf("stopped with: %v", err)
}
