package crashpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/cairn-db/cairn/internal/clustertest"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/storage"
)

// newLogRig is newRig with the layout chosen: with walDir set, every
// member keeps its raft log's segment files in --wal-dir beside its data
// directory on its disk; without, in the data directory's wal.
func newLogRig(t testing.TB, seed uint64, walDir bool) *rig {
	r := &rig{t: t, disks: map[string]*disk{}, acked: newBook()}
	r.c = clustertest.New(t, 3, clustertest.Options{
		Seed:                   seed,
		SnapshotCount:          snapshotCount,
		SnapshotCatchUpEntries: catchUpEntries,
		Configure: func(cfg *server.Config) {
			cfg.FS = r.disk(cfg.Name).FS()
			cfg.UnsafeNoFsync = false
			if walDir {
				cfg.WalDir = cfg.DataDir + ".wal"
			}
		},
	})
	return r
}

// logDir returns the directory holding m's raft log.
func logDir(m *clustertest.Member, walDir bool) string {
	if walDir {
		return m.Dir + ".wal"
	}
	return m.Dir + "/wal"
}

// isSegment reports whether path is a segment file of the raft log in dir.
func isSegment(path, dir string) bool {
	return strings.HasPrefix(path, dir+"/") && strings.HasSuffix(path, ".log")
}

// layouts are the two places a member may keep its raft log.
var layouts = []struct {
	name   string
	walDir bool
}{{"log in the data directory", false}, {"log in --wal-dir", true}}

// checkLogFailure fails the test unless err is a stop for a failure of the
// raft log's storage, caused by errno, that names the log's directory and
// tells the operator to restart.
func checkLogFailure(t *testing.T, err error, dir string, errno syscall.Errno) {
	t.Helper()
	if !errors.Is(err, raftnode.ErrLogStorage) && !errors.Is(err, storage.ErrWAL) {
		t.Fatalf("the member stopped with %v, want a failure of the raft log's storage (raftnode.ErrLogStorage or storage.ErrWAL)", err)
	}
	if !errors.Is(err, errno) {
		t.Errorf("the error does not carry its cause %v: %v", errno, err)
	}
	for _, want := range []string{dir, "restart"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
}

// TestRaftLogFaults fails writes (EIO, ENOSPC) and syncs (EIO) of one
// member's raft log — its segment files, in the data directory's wal or
// in --wal-dir — while the cluster takes writes
// through every member. The member must stop with an error naming the
// directory, the cause and the remedy (not panic, not carry on), the other
// two must keep serving, and once restarted on what a power cut leaves of
// its disk (synced data only) on a repaired device, it must converge and
// hold every acknowledged write, those it acknowledged itself included.
// The victim is the leader in half the cases and a follower in the other.
func TestRaftLogFaults(t *testing.T) {
	writes := []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}
	syncs := []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}
	cases := []struct {
		name  string
		kinds []errorfs.OpKind
		errno syscall.Errno
	}{
		{"EIO writing the log", writes, syscall.EIO},
		{"ENOSPC writing the log", writes, syscall.ENOSPC},
		{"EIO syncing the log", syncs, syscall.EIO},
	}
	i := 0
	for _, l := range layouts {
		for _, tc := range cases {
			leader := i%2 == 0
			i++
			role := "a follower"
			if leader {
				role = "the leader"
			}
			t.Run(fmt.Sprintf("%s, %s, on %s", tc.name, l.name, role), func(t *testing.T) {
				seed := envInt(t, "CAIRN_CRASHPOINT_SEED", 1)
				rng := rand.New(rand.NewPCG(seed, 0x6c6f67))
				r := newLogRig(t, seed, l.walDir)
				r.writeUntil(rng, nil, nil, 50)
				r.check("before the fault")
				victim := r.c.WaitLeader()
				if !leader {
					for _, m := range r.c.Members() {
						if m != victim {
							victim = m
							break
						}
					}
				}
				dir := logDir(victim, l.walDir)
				d := r.disk(victim.Name)
				d.setFault(func(op errorfs.Op) error {
					if !slices.Contains(tc.kinds, op.Kind) || !isSegment(op.Path, dir) {
						return nil
					}
					return &os.PathError{Op: opName(op.Kind), Path: op.Path, Err: tc.errno}
				})
				// Writes through every member, the victim included, until
				// it stops: the next write it persists meets the fault.
				for range 100 {
					if victim.Err() != nil {
						break
					}
					r.writeUntil(rng, nil, nil, 10)
				}
				err := victim.Err()
				if err == nil {
					t.Fatalf("%s kept running after %d injected faults", victim, d.injected())
				}
				checkLogFailure(t, err, dir, tc.errno)
				t.Logf("%s stopped: %v", victim, err)

				// The other two keep serving: a leader among them, and
				// writes through them go on being acknowledged.
				if lead := r.c.WaitLeader(); lead == victim {
					t.Fatalf("%s is still the leader after it stopped", victim)
				}
				before := r.acked.count()
				if n := r.writeUntil(rng, victim, nil, 30); n == 0 {
					t.Fatalf("no write through the two other members was acknowledged")
				}
				t.Logf("%d writes acknowledged before the fault and while %s was down, %d of them after it stopped",
					r.acked.count(), victim.Name, r.acked.count()-before)

				// The device is repaired; the member restarts on what a
				// power cut leaves: the synced data alone.
				victim.Stop()
				d.use(d.powerCut())
				r.restart(victim)
				r.writeUntil(rng, nil, nil, 20)
				r.check(fmt.Sprintf("seed %d: after %s on %s", seed, tc.name, victim.Name))
			})
		}
	}
}

