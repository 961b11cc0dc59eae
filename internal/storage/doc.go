// Package storage owns the one Pebble engine a cairn member keeps all of its
// state in: the raft log and hard state, the MVCC keyspace, leases, auth,
// membership and the applied index.
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
// a crash is replayed from the raft log.
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
// with ErrLocked instead of corrupting the first one's state.
package storage
