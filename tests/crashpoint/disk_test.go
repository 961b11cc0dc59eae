package crashpoint

import (
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// disk is one member's disk: a crashable MemFS seen through errorfs, whose
// injector counts the member's write-side operations, crashes the member
// at an armed one, and fails the operations a fault selects.
type disk struct {
	name string

	mu sync.Mutex
	// mem is the current incarnation's file system; fs wraps it.
	mem *vfs.MemFS
	fs  *errorfs.FS
	// countdown is how many write-side operations remain before the crash
	// point; 0 when disarmed.
	countdown int
	// kill silences the member on the network; called inside the
	// operation at the crash point, before the clone is taken.
	kill func()
	// cfg is the clone's share of unsynced data.
	cfg vfs.CrashCloneCfg
	// crashed receives the clone taken at the crash point (a new channel
	// for each arm).
	crashed chan crash
	// fault, if set, decides an operation's injected error.
	fault func(errorfs.Op) error
	// faults counts the errors injected.
	faults int
}

// crash is a crash clone and the operation it was taken in.
type crash struct {
	fs *vfs.MemFS
	op string
}

func newDisk(name string) *disk {
	d := &disk{name: name}
	d.use(vfs.NewCrashableMem())
	return d
}

// use makes mem the disk's file system, disarmed and without fault.
func (d *disk) use(mem *vfs.MemFS) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mem = mem
	d.fs = errorfs.Wrap(mem, errorfs.InjectorFunc(d.inject))
	d.countdown, d.kill, d.fault = 0, nil, nil
	d.crashed = make(chan crash, 1)
}

// FS returns the file system the member's next start should use.
func (d *disk) FS() vfs.FS {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fs
}

// arm sets a crash point n write-side operations from now; kill is called
// at it. Half of the clones keep only synced data (a power cut), half keep
// everything written (the process killed, the machine up).
//
// Why not a random share of the unsynced data, which CrashClone offers:
// it keeps or drops each unsynced directory entry independently, which no
// journaled file system does (their metadata operations reach the disk in
// order), and Pebble's manifest marker does not survive it: Pebble creates
// MANIFEST-n, then the marker naming it, removes the old marker and only
// then syncs the directory, so a clone may keep the new marker and drop
// the manifest, and the member cannot open its engine ("could not open
// manifest file"). That is Pebble's contract with the file system, not
// cairn's, so the test does not hold cairn to it.
func (d *disk) arm(n int, rng *rand.Rand, kill func()) <-chan crash {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.countdown, d.kill = n, kill
	// A channel of its own: one crash point, one clone, never another
	// arm's.
	d.crashed = make(chan crash, 1)
	d.cfg = vfs.CrashCloneCfg{}
	if rng.IntN(2) == 0 {
		d.cfg.UnsyncedDataPercent = 100
		d.cfg.RNG = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	}
	return d.crashed
}

// disarm cancels the crash point; it returns the crash if the point fell
// after all, since the caller last looked. A crash under way when disarm
// is called is finished first and returned.
func (d *disk) disarm() (crash, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.countdown = 0
	select {
	case cr := <-d.crashed:
		return cr, true
	default:
		return crash{}, false
	}
}

// setFault makes f decide every later operation's error (nil: none).
func (d *disk) setFault(f func(errorfs.Op) error) {
	d.mu.Lock()
	d.fault = f
	d.mu.Unlock()
}

// injected returns how many errors the fault injected.
func (d *disk) injected() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.faults
}

// processExit returns the disk as the member left it, unsynced data
// included: what a restart finds after the process (not the machine)
// stopped.
func (d *disk) processExit() *vfs.MemFS {
	d.mu.Lock()
	mem := d.mem
	d.mu.Unlock()
	return mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 2))})
}

func (d *disk) inject(op errorfs.Op) error {
	d.mu.Lock()
	if f := d.fault; f != nil {
		if err := f(op); err != nil {
			d.faults++
			d.mu.Unlock()
			return err
		}
	}
	if op.Kind.ReadOrWrite() != errorfs.OpIsWrite || d.countdown == 0 {
		d.mu.Unlock()
		return nil
	}
	d.countdown--
	if d.countdown > 0 {
		d.mu.Unlock()
		return nil
	}
	// The whole crash happens under d.mu, so disarm (and a later arm)
	// either finds it finished or runs before it started. Released
	// between the countdown and the clone, a disarm could see neither
	// countdown nor clone, and the round give up on its crash point, while
	// the member was killed anyway and its clone waited in the channel:
	// the next round took that stale clone for its own and put the member
	// back on a disk older than what it had acknowledged since (raft's
	// "tocommit(X) is out of range [lastIndex(Y)]" after the restart).
	// Kill and CrashClone do no operation on this disk, and nothing
	// holds the network's locks while it operates on one.
	//
	// Silence first, clone second: whatever the member sends after the
	// kill is lost, and everything it sent before rests on data synced
	// before the clone.
	defer d.mu.Unlock()
	d.kill()
	d.crashed <- crash{fs: d.mem.CrashClone(d.cfg), op: fmt.Sprintf("%s %s, %d%% of unsynced data kept", opName(op.Kind), op.Path, d.cfg.UnsyncedDataPercent)}
	return nil
}

func opName(k errorfs.OpKind) string {
	names := map[errorfs.OpKind]string{
		errorfs.OpCreate: "create", errorfs.OpLink: "link", errorfs.OpRemove: "remove", errorfs.OpRemoveAll: "remove-all",
		errorfs.OpRename: "rename", errorfs.OpReuseForWrite: "reuse", errorfs.OpMkdirAll: "mkdir", errorfs.OpLock: "lock",
		errorfs.OpFileClose: "close", errorfs.OpFileWrite: "write", errorfs.OpFileWriteAt: "write-at",
		errorfs.OpFileSync: "sync", errorfs.OpFileSyncData: "sync-data", errorfs.OpFileSyncTo: "sync-to",
		errorfs.OpFileFlush: "flush", errorfs.OpFilePreallocate: "preallocate",
	}
	if n, ok := names[k]; ok {
		return n
	}
	return fmt.Sprintf("op %d", k)
}
