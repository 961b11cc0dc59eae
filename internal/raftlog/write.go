package raftlog

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// Append writes hs (nil or empty: none) and ents as one group, synced
// (fdatasync) when sync is set: after a crash the whole group is there or
// none of it. ents have consecutive indexes; ents[0].Index may be at or
// below LastIndex(), and then the stored entries from ents[0].Index on are
// replaced. Entries at or below the truncation index are skipped. A gap
// (ents[0].Index > LastIndex()+1) or non-consecutive indexes are refused
// without writing. A failed write or sync makes the log Failed.
func (l *Log) Append(hs *raftpb.HardState, ents []*raftpb.Entry, sync bool) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	l.retrySpare()
	for i, e := range ents {
		if i > 0 && e.GetIndex() != ents[i-1].GetIndex()+1 {
			return fmt.Errorf("raftlog: append: entry %d follows entry %d", e.GetIndex(), ents[i-1].GetIndex())
		}
		if t := e.GetType(); t < 0 || t > raftpb.EntryType_EntryConfChangeV2 {
			return fmt.Errorf("raftlog: append: entry %d has unknown type %d", e.GetIndex(), t)
		}
		if len(e.GetData()) > maxRecordLen-1-entryFixedLen {
			return fmt.Errorf("raftlog: append: entry %d has %d bytes of data, more than a record holds", e.GetIndex(), len(e.GetData()))
		}
	}
	// The writer is the only one to change the published state, so it
	// reads it without the lock.
	trunc, last := l.mu.truncIndex, l.lastLocked()
	for len(ents) > 0 && ents[0].GetIndex() <= trunc {
		ents = ents[1:]
	}
	if len(ents) > 0 && ents[0].GetIndex() > last+1 {
		return fmt.Errorf("raftlog: append: entry %d would leave a gap after the last index %d", ents[0].GetIndex(), last)
	}
	var h hardState
	if hs != nil {
		h = hardState{hs.GetTerm(), hs.GetVote(), hs.GetCommit()}
	}
	if h.empty() && len(ents) == 0 {
		if sync {
			return l.syncLocked()
		}
		return nil
	}

	need := 0
	if !h.empty() {
		need += headerLen + 1 + hardStateLen
	}
	for _, e := range ents {
		need += headerLen + 1 + entryFixedLen + len(e.GetData())
	}
	if err := l.prepare(int64(need)); err != nil {
		return err
	}
	seg := l.w.cur
	buf := l.w.buf[:0]
	nrec := len(ents)
	if !h.empty() {
		nrec++
		typ := recHardState
		if nrec > 1 {
			typ |= flagMore
		}
		start := len(buf)
		var p []byte
		buf, p = reserveRecord(buf, hardStateLen)
		putHardState(p, h)
		sealRecord(buf[start:], seg.seq, typ)
	}
	for i, e := range ents {
		typ := recEntry
		if i < len(ents)-1 {
			typ |= flagMore
		}
		eh := entryHeader{index: e.GetIndex(), term: e.GetTerm(), typ: byte(e.GetType())}
		data := e.GetData()
		start := len(buf)
		var p []byte
		buf, p = reserveRecord(buf, entryFixedLen+len(data))
		putEntryHeader(p, eh)
		copy(p[entryFixedLen:], data)
		sealRecord(buf[start:], seg.seq, typ)
	}
	l.w.buf = buf
	l.written.Add(int64(len(buf)))
	if _, err := seg.f.WriteAt(buf, l.w.end); err != nil {
		return l.fail("append", err)
	}
	if sync {
		if err := seg.f.SyncData(); err != nil {
			return l.fail("sync", err)
		}
	}

	l.mu.Lock()
	if !h.empty() {
		l.mu.hs = h
	}
	if len(ents) > 0 {
		l.mu.ents = l.mu.ents[:ents[0].GetIndex()-trunc-1]
		off := l.w.end
		if !h.empty() {
			off += headerLen + 1 + hardStateLen
		}
		for _, e := range ents {
			n := headerLen + 1 + entryFixedLen + len(e.GetData())
			l.mu.ents = append(l.mu.ents, entryLoc{seg: seg, off: off, n: uint32(n), term: e.GetTerm()})
			off += int64(n)
		}
	}
	l.mu.Unlock()
	l.w.end += int64(len(buf))
	return nil
}

