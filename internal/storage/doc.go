// Package storage owns the Pebble engine a cairn member keeps its state in:
// the MVCC keyspace, leases, auth, membership and the applied index. The
// raft log and hard state live in segment files of their own (package
// raftlog); in a data directory written before them, they are in this
// engine, or in a second Engine opened the same way in an old --wal-dir
// (raftnode's Where the log is).
//
// # Key layout
//
// Every key starts with one byte that names the keyspace it belongs to. The
// packages that own a keyspace define the rest of the key; this table is the
// single place that hands the prefixes out, so two owners never collide.
//
//	prefix  owner                 contents
//	'm'     storage               member meta: "m/applied" → applied index (8 bytes, big endian)
//	'r'     raftnode              raft log entries, hard state, snapshot metadata
//	'k'     mvcc                  key-major versions: each user key's revisions, newest first
//	'e'     mvcc                  revision-ordered event log (watch catch-up, compaction)
//	'x'     mvcc                  mvcc meta: current and compacted revision
//	'l'     lease                 leases and their attached keys
//	'a'     auth                  users, roles, auth revision
//	'c'     membership            members, cluster id, cluster version
//
// Keys compare bytewise. The engine's Comparer also knows one thing of
// mvcc's layout: a key in 'k' whose terminator 0x00 0x01 sits 16 bytes
// from its end is a version of a user key, and its prefix (all but the
// 16-byte revision) is what the tables' bloom filters hold, so a lookup of
// one key's newest version skips the tables without it. Every other key is
// its own prefix. The comparer's name is recorded in the data directory.
//
// # Durability
//
// The applied index is written in the same batch as the state it covers
// (SetAppliedIndex), so a batch either lands whole or not at all: a restart
// never applies an entry twice and never loses one. Raft entries and hard
// state are committed with sync; state-machine batches are committed without
// it, because Pebble's write-ahead log is sequential: the next synced raft
// write makes every earlier unsynced batch durable too, and anything lost in
// a crash is replayed from the raft log. When the log has an engine of its
// own, the state engine's batches become durable only at its own syncs
// (Sync, which raftnode calls before truncating the log below them).
//
// # Space
//
// Size is what the disk holds for the engine, the figure the quota
// (--quota-backend-bytes) is checked against: every file in the database
// directory counted by its allocated blocks. That is
//
//   - the live sstables (and blob files): the data, older versions and
//     deletions not yet compacted away included;
//   - the write-ahead logs: the one in use, preallocated 1.1x the memtable
//     size ahead of its data, any whose memtable awaits its flush, and up to
//     three old ones kept for reuse (Pebble's MemTableStopWritesThreshold+1);
//   - files awaiting deletion: tables a compaction replaced, kept while an
//     iterator still reads them;
//   - compaction outputs being written, the manifest and the options file.
//
// SizeInUse is the live part: the live tables and blob files, the data
// (not the preallocation) of the live logs, the manifest and the options.
// Size - SizeInUse is the slack: logs kept for reuse, preallocated tails,
// files awaiting deletion. Defragment flushes, compacts the whole keyspace
// online (reads and writes go on) so that deleted keys and versions are
// dropped from the tables, and waits for the replaced tables to be deleted:
// Size then comes down to SizeInUse plus the logs, about 4.4x the memtable
// size.
//
// The memtable size, and with it the logs, follows the quota
// (Options.QuotaBytes): 1/64 of it between 64 KiB and 32 MiB, so the logs
// of an idle engine hold about 7% of a small quota and 140 MiB for the
// default 2 GiB quota and above.
//
// # Errors
//
// A storage error is never swallowed. Pebble reports a failed flush or
// compaction to the engine's event listener and retries it at once; the
// engine logs each (the first of a run and at most one a second after
// that, with the cause and whether the device is full), counts it
// (BackgroundErrors), hands it to Options.OnBackgroundError (the owner
// raises its NOSPACE alarm on IsNoSpace; a failed flush's error comes
// wrapped in ErrFlush) and backs a failing flush's
// retries off, from 10 ms up to 0.5 s, until a flush succeeds again (Pebble
// itself keeps a failed compaction's key span aside for a while). A failed
// write-ahead log write or sync leaves Pebble's commit pipeline unusable:
// Pebble calls its logger's Fatalf, which the engine logs, reports and
// turns into a panic naming the directory. Disk operations slower than 5 s
// are logged as warnings and counted (DiskSlowEvents).
//
// Open on a full device: recovering the write-ahead log flushes it to a
// table, and Pebble's Open waits for that flush, which it retries forever
// (a core at 100%, nothing in the log). The engine's listener tells Open
// about each failure while Open runs; after three, Open returns ErrNoSpace
// (or ErrBackground for another I/O error), with the directory, the cause
// and the remedy (free space or move the data directory, then restart).
// Pebble's abandoned open stays parked until the process exits.
//
// A directory entry (a created data directory, a file renamed into place)
// is durable only once its directory is synced: Open creates the data
// directory with MkdirAllSynced, and the files a member depends on beside
// Pebble's are moved into place with RenameSynced (see dirsync.go).
//
// # Exclusion
//
// Open takes an advisory lock (flock) on a file in the data directory for the
// life of the Engine, so a second process on the same directory is refused
// with ErrLocked instead of corrupting the first one's state. On a file
// system given in Options.FS (tests) the lock is that file system's.
package storage
