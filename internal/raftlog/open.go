package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/cairn-db/cairn/internal/storage"
)

// Open opens the log in dir, creating dir (synced) if it is absent, and
// replays every segment (the package doc's Replay). A damaged log is
// ErrCorrupt, wrapped with the file and offset; a torn tail of the last
// segment is not damage: the log ends before it. Open writes nothing (it
// only removes spare segments left by an earlier process, which hold
// nothing): the first write after it starts a new segment.
func Open(fs vfs.FS, dir string, opts Options) (*Log, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.NoSync {
		fs = noSyncFS{fs}
	}
	if err := storage.MkdirAllSynced(fs, dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("raftlog: list %s: %w", dir, err)
	}
	if err := removeSpares(fs, dir, names); err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, n := range names {
		if seq, ok := parseSegmentName(n); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	l := &Log{fs: fs, dir: dir, opts: opts}
	l.w.nextSeq = 1
	r := replay{l: l}
	if err := r.run(seqs); err != nil {
		for _, s := range r.segs {
			_ = s.f.Close()
		}
		return nil, err
	}
	return l, nil
}

// parseSegmentName returns the seq a segment file's name holds.
func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, ".log")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// replay rebuilds a Log's state from its segments.
type replay struct {
	l      *Log
	segs   []*segment
	starts []startState
	sizes  []int64

	// The state as replayed so far: entries (truncIndex, base] are in
	// segments removed by compactions the records still to come must
	// repeat; ents holds base+1 .. base+len(ents).
	truncIndex, truncTerm uint64
	base                  uint64
	ents                  []entryLoc
	hs                    hardState
	hasIdentity           bool
	identity              []byte

	// pending holds the records of a group whose last record has not
	// been read yet.
	pending []pendingRec
}

// pendingRec is a decoded record waiting for the end of its group.
type pendingRec struct {
	typ         byte
	off         int64
	n           uint32
	entry       entryHeader
	index, term uint64 // a truncation point
	hs          hardState
	identity    []byte
}

func (r *replay) last() uint64 { return r.base + uint64(len(r.ents)) }

func corrupt(name string, off int64, format string, args ...any) error {
	return fmt.Errorf("%w: %s at offset %d: %s", ErrCorrupt, name, off, fmt.Sprintf(format, args...))
}

func (r *replay) run(seqs []uint64) error {
	l := r.l
	// Pass 1: open every segment and read its start record.
	for i, seq := range seqs {
		name := l.fs.PathJoin(l.dir, segmentName(seq))
		f, err := l.fs.Open(name)
		if err != nil {
			return fmt.Errorf("raftlog: open %s: %w", name, err)
		}
		seg := &segment{seq: seq, name: name, f: f}
		st, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("raftlog: stat %s: %w", name, err)
		}
		sc := scanner{f: f, size: st.Size()}
		typ, payload, _, err := sc.record(0, sc.size, seq)
		if i > 0 && seq != seqs[i-1]+1 {
			_ = f.Close()
			return corrupt(name, 0, "segment %d follows segment %d: segments are missing", seq, seqs[i-1])
		}
		if errors.Is(err, errEnd) || errors.Is(err, errTorn) {
			if i == len(seqs)-1 {
				// The last segment's start was never made durable: a
				// roll cut short. Nothing was written after it, which
				// tells it from a start record damaged later; the next
				// roll creates the file again.
				written, err := sc.writtenPastStart()
				_ = f.Close()
				if err != nil {
					return err
				}
				if written >= 0 {
					return corrupt(name, written, "the segment-start record is damaged, and the segment holds data after it")
				}
				l.w.nextSeq = seq
				break
			}
			_ = f.Close()
			return corrupt(name, 0, "no segment-start record")
		}
		if err != nil {
			_ = f.Close()
			return err
		}
		r.segs = append(r.segs, seg)
		if typ != recStart {
			return corrupt(name, 0, "record of type %d where the segment-start record belongs", typ)
		}
		s, err := decodeStart(payload)
		if err != nil {
			return corrupt(name, 0, "%v", err)
		}
		r.starts = append(r.starts, s)
		r.sizes = append(r.sizes, sc.size)
		l.w.nextSeq = seq + 1
	}

	// Pass 2: replay the records.
	var end int64
	for i, seg := range r.segs {
		st := r.starts[i]
		if i == 0 || st.reset {
			r.truncIndex, r.truncTerm = st.truncIndex, st.truncTerm
			r.base, r.ents = st.last, r.ents[:0]
		} else if st.truncIndex != r.truncIndex || st.truncTerm != r.truncTerm || st.last != r.last() {
			return corrupt(seg.name, 0, "segment starts with truncation point %d/%d and last index %d, the segments before end with %d/%d and %d",
				st.truncIndex, st.truncTerm, st.last, r.truncIndex, r.truncTerm, r.last())
		}
		r.hs = st.hs
		r.hasIdentity, r.identity = st.hasIdentity, st.identity
		limit, isLast := r.sizes[i], i == len(r.segs)-1
		if !isLast {
			limit = r.starts[i+1].prevEnd
			if limit > r.sizes[i] {
				return corrupt(seg.name, r.sizes[i], "the next segment says this one ends at %d, past its size", limit)
			}
		}
		var err error
		end, err = r.segment(seg, limit, isLast)
		if err != nil {
			return err
		}
	}
	if r.base != r.truncIndex {
		name := l.dir
		if len(r.segs) > 0 {
			name = r.segs[0].name
		}
		return corrupt(name, 0, "entries %d to %d are in no segment", r.truncIndex+1, r.base)
	}

	l.mu.segs = r.segs
	l.mu.truncIndex, l.mu.truncTerm = r.truncIndex, r.truncTerm
	l.mu.ents = r.ents
	l.mu.hs = r.hs
	l.mu.hasIdentity, l.mu.identity = r.hasIdentity, r.identity
	if len(r.segs) > 0 {
		l.w.cur = r.segs[len(r.segs)-1]
		l.w.end = end
		l.w.needRoll = true
	}
	return nil
}

