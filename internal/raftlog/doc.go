// Package raftlog is a raft log kept in segment files of its own: the
// entries, the hard state, the truncation point (the entry just before the
// first one stored) and an identity. It is written for what a raft member
// needs: a group of records appended and made durable with a single write
// and a single fdatasync into blocks allocated in advance, and reads of the
// log's terms from memory.
//
// # Segments
//
// The log is a sequence of segment files <seq:016x>.log in one directory,
// seq increasing by one from one segment to the next. A segment is
// preallocated to its full size (see Space; fallocate mode 0 on Linux, so
// appends never change the file's size: an fdatasync has no size to make
// durable, though ext4 still records each block's first write in its
// extent tree, which a file written full of zeros beforehand would not),
// normally ahead of time as the spare; when it is started it is given its
// start record, synced (data and metadata), and the directory synced, all
// before anything else is written to it. The current segment is synced
// before the next one is started, so only the last segment can end torn.
//
// A group of records (an Append, a Compact's truncation point, an identity)
// goes whole into one segment: when it does not fit in what is left of the
// current one, a new segment is started first; a group larger than a
// segment goes alone into a segment as large as it needs.
//
// The first write after Open always starts a new segment, and never
// appends to the segment Open found last: past the end Open found, that
// file may hold records written before a crash that were not durable (a
// lost block, then a later one that reached the disk), and records written
// after them at the same offsets could otherwise be followed, after the
// next crash, by stale ones that still pass their CRC.
//
// # Records
//
// Every record is
//
//	length (4, little endian: the type byte and the payload)
//	CRC-32C (4) over: segment seq (8, little endian) | type (1) | payload
//	type (1)
//	payload
//
// The segment's seq in the CRC makes bytes left from another segment (a
// recycled or copied file) fail the check. A zero length (preallocated
// zeros, never written) ends a segment's records. The high bit of the type
// (0x80) marks a record that is not the last of its group; replay applies a
// group only once its last record is read, so a crash keeps a group whole
// or not at all. Integers are little endian. Types and payloads:
//
//	1 segment start: "crl1" | reset (1: 0 or 1) | previous segment's end
//	  offset (8) | truncation index (8) | truncation term (8) | last index
//	  (8) | reserved (8) | hard state term, vote, commit (8 each) |
//	  has identity (1) | identity (the rest)
//	2 entry: index (8) | term (8) | entry type (1) | data (the rest)
//	3 hard state: term (8) | vote (8) | commit (8)
//	4 truncation point: index (8) | term (8)
//	5 identity: the identity (the whole payload)
//
// The start record is the segment's first record. It restates everything
// the log holds besides entries (hard state, truncation point, identity)
// and the last index, so an older segment can be deleted once none of its
// entries is needed; and it records where the previous segment's records
// end, which is where replay of that segment must stop. Reset starts a new
// segment whose start record has the reset flag: the entries of all older
// segments are dropped.
//
// # Replay
//
// Open reads the segments in seq order; they must be consecutive. A last
// segment whose start record is torn or missing is a roll cut short by a
// crash and is ignored, provided nothing is written after that record (a
// roll writes nothing more until its start is synced); with data after
// it, the start record was damaged later and the log is ErrCorrupt. For
// each segment the state restated by its start record is taken (after a reset, or for
// the oldest segment, as the new starting point; otherwise it must agree
// with the segments before). Then its records: an entry at index i at or
// below the last one replaces the tail from i on; an entry past last+1 (a
// gap), or at or below the truncation index, is ErrCorrupt; a truncation
// point drops the entries up to it and must be in (truncation, last] and
// name the stored entry's term; a hard state and an identity replace the
// previous ones.
//
// A record that fails its CRC or runs past the end of the file is a torn
// tail, and so is a zero length: in the last segment the log ends there,
// before the group that record belongs to. In any other segment the
// records must be good, complete groups up to exactly the end the next
// segment's start record names, and anything else is ErrCorrupt, wrapped
// with the file and offset. The oldest segment's start record may count
// entries that lived in removed segments; a later truncation point must
// then cover them, or the log is ErrCorrupt.
//
// # Space
//
// A member whose device fills must go read-only (refuse writes that add
// data, keep serving reads and deletes) rather than stop, so the log must
// never need fresh space at the moment it appends. After a segment is
// started, the next one is prepared as a spare, <seq:016x>.spare: created,
// preallocated in full (without a reservation only where the file system
// has no fallocate), synced, and the directory synced. A roll renames the
// spare to <seq:016x>.log and writes its start record, allocating nothing;
// the directory sync that ends the roll makes the rename durable, and a
// crash before it leaves either the spare or a segment with no start
// record (a roll cut short). Replay ignores spares and Open removes them:
// they hold nothing. The first roll after Open, which finds no spare,
// creates its segment directly.
//
// Failing to prepare the spare (ENOSPC, or any error) does not fail the
// log: NoRoom reports the error, appends go on into the current segment,
// and Append, Compact and SetIdentity try again at most once a second
// (Options.Now); NoRoom is nil once a spare is ready. The member treats a
// non-nil NoRoom as a full device and stops taking writes that add data,
// so the current segment's remaining room carries the deletes and
// compactions that free space. A roll that finds no spare creates its
// segment (preallocation then best effort: the file grows as it is
// written), and a failure there is the log's, as any write's.
//
// A segment is Options.SegmentBytes, except on a device with less than
// eight times that available (vfs.FS.GetDiskUsage; a file system that
// cannot tell is taken as large): then an eighth of the available space,
// in whole MiB, at least 1 MiB. A group larger than that still gets a
// segment as large as it needs.
//
// # Compaction and removal
//
// Compact writes a truncation point without syncing it: a crash that
// loses it only keeps more log. Segments are removed oldest first, only
// when no stored entry lives in them and they are not the current one,
// and only after the records that make them unneeded are durable (Compact
// syncs its truncation point first; Reset's segment is synced when it
// starts); the directory is synced after each removal, so what is left is
// always a run of consecutive segments.
//
// # Memory and concurrency
//
// For each stored entry the Log keeps its segment, offset, record length
// and term, so Term never reads a file and Entries reads with ReadAt from
// handles kept open. One writer at a time does I/O under a writer mutex
// and then publishes the new state under a RWMutex that readers share;
// files are closed and removed only with that RWMutex held exclusively.
// A reader holds the shared lock across its ReadAt, so a writer's publish
// may wait for a read in progress; a reader never waits for a write or a
// sync.
//
// # Errors
//
// Any error writing or syncing is sticky (except preparing the spare, see
// Space): Failed returns it and every later write returns it at once; the
// member must stop. Reopening the log
// after the fault finds every synced group.
package raftlog
