// Package mvcc is cairn's revisioned key-value state machine: etcd's MVCC
// semantics (revisions, versions, ranges, txns, compaction, hashes) kept in
// the member's Pebble engine, with no in-memory index of the keys (only a
// Bloom filter of them, see "Writes and visibility").
//
// # Revisions
//
// A new store is at revision 1. Every write request that changes something
// (a Put; a DeleteRange that deletes at least one key; a Txn whose chosen
// branches write) takes the next main revision, and its writes get
// sub-revisions 0, 1, 2, ... in the order they are made. A key's version
// counts its puts since it was (re)created; a delete ends that generation
// and the next put starts again at version 1 with a new create revision.
// All of this follows etcd 3.7 exactly, including its quirks: see Range and
// Txn for the ones a caller may trip on.
//
// # On-disk layout
//
// The package owns three keyspaces of the engine (see package storage):
//
//	'k' + esc(key) + 0x00 0x01 + ^main + ^sub  →  version
//	'e' + main + sub                           →  event
//	'x' "rev" / "cs" / "cf"                    →  current revision / compaction scheduled / finished
//	'x' "hq" + C                               →  previous compaction revision (compaction hash pending)
//	'x' "hh" + C                               →  crc32 + previous compaction revision (compaction hash)
//
// Numbers are 8-byte big endian; ^ is bitwise negation, so a key's versions
// sort newest first. esc escapes the user key, which may hold any byte: 0x00
// becomes 0x00 0xff, and 0x00 0x01 ends the key. The escaped form sorts like
// the raw key, and no escaped key is a prefix of another's versions, so:
//
//   - the newest version of key at or below revision R is one SeekGE to
//     'k'+esc(key)+0x00 0x01+^R (the first entry at or after it, if it still
//     has key's prefix);
//   - a range [a, b) is the span ['k'+esc(a), 'k'+esc(b)), visited one key at
//     a time, skipping a key's older versions with one seek.
//
// A version's value is a flags byte (bit 0: tombstone) and, unless it is a
// tombstone, uvarints create revision, version and lease, then the value
// bytes. Example, after put a=1, put a=2, delete a, put b=x:
//
//	k "a" 0x00 0x01 ^4 ^0  →  tombstone
//	k "a" 0x00 0x01 ^3 ^0  →  create 2, version 2, lease 0, "2"
//	k "a" 0x00 0x01 ^2 ^0  →  create 2, version 1, lease 0, "1"
//	k "b" 0x00 0x01 ^5 ^0  →  create 5, version 1, lease 0, "x"
//	e 2 0 → 'p' "a"   e 3 0 → 'p' "a"   e 4 0 → 'd' "a"   e 5 0 → 'p' "b"
//	x "rev" → 5
//
// The event log holds, in revision order, which key each revision changed
// and how ('p' put, 'd' delete); the version itself is found in the 'k'
// space. It serves watch catch-up (Store.Events) and tells compaction which
// keys have history to remove, so compaction never scans the whole keyspace.
//
// # Writes and visibility
//
// Only the apply goroutine writes, through a Write over the batch that will
// also carry the raft applied index: Put, DeleteRange, Txn and Compact add
// versions, events and the new revision to the batch; the caller commits it
// and then calls Done, which publishes the new revision with one atomic
// store. Readers (Range, HashKV, Events) run on any goroutine with a Pebble
// iterator, a consistent point-in-time view, and look only at versions at or
// below the published revision: the invariant is that everything at or below
// the published revision is committed, and anything above it is ignored, so
// a committed but not yet published write is invisible and readers never
// block the apply goroutine or each other.
//
// A write looks up the current version of each key it writes (for its
// version, create revision and the event's previous value), a seek that
// misses the cache at nearly every step of the memtable's skiplist. A
// Bloom filter of the keys that have any version (keyFilter: about 10
// bits a key, no keys, at most about 10 MiB) lets a write that creates a
// key skip it: when the filter says the key has no version, it has none.
// Open and Restore build the filter from the engine in the background;
// until it is complete, and past its size bound, every key goes to the
// engine. It is a filter, not an index: it never answers more than "no
// version" or "maybe".
//
// # Reads
//
// Range serves a RangeRequest (RangeEncoded the same, its KeyValues
// written in wire form as they are read), ReadTxn a txn of ranges only (etcd serves
// those without going through raft), HashKV a checksum of the history for
// comparing members, and Events the event log from a revision on, for watch
// catch-up. All read the published state, on any goroutine.
//
// # Compaction
//
// Compact records the new compaction revision C in the batch and, once
// published, reads below C fail with ErrCompacted. A background goroutine
// then removes, in batches of a bounded number of events, the history no
// read at or above C can see: every event below C and, for each key the
// event log names, every version older than the key's newest version at or
// below C, and that version too if it is a tombstone. Each batch removes
// events together with the versions of their keys, and the last one records
// C as finished.
//
// Before it removes anything, the background compaction computes the hash
// HashKV gives at C (over what the previous compaction P left), which
// Compact marked pending in its batch, and keeps it (the newest ten): from
// then on HashKV(C) answers it, as etcd does with the hashes its
// compactions store, so the hash at C does not change when the history
// below C is removed and the engine defragmented. Defragment then gives
// the removed history's disk space back.
//
// # Crash behaviour
//
// Every write of a request (versions, events, revision, scheduled
// compaction) lands in the caller's batch, so it is in the engine wholly or
// not at all, together with the applied index; a crash loses only batches
// that raft replays. Open restores the revision and compaction revision
// from 'x'. If the finished compaction is behind the scheduled one (a crash
// or Close during physical compaction), Open resumes it; an interrupted
// compaction batch is simply redone, as removing what is already gone is a
// no-op.
package mvcc