// TestRaftLogReadFault restarts a member whose raft log cannot be read
// (EIO on every read of its segment files, in the data directory's wal or
// in --wal-dir): the start must fail, or the member stop,
// with an error naming the directory, the cause and the remedy, never hang
// or panic; the other two keep serving, and on a repaired device the
// member starts and converges. (A read that fails under a running Ready
// loop, which raft panics on, is internal/raftnode's
// TestLogReadFailureStopsNode.)
func TestRaftLogReadFault(t *testing.T) {
	reads := []errorfs.OpKind{errorfs.OpFileRead, errorfs.OpFileReadAt}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			seed := envInt(t, "CAIRN_CRASHPOINT_SEED", 1)
			rng := rand.New(rand.NewPCG(seed, 0x72656164))
			r := newLogRig(t, seed, l.walDir)
			r.writeUntil(rng, nil, nil, 50)
			r.check("before the fault")
			victim := r.c.Members()[rng.IntN(3)]
			dir := logDir(victim, l.walDir)
			d := r.disk(victim.Name)
			victim.Stop()
			d.use(d.processExit())
			d.setFault(func(op errorfs.Op) error {
				if !slices.Contains(reads, op.Kind) || !isSegment(op.Path, dir) {
					return nil
				}
				return &os.PathError{Op: "read", Path: op.Path, Err: syscall.EIO}
			})
			fs := d.FS()
			victim.Configure(func(cfg *server.Config) { cfg.FS = fs })
			err := victim.Start()
			if err == nil {
				r.c.WaitFor(victim.Name+" to stop", func() bool { return victim.Err() != nil })
				err = victim.Err()
			}
			if d.injected() == 0 {
				t.Fatalf("%s started without reading its log", victim)
			}
			if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "restart") {
				t.Fatalf("%s: %v, want an error naming %s, caused by EIO, with the remedy", victim, err, dir)
			}
			t.Logf("%s: %v", victim, err)

			if n := r.writeUntil(rng, victim, nil, 30); n == 0 {
				t.Fatalf("no write through the two other members was acknowledged")
			}
			victim.Stop()
			d.use(d.processExit())
			r.restart(victim)
			r.writeUntil(rng, nil, nil, 20)
			r.check(fmt.Sprintf("seed %d: after a failed read of %s's log", seed, victim.Name))
		})
	}
}

// powerCut returns the disk as a power cut leaves it: only what was synced.
func (d *disk) powerCut() *vfs.MemFS {
	d.mu.Lock()
	mem := d.mem
	d.mu.Unlock()
	return mem.CrashClone(vfs.CrashCloneCfg{})
}