// segment replays the records of seg after its start record, up to limit.
// The last segment ends at a zero length or a torn record, and returns the
// offset its complete groups end at; any other segment must hold complete
// groups of good records up to exactly limit.
func (r *replay) segment(seg *segment, limit int64, isLast bool) (int64, error) {
	sc := scanner{f: seg.f, size: limit}
	_, _, n, err := sc.record(0, limit, seg.seq)
	if err != nil {
		return 0, corrupt(seg.name, 0, "start record: %v", err)
	}
	off := int64(n)
	groupStart := off
	r.pending = r.pending[:0]
	for off < limit {
		typ, payload, n, err := sc.record(off, limit, seg.seq)
		if errors.Is(err, errEnd) || errors.Is(err, errTorn) {
			if isLast {
				return groupStart, nil
			}
			what := "a torn record"
			if errors.Is(err, errEnd) {
				what = "the end of the records"
			}
			return 0, corrupt(seg.name, off, "%s before the end (%d) the next segment records", what, limit)
		}
		if err != nil {
			return 0, err
		}
		p := pendingRec{typ: typ &^ flagMore, off: off, n: uint32(n)}
		switch p.typ {
		case recEntry:
			h, _, err := decodeEntry(payload)
			if err != nil {
				return 0, corrupt(seg.name, off, "%v", err)
			}
			p.entry = h
		case recHardState:
			if len(payload) != hardStateLen {
				return 0, corrupt(seg.name, off, "hard state record of %d bytes", len(payload))
			}
			p.hs = getHardState(payload)
		case recTrunc:
			if len(payload) != truncLen {
				return 0, corrupt(seg.name, off, "truncation record of %d bytes", len(payload))
			}
			p.index = binary.LittleEndian.Uint64(payload)
			p.term = binary.LittleEndian.Uint64(payload[8:])
		case recIdentity:
			p.identity = append([]byte{}, payload...)
		default:
			return 0, corrupt(seg.name, off, "record of type %d", typ)
		}
		r.pending = append(r.pending, p)
		off += int64(n)
		if typ&flagMore == 0 {
			if err := r.applyGroup(seg); err != nil {
				return 0, err
			}
			groupStart = off
		}
	}
	if len(r.pending) > 0 && !isLast {
		return 0, corrupt(seg.name, off, "a group of records is cut at the segment's end")
	}
	return groupStart, nil
}

