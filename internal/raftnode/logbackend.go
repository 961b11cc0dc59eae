package raftnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/storage"
)

// logBackend is where a LogStore keeps the log's entries, its hard state
// and its truncation point: keys of a Pebble engine (engineLog: the state
// engine's own, or an engine of the log's own in a data directory written
// before segment files) or segment files (fileLog). LogStore serialises
// the writes (save, compact, reset); reads run concurrently with them and
// with each other.
//
// The errors of reads are classified: an I/O error wraps errReadFailed,
// raft.ErrCompacted means a compaction got there first, and anything else
// is damage (a log whose stored bytes make no sense). Every error of a
// write is an I/O error.
type logBackend interface {
	// dir is the log's directory, named in errors.
	dir() string
	// load returns what is stored: the hard state (empty if none), the
	// truncation point (0, 0 if none) and the highest stored index (0 if
	// no entry is stored).
	load() (hs *raftpb.HardState, truncIndex, truncTerm, last uint64, err error)
	// save writes hs (unless nil) and ents, replacing the stored entries
	// from ents[0] on (last is the highest stored index before the call),
	// and syncs if sync is set.
	save(hs *raftpb.HardState, ents []*raftpb.Entry, last uint64, sync bool) error
	// term returns the stored term of entry i, or the truncation term if
	// i is the truncation index, deciding from one consistent view.
	term(i uint64) (uint64, error)
	// entries reads [lo, hi), stopping once maxSize is exceeded (but with
	// at least one entry), from one consistent view.
	entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error)
	// compact drops the entries (trunc, index] and records the truncation
	// point (index, term), without a sync.
	compact(trunc, index, term uint64) error
	// reset drops every entry and records the truncation point (index,
	// term), synced.
	reset(index, term uint64) error
}

// engineLog keeps the log under the raft keyspace of a Pebble engine.
type engineLog struct{ eng *storage.Engine }

func (l engineLog) dir() string { return l.eng.Dir() }