// SetIdentity records id as the log's identity, synced.
func (l *Log) SetIdentity(id []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	if len(id) > maxRecordLen-1-startFixedLen {
		return fmt.Errorf("raftlog: an identity of %d bytes is more than a record holds", len(id))
	}
	l.retrySpare()
	if err := l.prepare(int64(headerLen + 1 + len(id))); err != nil {
		return err
	}
	seg := l.w.cur
	l.w.buf = appendRecord(l.w.buf[:0], seg.seq, recIdentity, id)
	l.written.Add(int64(len(l.w.buf)))
	if _, err := seg.f.WriteAt(l.w.buf, l.w.end); err != nil {
		return l.fail("write the identity", err)
	}
	if err := seg.f.SyncData(); err != nil {
		return l.fail("sync", err)
	}
	l.w.end += int64(len(l.w.buf))
	l.mu.Lock()
	l.mu.hasIdentity = true
	l.mu.identity = append([]byte{}, id...)
	l.mu.Unlock()
	return nil
}

// Compact makes (index, Term(index)) the truncation point, dropping the
// entries up to index. index must be in (truncation index, LastIndex()];
// at or below the truncation index Compact does nothing, above LastIndex it
// returns an error wrapping raft.ErrUnavailable. The record is written
// without sync (a crash that loses it only keeps more log); when segment
// files are no longer needed, Compact syncs it and then removes them.
func (l *Log) Compact(index uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	trunc, last := l.mu.truncIndex, l.lastLocked()
	if index <= trunc {
		return nil
	}
	if index > last {
		return fmt.Errorf("raftlog: compact to %d past the last index %d: %w", index, last, raft.ErrUnavailable)
	}
	term := l.mu.ents[index-trunc-1].term
	l.retrySpare()
	if err := l.prepare(headerLen + 1 + truncLen); err != nil {
		return err
	}
	seg := l.w.cur
	var p []byte
	l.w.buf, p = reserveRecord(l.w.buf[:0], truncLen)
	putTrunc(p, index, term)
	sealRecord(l.w.buf, seg.seq, recTrunc)
	l.written.Add(int64(len(l.w.buf)))
	if _, err := seg.f.WriteAt(l.w.buf, l.w.end); err != nil {
		return l.fail("write a truncation point", err)
	}
	l.w.end += headerLen + 1 + truncLen
	l.mu.Lock()
	l.mu.ents = l.mu.ents[index-trunc:]
	l.mu.truncIndex, l.mu.truncTerm = index, term
	l.mu.Unlock()
	return l.removeObsolete()
}

// Reset replaces the whole log by an empty one whose truncation point is
// (index, term), with hs as its hard state if hs is non-nil (the current
// one otherwise), and the identity kept. It starts a new segment, synced
// before Reset returns; the older segments are then removed.
func (l *Log) Reset(index, term uint64, hs *raftpb.HardState) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	st := l.startStateLocked()
	st.reset = true
	st.truncIndex, st.truncTerm, st.last = index, term, index
	if hs != nil {
		st.hs = hardState{hs.GetTerm(), hs.GetVote(), hs.GetCommit()}
	}
	if err := l.startSegment(st, 0); err != nil {
		return err
	}
	l.mu.Lock()
	l.mu.ents = nil
	l.mu.truncIndex, l.mu.truncTerm = index, term
	l.mu.hs = st.hs
	l.mu.Unlock()
	return l.removeObsolete()
}

// Sync makes everything appended so far durable.
func (l *Log) Sync() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	return l.syncLocked()
}

func (l *Log) syncLocked() error {
	if l.w.cur == nil {
		return nil
	}
	if err := l.w.cur.f.SyncData(); err != nil {
		return l.fail("sync", err)
	}
	return nil
}

// Close syncs the log (unless it failed) and closes its files, a spare
// segment's included (left for the next Open to remove). Every call
// after it returns ErrClosed.
func (l *Log) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return ErrClosed
	}
	l.mu.closed = true
	var err error
	if l.Failed() == nil && l.w.cur != nil {
		if serr := l.w.cur.f.SyncData(); serr != nil {
			err = l.fail("sync", serr)
		}
	}
	for _, s := range l.mu.segs {
		if cerr := s.f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("raftlog: close %s: %w", s.name, cerr)
		}
	}
	l.mu.segs = nil
	if s := l.w.spare; s != nil {
		// The spare stays on disk until the next Open removes it.
		if cerr := s.f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("raftlog: close %s: %w", s.name, cerr)
		}
		l.w.spare = nil
	}
	return err
}

