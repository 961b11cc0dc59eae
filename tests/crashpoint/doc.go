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
// The workload writes unique keys through random members while the
// cluster takes snapshots and compacts its log (a small SnapshotCount),
// adds and removes members, and lets a member fall behind the compacted
// log so that it catches up by a snapshot install, a crash point of which
// may fall inside the install. Some crash points fall in the restart after
// an earlier crash, inside the recovery of an interrupted install. After
// every crash and restart the test checks what a user would notice:
//
//   - the members converge: every running member applies the same index
//     and holds the same key history (HashKV), so the restarted member's
//     state equals the others', which apply the same committed log;
//   - every write a member acknowledged is present, with its value, on
//     the crashed member (and on every member every 25 rounds and at the
//     end; converged members hold the same history anyway);
//   - no member stopped by itself (a raft panic fails the test binary).
//
// The disk fault test wraps one member's disk with errors (ENOSPC and EIO
// on writes, EIO on syncs and reads): the member must stop with an error
// or raise an alarm, never carry on as if the write had succeeded; once
// the fault is gone and the member restarts, its data equals the others'.
//
// CAIRN_CRASHPOINT_RUNS sets the number of rounds (a few by default; 700
// in .ci/run, about 8 minutes on two shared cores, where about three
// rounds in four hit their crash point); CAIRN_CRASHPOINT_SEED (default
// 1) fixes the schedule (victims, crash points, the share of unsynced data
// kept), not the Go scheduler's interleavings, and is printed for replay.
package crashpoint
