// Package crashpoint crashes whole cairn members at random points of their
// disk I/O and injects disk errors into them, in one process.
//
// Each member of an internal/clustertest cluster runs on a disk of its own:
// Pebble's crashable in-memory file system (vfs.NewCrashableMem) behind
// errorfs, whose injector sees every operation the member makes. A crash
// point is the n-th write-side operation (create, write, sync, rename,
// remove, …) of a member: inside that operation the member is cut off the
// simulated network (clustertest's Network.Kill, so nothing it sends after
// the crash is delivered) and a crash clone of its disk is taken, keeping
// all synced data and either none or all of the unsynced (a power cut, or
// the process killed). Both happen under the disk's lock, so a round that
// gives up on its crash point just as it falls still gets that clone; the
// next round never does. The member is then stopped and restarted on the
// clone, as a machine restarts after a power cut.
//
// The workload writes a bounded key space (a thousand keys, over and over)
// through random members while the cluster takes snapshots and compacts
// its log (a small SnapshotCount) and its key history (every ten rounds),
// adds and removes members, and lets a member fall behind the compacted
// log so that it catches up by a snapshot install, a crash point of which
// may fall inside the install. Some crash points fall in the restart after
// an earlier crash, inside the recovery of an interrupted install. After
// every crash and restart the test checks what a user would notice:
//
//   - the members converge: every running member applies the same index
//     and holds the same key history (HashKV), so the restarted member's
//     state equals the others', which apply the same committed log;
//   - every write a member acknowledged is present on every running
//     member: each key holds the last acknowledged write to it (same
//     value, same revision) or a later write of the same key, and nothing
//     the workload never wrote (one range read per member);
//   - no member stopped by itself (a raft panic fails the test binary)
//     or raised an alarm.
//
// The bounded key space keeps a round's cost flat: the range read, the
// hashes and the snapshots a member installs cover the keys and the
// history since the last compaction, not every write since the start.
// The members run with a 128 MiB quota, so 2 MiB memtables and write-ahead
// logs (a crashable MemFS copies a whole file at each sync).
//
// The disk fault test wraps one member's disk with errors (ENOSPC and EIO
// on writes, EIO on syncs and reads): the member must stop with an error
// or raise an alarm, never carry on as if the write had succeeded; once
// the fault is gone and the member restarts, its data equals the others'.
//
// CAIRN_CRASHPOINT_RUNS sets the number of rounds (a few by default; 3000
// in .ci/run, where about four rounds in five hit their crash point, so
// over 2,000 crash points); CAIRN_CRASHPOINT_SEED (default 1) fixes the
// schedule (victims, crash points, the share of unsynced data kept), not
// the Go scheduler's interleavings, and is printed for replay. The test
// ends by printing the crash points hit and their rate per minute.
package crashpoint