// startStateLocked restates the log's current state for a new segment's
// start record. Called by the writer.
func (l *Log) startStateLocked() startState {
	return startState{
		prevEnd:     l.w.end,
		truncIndex:  l.mu.truncIndex,
		truncTerm:   l.mu.truncTerm,
		last:        l.lastLocked(),
		hs:          l.mu.hs,
		hasIdentity: l.mu.hasIdentity,
		identity:    l.mu.identity,
	}
}

// prepare makes room for a group of need bytes in the current segment,
// rolling to a new one when there is no current segment, when the current
// one was inherited from Open, or when the group does not fit.
func (l *Log) prepare(need int64) error {
	if l.w.cur != nil && !l.w.needRoll && l.w.end+need <= l.w.size {
		return nil
	}
	return l.startSegment(l.startStateLocked(), need)
}

// startSegment syncs the current segment and starts the next one, with st
// as its start record and room for need more bytes: the spare segment
// renamed to its name when one is ready (nothing is allocated then),
// created and preallocated otherwise; its start record written and synced
// (data and metadata), and the directory synced, all before anything else
// is written to it. It then prepares the next spare (see prepareSpare),
// whose failure is not the log's.
func (l *Log) startSegment(st startState, need int64) error {
	if cur := l.w.cur; cur != nil {
		// The new start record states where cur's records end, so they
		// must be durable first.
		if err := cur.f.SyncData(); err != nil {
			return l.fail("sync", err)
		}
	}
	seq := l.w.nextSeq
	name := l.fs.PathJoin(l.dir, segmentName(seq))
	startLen := int64(headerLen + 1 + st.encodedLen())
	spare, err := l.takeSpare(seq)
	if err != nil {
		return l.fail("start segment "+name, err)
	}
	var f vfs.File
	var size int64
	if spare != nil {
		f, size = spare.f, spare.size
		if startLen+need > size {
			// A group larger than the spare: as when there is no spare,
			// the rest is preallocated if it can be.
			size = startLen + need
			_ = preallocate(f, size)
		}
	} else {
		size = max(l.segmentSize(), startLen+need)
		if f, err = l.fs.Create(name, vfs.WriteCategoryUnspecified); err != nil {
			return l.fail("create a segment", err)
		}
		// Preallocation is the fast path, not a promise: where it fails (a
		// nearly full device, a file system without fallocate) the segment
		// grows as it is written, and a full device shows in the writes.
		_ = preallocate(f, size)
	}
	var p []byte
	l.w.buf, p = reserveRecord(l.w.buf[:0], st.encodedLen())
	st.encode(p)
	sealRecord(l.w.buf, seq, recStart)
	l.written.Add(int64(len(l.w.buf)))
	_, err = f.WriteAt(l.w.buf, 0)
	if err == nil {
		err = f.SyncData()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = storage.SyncDir(l.fs, l.dir)
	}
	if err != nil {
		_ = f.Close()
		return l.fail("start segment "+name, err)
	}
	seg := &segment{seq: seq, name: name, f: f}
	l.mu.Lock()
	l.mu.segs = append(l.mu.segs, seg)
	l.mu.Unlock()
	l.w.cur, l.w.end, l.w.size, l.w.needRoll = seg, startLen, size, false
	l.w.nextSeq = seq + 1
	l.prepareSpare()
	return nil
}

// removeObsolete removes the oldest segments while they are not the
// current one and no stored entry lives in them, oldest first, syncing the
// directory after each so the segments left are always a suffix. The
// records that make them unneeded are synced first.
func (l *Log) removeObsolete() error {
	keep := l.w.cur
	if len(l.mu.ents) > 0 {
		keep = l.mu.ents[0].seg
	}
	if len(l.mu.segs) == 0 || l.mu.segs[0] == keep {
		return nil
	}
	if err := l.syncLocked(); err != nil {
		return err
	}
	for len(l.mu.segs) > 0 && l.mu.segs[0] != keep && l.mu.segs[0] != l.w.cur {
		l.mu.Lock()
		s := l.mu.segs[0]
		l.mu.segs = l.mu.segs[1:]
		cerr := s.f.Close()
		l.mu.Unlock()
		if cerr != nil {
			return l.fail("close "+s.name, cerr)
		}
		if err := l.fs.Remove(s.name); err != nil {
			return l.fail("remove "+s.name, err)
		}
		if err := storage.SyncDir(l.fs, l.dir); err != nil {
			return l.fail("remove "+s.name, err)
		}
	}
	return nil
}

// segmentName is the file name of segment seq.
func segmentName(seq uint64) string { return fmt.Sprintf("%016x.log", seq) }
