// Package raftnode runs a member's raft state machine (go.etcd.io/raft/v3)
// on the member's Pebble engine: the log and hard state live under the
// storage.PrefixRaft keyspace, one goroutine drives raft, and committed
// entries flow out, in order, to whoever applies them.
//
// # The Ready loop
//
// Start creates a raft.RawNode and one goroutine, the Ready loop, that alone
// touches it. Other goroutines hand it work through a mutex-guarded inbox
// (Propose, ReadIndex, Step) and a wake-up channel, so a burst of proposals
// arriving while the loop waits on the disk becomes one run of log entries:
//
//	loop:
//	    drain the inbox: peer messages → Step, read requests → ReadIndex,
//	        proposals → one MsgProp carrying all of them (only once a
//	        leader is known; until then they wait in the inbox)
//	    while raft has a Ready:
//	        leader: send messages
//	        committed entries already on disk → Committed()
//	        entries + hard state → ONE Pebble batch (synced if raft says so)
//	        other committed entries → Committed(); follower: send messages
//	        read states → Config.OnReadStates
//	        a conf change among the committed entries: wait for AppliedTo
//	        Advance
//	    wait for a tick, a wake-up, a conf change to apply, or Stop
//
// A single voter campaigns as soon as its configuration is applied instead
// of waiting out an election timeout. Pre-vote and check-quorum are on.
//
// The apply side receives []*raftpb.Entry batches from Committed, applies
// them, calls ApplyConfChange for each conf change entry (the loop answers
// those requests even while blocked handing off entries), and reports
// progress with AppliedTo.
//
// # Persistence order and crashes
//
// Raft entries and the hard state are written in one batch per Ready, synced
// whenever it holds entries or a new term or vote (a commit-index-only
// change needs no fsync: the commit index is recomputed by the next leader).
// A follower sends its acknowledgements only after that write, so what it
// acknowledged survives a crash. Pebble's write-ahead log is sequential, so
// a batch that survives a crash implies every batch committed before it
// survived too.
//
// The state machine commits its own batches without sync, carrying the
// applied index (storage.Batch.SetAppliedIndex) and, when it changes, the
// ConfState (StageConfState). Entries reach the apply side only after they
// are in the log, so after a crash the engine's applied index never exceeds
// the last log index; anything applied but lost is replayed from the log.
// The apply batch may land before the hard state that raised the commit
// index to cover it; Start therefore raises the commit index to the applied
// index, which is safe because only committed entries are ever applied.
//
// Compact folds the log up to an applied index into a truncation point with
// an unsynced batch: if a crash loses it, the log is merely longer.
//
// # On-disk format
//
//	key                      value
//	'r' 'e' <index:8 BE>     entry: type (1 byte) | term (uvarint) | data
//	'r' 'h'                  hard state: term | vote | commit (3 × 8 bytes BE)
//	'r' 'c'                  ConfState as of the applied index (protobuf)
//	'r' 't'                  truncation point: index | term (2 × 8 bytes BE)
//
// The first stored entry is the one after the truncation point; raft's
// FirstIndex is truncation index + 1.
//
// # Caching
//
// LogStore keeps the tail of the log (up to 16,384 entries or 64 MiB) in
// memory as it is written, so the steady state — committed entries handed
// to the apply side a Ready after they were appended, entries sent to
// followers — never reads Pebble. Older entries are read from Pebble.
//
// # Not yet
//
// Snapshots: Snapshot returns raft.ErrSnapshotTemporarilyUnavailable, so a
// follower that needs compacted entries waits, and a Ready carrying a
// snapshot stops the member. Both need the peer transport's checkpoint
// streaming, which does not exist yet.
package raftnode
