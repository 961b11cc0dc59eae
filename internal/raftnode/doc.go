// Package raftnode runs a member's raft state machine (go.etcd.io/raft/v3)
// on the member's Pebble engine and raft log: the log and hard state live
// in segment files of their own (package raftlog) or, in a data directory
// written before them, under the storage.PrefixRaft keyspace of the state
// engine or of an engine of their own (see Where the log is); one
// goroutine drives raft, and committed entries flow out, in order, to
// whoever applies them.
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
//	        committed entries on disk and below this Ready's entries → Committed()
//	        entries + hard state → ONE Pebble batch (synced if raft says so)
//	        other committed entries → Committed(); follower: send messages
//	        read states → Config.OnReadStates
//	        a conf change among the committed entries: wait for AppliedTo
//	        Advance
//	    wait for a tick, a wake-up, a conf change to apply, or Stop
//
// A single voter campaigns as soon as its configuration is applied instead
// of waiting out an election timeout. Pre-vote and check-quorum are on: a
// member cut off from the others cannot disrupt them when it comes back,
// and a leader that loses its quorum steps down within an election timeout
// (so a minority never answers reads). Proposals wait in the inbox while
// no leader is known and are then forwarded to it by raft; a follower does
// not forward a proposal to nowhere. A member started with Config.Join has
// an empty log and no configuration: it campaigns never, and waits for the
// leader to send it the log or a snapshot.
//
// The apply side receives Committed batches of entries (or a snapshot to
// install, see Snapshots), applies them, calls ApplyConfChange for each
// conf change entry (the loop answers those requests even while blocked
// handing off entries), and reports progress with AppliedTo. Other
// goroutines reach the RawNode only through the inbox (Propose,
// ProposeConfChange, ReadIndex, Step, the Report* calls,
// TransferLeadership) or a call the loop runs for them (RaftStatus).
//
// # Persistence order and crashes
//
// Raft entries and the hard state are written in one group per Ready, synced
// whenever it holds entries or a new term or vote. A commit-index-only
// change needs no fsync, and is not even written on its own: the commit
// index is recomputed by the next leader, so it waits in memory and goes
// out with the next batch of entries (see LogStore.Save).
// A follower sends its acknowledgements only after that write, so what it
// acknowledged survives a crash. The log's segment files, like Pebble's
// write-ahead log, are replayed in order up to the first torn record, so a
// write that survives a crash implies every write before it survived too.
//
// The state machine commits its own batches without sync, carrying the
// applied index (storage.Batch.SetAppliedIndex) and, when it changes, the
// ConfState (StageConfState). Entries reach the apply side only after they
// are in the log, so after a crash the engine's applied index never exceeds
// the last log index; anything applied but lost is replayed from the log.
// "In the log" means at that index with that term: a Ready whose entries
// replace a stored tail (a new leader overwriting a follower's uncommitted
// entries) may commit entries at indexes the store already holds with an
// older term, and those wait for the Ready's write like any new entry.
// Committed entries go out early, overlapping the write, only below the
// Ready's first entry.
// The apply batch may land before the hard state that raised the commit
// index to cover it; Start therefore raises the commit index to the applied
// index, which is safe because only committed entries are ever applied.
//
// Compact folds the log up to an applied index into a truncation point with
// an unsynced batch: if a crash loses it, the log is merely longer.
//
// A failed write, sync or read of the log (EIO, ENOSPC) stops the Ready
// loop with ErrLogStorage, naming the directory, the cause and the remedy
// (Err), before anything that depended on it: a Save that fails returns
// before the follower's acknowledgements are sent, before the leader
// counts its own vote (Advance) and before its entries are handed to the
// apply side. The storage engine turns Pebble's fatal commit error into an
// error (storage.ErrWAL) instead of a panic, and every later commit of that
// engine fails at once. A failed read reaches raft as a storage error,
// which it panics on; LogStore records the failure first, and the loop
// recovers the panic into that error (recoverLogFailure). A read that
// finds the log damaged (an entry that does not decode, an unknown entry
// type, a gap) is recorded and stops the loop the same way, with a remedy
// of its own: the member is replaced or restored, since restarting it
// reads the same bytes. FuzzLogRecord stores arbitrary bytes in every log
// record and checks that nothing else comes of it. Any other panic is a
// broken invariant and is not recovered.
//
// # Where the log is
//
// A new member keeps its log (entries, hard state, truncation point) in
// segment files of its own (package raftlog, which documents their format
// and recovery), in --wal-dir or, without it, in <data dir>/wal; the state
// engine keeps everything else (the replicated state, the applied index,
// the ConfState, the install record). Save's synced write goes to the
// log's files alone: one write and one fdatasync of blocks allocated in
// advance, on the Ready loop itself. The state engine's write-ahead log
// stays on but is never synced per write, so each value is made durable
// once, in the raft entry. What keeps that safe:
//
//  1. Entries reach the apply side only once the log holds them durably
//     (as above), so after a crash the state's applied index is at most
//     the log's last index.
//  2. Compact syncs the state engine (storage.Engine.Sync: an empty synced
//     write, which makes its write-ahead log durable up to every batch
//     committed before) and only then truncates the log. The applied index
//     it truncates below, and the state it describes, were committed before
//     Compact was called, so they are durable before the entries that could
//     rebuild them go: the log's first index is at most applied + 1.
//  3. An install records itself in the state engine (synced, step 1) and
//     ends in three synced steps: the state with its ConfState, then the
//     log's reset to the snapshot's index, then the record's removal. A
//     crash before the last redoes steps 2 and 3 from the kept file, so
//     the log is never emptied while the state it would rebuild is not
//     durable, and never left behind a state the install replaced.
//  4. Start checks both bounds of 1 and 2 and refuses a pair that breaks
//     them: a log and a state that are not one member's.
//
// Where the log is, is recorded: BindLog gives a new separate log a random
// 16-byte identity (in the log, and 'r' 'w' in the state), written synced
// to the log and then to the state engine, and refuses, before anything
// reads either, a state that names a separate log when started without
// it or with an empty or another's, and a state that keeps its log inside
// when given a --wal-dir. A crash between the two writes leaves an empty
// named log that no state claims: the next start claims it.
//
// Data directories written before segment files keep working as they
// were (StoredLogLayout tells them apart; there is no migration): the log
// inside the state engine, under the raft keyspace, for one run without
// --wal-dir, or in a Pebble engine of its own in an old --wal-dir (the
// same keys; the rules above hold for it as written). A Log is any of the
// three, and logBackend the one interface LogStore keeps it through. The
// crash-point harnesses run every layout.
//
// # Snapshots
//
// A follower that needs entries the leader has compacted away gets the
// leader's whole replicated state instead: every engine key outside the
// raft keyspace, except Config.LocalKeys (the member's own identity).
//
// Sending: raft calls LogStore.Snapshot on the Ready loop. It takes a
// Pebble snapshot of the engine — a consistent point-in-time view, free to
// take — and reads the applied index and the ConfState from it: they are
// the snapshot's metadata, so the data matches them exactly whatever the
// apply loop commits meanwhile. The transport then asks OpenSnapshot for
// the data and gets a stream generated from that Pebble snapshot as it is
// read (one 256 KiB buffer in memory):
//
//	"cairnsn1" | index (8 BE) | term (8 BE)
//	{ uvarint key length | key | uvarint value length | value }   keys ascending
//	0 (uvarint) | record count (8 BE)
//
// The current and the previous snapshot are kept for raft to offer while
// some follower waits for one (its progress is in StateSnapshot); once the
// transport has reported every transfer finished or failed, the Ready loop
// lets them go, since an open Pebble snapshot keeps everything deleted
// after it from being reclaimed. A stream holds its own reference, so a
// snapshot superseded or let go mid-transfer is released only when the
// transfer ends.
//
// Receiving: ReceiveSnapshot checks the stream (format, key order, only
// replicated keys, the applied index matching the MsgSnap) and keeps it as
// it came in <data dir>/snap, once the transport's end frame checked out.
// Nothing in the engine changes yet. The record lengths come from the
// sender, so a key or value is allocated as its bytes arrive, never at the
// declared length up front. Step drops a MsgSnap whose data was not
// received this way (one that came on the message stream, say): raft
// would take it, and the member fail the install and stop.
//
// Installing: raft's Ready carries the snapshot; the Ready loop hands it to
// the apply side (Committed.Snapshot) and waits. The apply side stops
// whatever writes the state (mvcc's compactor) and calls InstallSnapshot:
//
//  1. a synced batch records the install ('r' 'i': index, term, ConfState);
//  2. one batch deletes every replicated key range, and batches of 4 MiB
//     write the snapshot's keys from the kept file;
//  3. a final synced batch deletes the whole log, sets the truncation point
//     at the snapshot's index and term and its ConfState, and removes the
//     record.
//
// A crash between 1 and 3 leaves a mix of old and new state, and the record
// says so: the owner calls RecoverSnapshotInstall before it reads anything
// from the engine (Start refuses to run before), which redoes 2 and 3 from
// the kept file (deleting and rewriting is idempotent); the file goes only
// after 3. The hard state (term, vote) is not part of a snapshot; its
// commit index is raised to the snapshot's at the next start if the crash
// came before the Ready's hard state was written. Finally the apply side
// reloads its in-memory state and reports the index with AppliedTo, and the
// Ready loop goes on with the rest of the Ready.
//
// An SST ingestion would make the switch one atomic step and write the data
// once instead of twice; it needs SSTs built with the engine's comparer and
// key schema, which package storage does not hand out.
//
// # Backups
//
// Maintenance.Snapshot writes etcd's backup format (package etcdbackup,
// which reads a StateSnapshot through Scan and Get). cairn's own backup
// format, which it wrote before and `cairn snapshot restore` still reads,
// is the same replicated state, taken the same way: SnapshotState takes a
// Pebble snapshot and StateSnapshot.Backup streams it as it is read. The stream is wrapped for a file that must
// check itself (backup.go has the layout): a header, the snapshot stream,
// zero padding to a multiple of 512 bytes (clientv3 recognises a file
// ending in a digest by its size), and the sha256 of all of it. ReadBackup
// checks the digest before it parses anything. StageRestoredLog gives a
// data directory restored from a backup a log that starts after the
// backup's applied index, at term 1. StateSnapshot.Hash, the Maintenance
// Hash, is a CRC-32 of the replicated records without the applied index,
// so members that applied the same entries agree.
//
// # Configuration changes
//
// ProposeConfChange proposes a ConfChange (version 1, one member at a
// time). The apply side applies it with ApplyConfChange (or a change of
// node 0 to refuse it). A proposer that wants to propose another one waits
// with WaitAdvanced until raft was told the first is applied: raft refuses
// a conf change while another is pending, turning it into an empty entry,
// which stepConfChange notices on the leader and reports through Dropped
// as ErrConfChangeInProgress.
//
// ForceNewCluster, called before Start, rewrites a log so its member
// restarts as the only voter (etcd's --force-new-cluster): the entries
// after the commit index are deleted and committed removals of every other
// member of the configuration the log commits are appended at the current
// term, with the hard state's commit index at the last of them, so raft
// hands them to the apply side as committed entries.
//
// # On-disk format
//
//	engine  key                   value
//	log     'r' 'e' <index:8 BE>  entry: type (1 byte) | term (uvarint) | data
//	log     'r' 'h'               hard state: term | vote | commit (3 × 8 bytes BE)
//	state   'r' 'c'               ConfState as of the applied index (protobuf)
//	log     'r' 't'               truncation point: index | term (2 × 8 bytes BE)
//	state   'r' 'i'               snapshot install in progress: index | term | ConfState
//	both    'r' 'w'               the separate log's identity (16 bytes)
//
// The rows marked log are the raft keyspace of a log kept in Pebble, in a
// data directory written before segment files: the state engine itself,
// or an engine of the log's own (Where the log is). Segment files hold the
// same records in raftlog's format, the identity among them.
//
// Received snapshots wait in <data dir>/snap as
// <index:16 hex>-<term:16 hex>.snap (the stream as received) until their
// install has finished. A file is written under a temporary name, synced,
// and renamed into place; the snap directory's creation and the rename are
// made durable with directory fsyncs (storage.MkdirAllSynced,
// storage.RenameSynced) before raft hears of the snapshot, so an install
// record never outlives, in a power loss, the file it needs.
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
package raftnode