// applyGroup applies the pending records, a complete group.
func (r *replay) applyGroup(seg *segment) error {
	for _, p := range r.pending {
		switch p.typ {
		case recEntry:
			i := p.entry.index
			switch {
			case i <= r.truncIndex:
				return corrupt(seg.name, p.off, "entry %d at or below the truncation index %d", i, r.truncIndex)
			case i > r.last()+1:
				return corrupt(seg.name, p.off, "entry %d after the last index %d leaves a gap", i, r.last())
			case i <= r.base:
				r.base, r.ents = i-1, r.ents[:0]
			default:
				r.ents = r.ents[:i-r.base-1]
			}
			r.ents = append(r.ents, entryLoc{seg: seg, off: p.off, n: p.n, term: p.entry.term})
		case recHardState:
			r.hs = p.hs
		case recTrunc:
			if p.index <= r.truncIndex || p.index > r.last() {
				return corrupt(seg.name, p.off, "truncation point %d outside (%d, %d]", p.index, r.truncIndex, r.last())
			}
			if p.index > r.base {
				if t := r.ents[p.index-r.base-1].term; t != p.term {
					return corrupt(seg.name, p.off, "truncation point %d/%d, but entry %d has term %d", p.index, p.term, p.index, t)
				}
				r.ents = r.ents[p.index-r.base:]
				r.base = p.index
			}
			r.truncIndex, r.truncTerm = p.index, p.term
		case recIdentity:
			r.hasIdentity, r.identity = true, p.identity
		}
	}
	r.pending = r.pending[:0]
	return nil
}

// scanner reads a segment's records in order through a buffer.
type scanner struct {
	f    vfs.File
	size int64
	// buf holds the file's bytes [bufOff, bufOff+len(buf)).
	buf    []byte
	bufOff int64
}

const scanChunk = 1 << 20

// bytesAt returns up to n bytes at off, fewer if limit (at most the file's
// size) comes first.
func (s *scanner) bytesAt(off int64, n int, limit int64) ([]byte, error) {
	limit = min(limit, s.size)
	if off >= limit {
		return nil, nil
	}
	n = int(min(int64(n), limit-off))
	if off >= s.bufOff && off+int64(n) <= s.bufOff+int64(len(s.buf)) {
		return s.buf[off-s.bufOff : off-s.bufOff+int64(n)], nil
	}
	want := int(min(int64(max(n, scanChunk)), s.size-off))
	if cap(s.buf) < want {
		s.buf = make([]byte, want)
	}
	s.buf = s.buf[:want]
	s.bufOff = off
	if _, err := s.f.ReadAt(s.buf, off); err != nil && !errors.Is(err, io.EOF) {
		s.buf = s.buf[:0]
		return nil, fmt.Errorf("raftlog: read at offset %d: %w", off, err)
	}
	return s.buf[:n], nil
}

// record decodes the record at off, which must end by limit.
func (s *scanner) record(off, limit int64, seq uint64) (typ byte, payload []byte, n int, err error) {
	b, err := s.bytesAt(off, 4, limit)
	if err != nil {
		return 0, nil, 0, err
	}
	if len(b) == 4 {
		if l := binary.LittleEndian.Uint32(b); l != 0 && l <= maxRecordLen {
			if b, err = s.bytesAt(off, headerLen+int(l), limit); err != nil {
				return 0, nil, 0, err
			}
		}
	}
	return decodeRecord(b, seq)
}

// startRoom is where a torn start record may reach when its length field
// cannot be trusted: the first block.
const startRoom = 4096

// writtenPastStart returns the offset of the first non-zero byte after the
// room a torn start record takes (its length field's claim when that fits
// in the file, the first block otherwise), or -1 if all are zero.
func (s *scanner) writtenPastStart() (int64, error) {
	from := int64(startRoom)
	if b, err := s.bytesAt(0, 4, s.size); err != nil {
		return 0, err
	} else if len(b) == 4 {
		if l := int64(binary.LittleEndian.Uint32(b)); l > 0 && headerLen+l <= s.size {
			from = headerLen + l
		}
	}
	for off := from; off < s.size; {
		b, err := s.bytesAt(off, scanChunk, s.size)
		if err != nil {
			return 0, err
		}
		for i, c := range b {
			if c != 0 {
				return off + int64(i), nil
			}
		}
		off += int64(len(b))
	}
	return -1, nil
}
