package raftlog

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// ErrCorrupt is returned, wrapped with the file and offset, for damage that
// is not a torn tail: a bad record in a segment that is not the last one, a
// record whose CRC matches but whose content breaks the log's rules (a gap,
// a truncation point past the last entry), a missing segment.
var ErrCorrupt = errors.New("raftlog: log corrupt")

// ErrClosed is returned by every call on a Log after Close.
var ErrClosed = errors.New("raftlog: log closed")

// DefaultSegmentBytes is the size of a segment when Options.SegmentBytes is 0.
const DefaultSegmentBytes = 64 << 20

// Options tune a Log.
type Options struct {
	// SegmentBytes is the size each segment file is preallocated to
	// (DefaultSegmentBytes if 0), less on a device with under eight times
	// that available (the package doc's Space). A group of records larger
	// than a segment goes alone into a segment as large as it needs.
	SegmentBytes int64
	// NoSync skips every sync (etcd's --unsafe-no-fsync): a crash of the
	// machine may then lose what Append reported synced.
	NoSync bool
	// Now is the clock that paces the retries of a spare segment that
	// could not be prepared (time.Now if nil); tests fake it.
	Now func() time.Time
}

// segment is one open segment file.
type segment struct {
	seq  uint64
	name string
	// f reads the segment; for the segment the writer created in this
	// process it is also the handle it writes with.
	f vfs.File
}

// entryLoc is where a stored entry is, and its term.
type entryLoc struct {
	seg  *segment
	off  int64
	n    uint32 // the whole record's length
	term uint64
}

// Log is a raft log (entries, hard state, truncation point and an identity)
// kept in segment files; the package doc specifies the format.
//
// Append, Compact, Reset, SetIdentity, Sync and Close are called by one
// writer at a time (they serialise among themselves); the reads (Term,
// Entries, LastIndex, HardState, Truncation, Identity, Failed, NoRoom) may
// run concurrently with them and with each other.
type Log struct {
	fs   vfs.FS
	dir  string
	opts Options

	// wmu serialises the writers; w is theirs. A writer does its I/O
	// holding only wmu and publishes the result under mu, so readers wait
	// for neither a write nor a sync.
	wmu sync.Mutex
	w   struct {
		// cur is the segment records are appended to (nil before the
		// first segment exists). After Open it is the last segment found,
		// which is never written again: needRoll is set.
		cur      *segment
		end      int64 // where cur's records end
		size     int64 // cur's preallocated size
		needRoll bool
		nextSeq  uint64
		buf      []byte
		// spare is the next segment, created and preallocated ahead of
		// the roll that will use it (nil when none is ready); its seq is
		// always nextSeq. lastTry is when preparing one last failed.
		spare   *spareSeg
		lastTry time.Time
	}

	// failed holds the first write or sync error (see Failed).
	failed atomic.Pointer[error]
	// noRoom holds the last failure to prepare the spare segment, nil
	// once one is ready (see NoRoom).
	noRoom atomic.Pointer[error]
	// written counts the bytes written to segments (BytesWritten).
	written atomic.Int64

	// mu guards the published state. Segment files are closed and removed
	// only under mu held exclusively, so a reader holding it shared never
	// sees a file go away.
	mu struct {
		sync.RWMutex
		closed bool
		// segs are the segment files, oldest first; the entries live in a
		// suffix of them.
		segs                  []*segment
		hs                    hardState
		truncIndex, truncTerm uint64
		// ents holds entries truncIndex+1 .. truncIndex+len(ents).
		ents        []entryLoc
		hasIdentity bool
		identity    []byte
	}
}

// Dir returns the directory the log's segments are in.
func (l *Log) Dir() string { return l.dir }

// BytesWritten returns the bytes written to segment files since Open.
func (l *Log) BytesWritten() int64 { return l.written.Load() }

// HardState returns a copy of the last hard state stored (an empty one if
// none was).
func (l *Log) HardState() *raftpb.HardState {
	l.mu.RLock()
	h := l.mu.hs
	l.mu.RUnlock()
	if h.empty() {
		return &raftpb.HardState{}
	}
	return &raftpb.HardState{Term: new(h.term), Vote: new(h.vote), Commit: new(h.commit)}
}

// Truncation returns the index and term of the entry just before the first
// stored one: (0, 0) for a log never compacted or reset.
func (l *Log) Truncation() (index, term uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.truncIndex, l.mu.truncTerm
}

// LastIndex returns the index of the last stored entry, or the truncation
// index if no entry is stored.
func (l *Log) LastIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lastLocked()
}

func (l *Log) lastLocked() uint64 { return l.mu.truncIndex + uint64(len(l.mu.ents)) }