func (l engineLog) load() (*raftpb.HardState, uint64, uint64, uint64, error) {
	hs := &raftpb.HardState{}
	if v, err := l.eng.Get(keyHardState); err == nil {
		if hs, err = decodeHardState(v); err != nil {
			return nil, 0, 0, 0, err
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, 0, 0, 0, fmt.Errorf("%w: the hard state: %w", errReadFailed, err)
	}
	var truncIndex, truncTerm uint64
	if v, err := l.eng.Get(keyTruncated); err == nil {
		if len(v) != 16 {
			return nil, 0, 0, 0, fmt.Errorf("raftnode: truncated state is %d bytes, want 16", len(v))
		}
		truncIndex, truncTerm = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, 0, 0, 0, fmt.Errorf("%w: the truncation point: %w", errReadFailed, err)
	}
	var lo, hi [entryKeyLen]byte
	entryKey(lo[:], 0)
	entryKey(hi[:], ^uint64(0))
	it, err := l.eng.DB().NewIter(&pebble.IterOptions{LowerBound: lo[:], UpperBound: hi[:]})
	if err != nil {
		return nil, 0, 0, 0, fmt.Errorf("%w: scanning: %w", errReadFailed, err)
	}
	defer it.Close()
	var last uint64
	if it.Last() {
		last = binary.BigEndian.Uint64(it.Key()[2:])
	} else if err := it.Error(); err != nil {
		return nil, 0, 0, 0, fmt.Errorf("%w: scanning: %w", errReadFailed, err)
	}
	return hs, truncIndex, truncTerm, last, nil
}

func (l engineLog) save(hs *raftpb.HardState, ents []*raftpb.Entry, last uint64, sync bool) error {
	b := l.eng.NewWriteBatch()
	if err := stageEntries(b, ents, last); err != nil {
		b.Discard()
		return err
	}
	if hs != nil {
		var v [24]byte
		encodeHardState(v[:], hs)
		if err := b.Set(keyHardState, v[:], nil); err != nil {
			b.Discard()
			return fmt.Errorf("raftnode: stage hard state: %w", err)
		}
	}
	return b.Commit(sync)
}

// stageEntries stages ents in b, and the deletion of the stored entries
// after them up to last.
func stageEntries(b *storage.Batch, ents []*raftpb.Entry, last uint64) error {
	var kb [entryKeyLen]byte
	for _, e := range ents {
		op := b.SetDeferred(entryKeyLen, entryValueLen(e))
		entryKey(op.Key, e.GetIndex())
		encodeEntryValue(op.Value, e)
		if err := op.Finish(); err != nil {
			return fmt.Errorf("raftnode: stage entry: %w", err)
		}
	}
	if n := len(ents); n > 0 {
		if newLast := ents[n-1].GetIndex(); newLast < last {
			// A new leader overwrote our uncommitted tail: drop what follows.
			var hk [entryKeyLen]byte
			if err := b.DeleteRange(entryKey(kb[:], newLast+1), entryKey(hk[:], last+1), nil); err != nil {
				return fmt.Errorf("raftnode: stage log truncation: %w", err)
			}
		}
	}
	return nil
}

func (l engineLog) term(i uint64) (uint64, error) { return storedTerm(l.eng.DB(), i) }

// storedTerm returns the term of entry i as r holds it, from one
// consistent view (an iterator's, or a snapshot's) of the entry and the
// truncation point, which a compaction changes in one batch: the entry,
// the truncation term if i is the truncation point, raft.ErrCompacted if
// it is below.
func storedTerm(r pebble.Reader, i uint64) (uint64, error) {
	var lo [entryKeyLen]byte
	it, err := r.NewIter(&pebble.IterOptions{
		LowerBound: entryKey(lo[:], i),
		UpperBound: []byte{storage.PrefixRaft, subTruncated + 1},
	})
	if err != nil {
		return 0, fmt.Errorf("%w: entry %d: %w", errReadFailed, i, err)
	}
	defer it.Close()
	if it.First() && bytes.Equal(it.Key(), lo[:]) {
		_, term, _, err := decodeEntryValue(it.Value())
		if err != nil {
			return 0, fmt.Errorf("%w (entry %d)", err, i)
		}
		return term, nil
	}
	if it.SeekGE(keyTruncated) && bytes.Equal(it.Key(), keyTruncated) {
		v := it.Value()
		if len(v) != 16 {
			return 0, fmt.Errorf("raftnode: truncated state is %d bytes, want 16", len(v))
		}
		switch trunc := binary.BigEndian.Uint64(v); {
		case i == trunc:
			return binary.BigEndian.Uint64(v[8:]), nil
		case i < trunc:
			return 0, raft.ErrCompacted
		}
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("%w: entry %d: %w", errReadFailed, i, err)
	}
	// Within the bounds and neither stored nor compacted: the log is
	// broken, which raft must not take for a recoverable condition.
	return 0, fmt.Errorf("raftnode: entry %d is missing from the log", i)
}

func (l engineLog) entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	var lk, hk [entryKeyLen]byte
	it, err := l.eng.DB().NewIter(&pebble.IterOptions{LowerBound: entryKey(lk[:], lo), UpperBound: entryKey(hk[:], hi)})
	if err != nil {
		return nil, fmt.Errorf("%w: entries [%d, %d): %w", errReadFailed, lo, hi, err)
	}
	defer it.Close()
	var (
		ents    []*raftpb.Entry
		size    uint64
		next    = lo
		limited bool
	)
	for ok := it.First(); ok; ok = it.Next() {
		idx := binary.BigEndian.Uint64(it.Key()[2:])
		if idx != next {
			if next == lo {
				// Compacted between the bounds check and the iterator's
				// snapshot.
				return nil, raft.ErrCompacted
			}
			return nil, fmt.Errorf("raftnode: log has a gap: want entry %d, found %d", next, idx)
		}
		e, err := decodeEntry(idx, it.Value())
		if err != nil {
			return nil, err
		}
		size += uint64(proto.Size(e))
		if len(ents) > 0 && size > maxSize {
			limited = true
			break
		}
		ents = append(ents, e)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("%w: entries [%d, %d): %w", errReadFailed, lo, hi, err)
	}
	if len(ents) == 0 {
		// The range was compacted between the bounds check and the read.
		return nil, raft.ErrCompacted
	}
	if !limited && next < hi {
		return nil, fmt.Errorf("raftnode: log is missing entries [%d, %d)", next, hi)
	}
	return ents, nil
}

func (l engineLog) compact(trunc, index, term uint64) error {
	b := l.eng.NewWriteBatch()
	if err := stageTruncation(b, trunc, index, term); err != nil {
		b.Discard()
		return fmt.Errorf("raftnode: stage compaction: %w", err)
	}
	return b.Commit(false)
}

// stageTruncation stages in b the deletion of the entries (from, index]
// and the truncation point (index, term).
func stageTruncation(b *storage.Batch, from, index, term uint64) error {
	var lk, hk [entryKeyLen]byte
	var v [16]byte
	binary.BigEndian.PutUint64(v[:], index)
	binary.BigEndian.PutUint64(v[8:], term)
	return errors.Join(
		b.DeleteRange(entryKey(lk[:], from+1), entryKey(hk[:], index+1), nil),
		b.Set(keyTruncated, v[:], nil))
}

func (l engineLog) reset(index, term uint64) error {
	b := l.eng.NewWriteBatch()
	if err := stageReset(b, index, term); err != nil {
		b.Discard()
		return err
	}
	return b.Commit(true)
}

// stageReset stages in b the deletion of every entry and the truncation
// point (index, term).
func stageReset(b *storage.Batch, index, term uint64) error {
	var v [16]byte
	binary.BigEndian.PutUint64(v[:], index)
	binary.BigEndian.PutUint64(v[8:], term)
	return errors.Join(
		b.DeleteRange([]byte{storage.PrefixRaft, subEntry}, []byte{storage.PrefixRaft, subEntry + 1}, nil),
		b.Set(keyTruncated, v[:], nil))
}
