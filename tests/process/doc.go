// Package process runs a cluster of real cairn processes on 127.0.0.1
// and puts it through what operators do and what machines suffer, under a
// client load, checking what a user would notice.
//
// The tests start three cairn members as real processes (the test binary
// runs itself as the cairn command, see tests/kit/proc, so the result
// depends on the server code it was built from, and under -race the members
// are race-built too) with etcd's clustering flags
// (--initial-cluster, --listen-peer-urls, --initial-advertise-peer-urls,
// --initial-cluster-state, --initial-cluster-token, 100 ms heartbeat, 1 s
// election timeout) on free ports, each with its own data directory. The
// raft log is compacted every 300 entries keeping 50, so a member that was
// down, or joins late, catches up from a snapshot streamed by the leader
// (the test logs how many each member installed). A load
// of concurrent clients (clientv3 given every member's endpoint, so any
// member serves any request) puts, reads, deletes and compare-and-swaps
// (or creates) the test kit's few model keys with unique values and writes
// write-once ledger keys, recording every operation with its call and
// return times and what it saw: values, create and mod revisions, versions
// and the header revision.
//
// TestKillRestart SIGKILLs the leader, then each follower in turn, letting
// the two survivors serve writes while the third is down and restarting it
// on its data directory (it rejoins from its own log and its peers); at the
// end it kills all three at once and restarts them.
// TestMembershipChanges adds a fourth member as a learner (MemberAdd, then a
// process started with --initial-cluster-state existing), waits for it to
// catch up, promotes it, removes an original member, and moves the
// leadership (MoveLeader) to a chosen member, all under load.
//
// TestLockMutualExclusion checks etcd's Lock service and clientv3's
// concurrency.Mutex, which every member serves and backs, under the same
// kills: contenders take one lock over and over (half through each) while
// the leader and then each follower is SIGKILLed and restarted, and each
// holder writes an acquire record, a counter increment and a release record
// in transactions guarded by its lock key's create revision (the fencing
// token); now and then a holder stalls until its lease has expired, and its
// late write must be refused. The records must show, in the store's
// revision order, tokens that never go down (no two holders at once, grants
// in token order); the holds whose records were all acknowledged must be
// disjoint in time with growing tokens; and no counter increment may be
// lost. Locks need leases: a member that grants none fails the test at
// once, saying so.
//
// At the end of each test:
//
//   - every acknowledged ledger write is readable with its value;
//   - every member reports the same HashKV at the same revision;
//   - the whole history is linearizable against the test kit's model of
//     etcd's key-value semantics (tests/kit's Model, with porcupine): every
//     write takes the next revision, ledger puts included, and every answer
//     reports the revisions and versions etcd would. A write whose outcome
//     the client never learned is first settled from the store's history
//     (a watch from revision 2): applied at the revision it holds there, or
//     never; an unknown delete may take effect at any point after its call.
//
// Running it:
//
//	go test ./tests/process/                          # one pass over the schedule (~25 s)
//	go test -short ./tests/process/                   # the leader kill only, fewer clients (~20 s)
//	CAIRN_PROCESS_LONG=1 go test ./tests/process/     # 8 passes, 12 clients (.ci/run, ~3 min)
//	CAIRN_PROCESS_SEED=7 go test -v ./tests/process/  # replay a load
//	go test -short -run TestLockMutualExclusion ./tests/process/  # one kill, 4 contenders
//	CAIRN_PROCESS_LONG=1 go test -run TestLockMutualExclusion ./tests/process/  # 9 kills, 10 contenders (.ci/run)
//
// The seed (logged, and printed again on failure) decides the load; the
// moment of each kill still depends on timing, so a failure is reproduced by
// running its seed again, not replayed step for step. When the history is
// not linearizable, porcupine's visualization is written to a temporary
// HTML file whose path the failure names. Each process's output is kept in
// the test's temporary directory and its tail printed when a check fails.
package process