// Identity returns a copy of the identity last set, nil if it never was.
func (l *Log) Identity() []byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if !l.mu.hasIdentity {
		return nil
	}
	return append([]byte{}, l.mu.identity...)
}

// Failed returns the first error a write or sync of the log returned, nil
// if none did. Once set, every later Append, Compact, Reset, SetIdentity and
// Sync returns it at once.
func (l *Log) Failed() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records err as the log's failure (unless one is recorded already)
// and returns it wrapped with what was being done.
func (l *Log) fail(what string, err error) error {
	err = fmt.Errorf("raftlog: %s in %s: %w", what, l.dir, err)
	l.failed.CompareAndSwap(nil, &err)
	return err
}

// writable returns why a writer may not proceed, nil if it may.
func (l *Log) writable() error {
	l.mu.RLock()
	closed := l.mu.closed
	l.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	return l.Failed()
}

// Term returns the term of entry i. The truncation index has one;
// raft.ErrCompacted below it, raft.ErrUnavailable above LastIndex. It never
// reads a file.
func (l *Log) Term(i uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	switch {
	case l.mu.closed:
		return 0, ErrClosed
	case i < l.mu.truncIndex:
		return 0, raft.ErrCompacted
	case i == l.mu.truncIndex:
		return l.mu.truncTerm, nil
	case i > l.lastLocked():
		return 0, raft.ErrUnavailable
	}
	return l.mu.ents[i-l.mu.truncIndex-1].term, nil
}

// maxReadSpan bounds one ReadAt of Entries, which reads the records of
// neighbouring entries together.
const maxReadSpan = 1 << 20

// Entries returns the entries [lo, hi), stopping once their total
// proto.Size would exceed maxSize but returning at least one (raft's
// limitSize). raft.ErrCompacted if lo is at or below the truncation index,
// raft.ErrUnavailable if hi is past LastIndex()+1; an entry whose record
// does not read back is ErrCorrupt. The entries are the caller's.
func (l *Log) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	switch {
	case l.mu.closed:
		return nil, ErrClosed
	case lo <= l.mu.truncIndex:
		return nil, raft.ErrCompacted
	case hi > l.lastLocked()+1:
		return nil, raft.ErrUnavailable
	case lo >= hi:
		return nil, nil
	}
	locs := l.mu.ents[lo-l.mu.truncIndex-1 : hi-l.mu.truncIndex-1]
	out := make([]*raftpb.Entry, 0, min(len(locs), 64))
	var size uint64
	for len(locs) > 0 {
		// Read a run of records of one segment with one ReadAt: from the
		// first's offset to the end of the last, which also spans the small
		// records between groups. The run stops at about the size still
		// wanted, so a small maxSize reads little.
		first := locs[0]
		budget := uint64(0)
		if size < maxSize {
			budget = maxSize - size
		}
		k := 1
		span := int64(first.n)
		for k < len(locs) && locs[k].seg == first.seg && locs[k].off > first.off {
			next := locs[k].off + int64(locs[k].n) - first.off
			if next > maxReadSpan || (next > 4096 && uint64(next-4096) > budget) {
				break
			}
			span = next
			k++
		}
		buf := make([]byte, span)
		if _, err := first.seg.f.ReadAt(buf, first.off); err != nil {
			return nil, fmt.Errorf("raftlog: read %s at offset %d: %w", first.seg.name, first.off, err)
		}
		for j := range k {
			loc := locs[j]
			rel := loc.off - first.off
			e, err := decodeEntryAt(buf[rel:rel+int64(loc.n)], loc, lo+uint64(len(out)))
			if err != nil {
				return nil, err
			}
			size += uint64(proto.Size(e))
			if len(out) > 0 && size > maxSize {
				return out, nil
			}
			out = append(out, e)
		}
		locs = locs[k:]
	}
	return out, nil
}

// decodeEntryAt decodes the entry record b read from loc, which must hold
// entry index.
func decodeEntryAt(b []byte, loc entryLoc, index uint64) (*raftpb.Entry, error) {
	typ, payload, _, err := decodeRecord(b, loc.seg.seq)
	if err == nil && typ&^flagMore != recEntry {
		err = fmt.Errorf("record of type %d where an entry was", typ)
	}
	var h entryHeader
	var data []byte
	if err == nil {
		h, data, err = decodeEntry(payload)
	}
	if err == nil && (h.index != index || h.term != loc.term) {
		err = fmt.Errorf("entry %d/%d where %d/%d was", h.index, h.term, index, loc.term)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s at offset %d: %w", ErrCorrupt, loc.seg.name, loc.off, err)
	}
	e := &raftpb.Entry{Index: new(h.index), Term: new(h.term), Type: raftpb.EntryType(h.typ).Enum()}
	if len(data) > 0 {
		e.Data = data[:len(data):len(data)]
	}
	return e, nil
}
