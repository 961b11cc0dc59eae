package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/storage"
)

// Sub-keys of the raft keyspace (storage.PrefixRaft); the package doc
// specifies their encoding.
const (
	subEntry     byte = 'e'
	subHardState byte = 'h'
	subConfState byte = 'c'
	subTruncated byte = 't'
)

var (
	keyHardState = []byte{storage.PrefixRaft, subHardState}
	keyConfState = []byte{storage.PrefixRaft, subConfState}
	keyTruncated = []byte{storage.PrefixRaft, subTruncated}
)

const entryKeyLen = 2 + 8

func entryKey(buf []byte, index uint64) []byte {
	buf[0], buf[1] = storage.PrefixRaft, subEntry
	binary.BigEndian.PutUint64(buf[2:], index)
	return buf[:entryKeyLen]
}

// Defaults for the in-memory tail cache. The cache must hold at least the
// entries between the applied and the last index in steady state, so that
// the hot path (committed entries handed to apply, entries sent to
// followers) never reads Pebble.
const (
	defaultCacheEntries = 16384
	defaultCacheBytes   = 64 << 20
)

// LogStore is raft's log and hard state kept in the member's Pebble engine,
// with the tail of the log cached in memory. It implements raft.Storage.
//
// The raft.Storage methods and Save are called by the Ready loop; Compact,
// FirstIndex and LastIndex may be called from any goroutine. A mutex guards
// the in-memory state; it is never held across a Pebble write, nor across
// a Pebble read: a read that misses the cache checks its bounds in memory,
// then decides from one consistent Pebble view (an iterator or a
// snapshot), so a compaction that lands in between turns into
// raft.ErrCompacted, never into a not-found that raft would panic on.
type LogStore struct {
	// eng is the state engine: the applied index, the ConfState, the
	// replicated state snapshots are taken of, and the install record.
	eng *storage.Engine
	// back holds the entries, the hard state and the truncation point
	// (see logBackend). logEng is its engine when it is one: eng itself,
	// or a separate engine (--wal-dir in a data directory written before
	// segment files, see OpenSeparateLogStore); nil for segment files.
	back   logBackend
	logEng *storage.Engine

	// writeMu serialises writers (Save, Compact) so the in-memory state is
	// updated in the same order the batches commit.
	writeMu sync.Mutex

	mu struct {
		sync.Mutex
		// hardState is the latest hard state raft handed over;
		// hardStateUnsaved is set while the stored one lags it by a
		// commit index (see Save).
		hardState        *raftpb.HardState
		hardStateUnsaved bool
		confState        *raftpb.ConfState
		// truncIndex/truncTerm name the entry just before the first one
		// still stored (0/0 for a log that was never compacted).
		truncIndex, truncTerm uint64
		last                  uint64
		// cache holds entries [cacheFirst, last]; empty when cacheFirst > last.
		cache      []*raftpb.Entry
		cacheFirst uint64
		cacheBytes int
	}
	maxCacheEntries int
	maxCacheBytes   int

	// localKeys are the engine's own keys that snapshots leave alone.
	localKeys [][]byte
	// out holds the snapshots offered to followers.
	out outSnapshots

	// failed is the first I/O failure of the log's engine (see fail).
	failed atomic.Pointer[error]

	// fs holds the received snapshot files (in <data dir>/snap):
	// the engine's (storage.Engine.FS), or one a test controls.
	fs vfs.FS

	// testHookRead, set by tests, runs when a read has checked its bounds
	// against the in-memory state and is about to read Pebble.
	testHookRead func()
	// testHookCompact, set by tests, runs in a separate-engine Compact
	// between the state engine's sync and the log's truncation.
	testHookCompact func()
}

// separate reports whether the log has an engine of its own.
func (s *LogStore) separate() bool { return s.logEng != s.eng }

// OpenLogStore loads the log state kept in eng. A new engine yields an empty
// log (first index 1, last index 0).
func OpenLogStore(eng *storage.Engine) (*LogStore, error) {
	return openLogStore(eng, eng)
}

// OpenSeparateLogStore loads the log kept in its own engine, log, for the
// state engine state (the --wal-dir layout; the package doc's Where the log is).
// The caller has checked with BindLog that the two belong together. log may
// be state itself, which is OpenLogStore, so a caller holding both engines
// (equal without --wal-dir) needs no case of its own.
func OpenSeparateLogStore(state *storage.Engine, log Log) (*LogStore, error) {
	return openLogStore(state, log)
}

func openLogStore(eng *storage.Engine, log Log) (*LogStore, error) {
	back, logEng, err := backendFor(log)
	if err != nil {
		return nil, err
	}
	return openLogStoreOn(eng, logEng, back)
}

// openLogStoreOn loads the log kept in back for the state engine eng;
// logEng is back's engine, if it is one.
func openLogStoreOn(eng, logEng *storage.Engine, back logBackend) (*LogStore, error) {
	s := &LogStore{eng: eng, back: back, logEng: logEng, fs: eng.FS(), maxCacheEntries: defaultCacheEntries, maxCacheBytes: defaultCacheBytes}
	hs, truncIndex, truncTerm, last, err := back.load()
	if errors.Is(err, errReadFailed) {
		return nil, s.fail("reading", err)
	} else if err != nil {
		return nil, fmt.Errorf("raftnode: the raft log in %s: %w", back.dir(), err)
	}
	s.mu.hardState = hs
	cs := &raftpb.ConfState{}
	if v, err := eng.Get(keyConfState); err == nil {
		if err := proto.Unmarshal(v, cs); err != nil {
			return nil, fmt.Errorf("raftnode: decode conf state: %w", err)
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("raftnode: read conf state from %s: %w", eng.Dir(), err)
	}
	s.mu.confState = cs
	s.mu.truncIndex, s.mu.truncTerm = truncIndex, truncTerm
	if last < truncIndex {
		last = truncIndex
	}
	s.mu.last = last
	s.mu.cacheFirst = last + 1
	return s, nil
}

// truncation returns the truncation point.
func (s *LogStore) truncation() (index, term uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.truncIndex, s.mu.truncTerm
}

// InitialState implements raft.Storage.
func (s *LogStore) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proto.CloneOf(s.mu.hardState), proto.CloneOf(s.mu.confState), nil
}

// HardState returns the last hard state saved.
func (s *LogStore) HardState() *raftpb.HardState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proto.CloneOf(s.mu.hardState)
}

// FirstIndex implements raft.Storage.
func (s *LogStore) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.truncIndex + 1, nil
}

// LastIndex implements raft.Storage.
func (s *LogStore) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.last, nil
}

// Term implements raft.Storage.
func (s *LogStore) Term(i uint64) (uint64, error) {
	s.mu.Lock()
	switch {
	case i == s.mu.truncIndex:
		t := s.mu.truncTerm
		s.mu.Unlock()
		return t, nil
	case i < s.mu.truncIndex:
		s.mu.Unlock()
		return 0, raft.ErrCompacted
	case i > s.mu.last:
		s.mu.Unlock()
		return 0, raft.ErrUnavailable
	case i >= s.mu.cacheFirst:
		t := s.mu.cache[i-s.mu.cacheFirst].GetTerm()
		s.mu.Unlock()
		return t, nil
	}
	s.mu.Unlock()
	if s.testHookRead != nil {
		s.testHookRead()
	}
	// A compaction may have deleted the entry since the bounds check: the
	// read decides from Pebble alone, in one consistent view.
	t, err := s.back.term(i)
	switch {
	case errors.Is(err, errReadFailed):
		return 0, s.fail("reading", err)
	case err != nil && !errors.Is(err, raft.ErrCompacted):
		return 0, s.damaged(err)
	}
	return t, err
}

// errReadFailed marks an error of Pebble's (an I/O error) in a read of the
// log, as opposed to an answer about the log (raft.ErrCompacted, a missing
// entry).
var errReadFailed = errors.New("read failed")

// Entries implements raft.Storage.
func (s *LogStore) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	s.mu.Lock()
	if lo <= s.mu.truncIndex {
		s.mu.Unlock()
		return nil, raft.ErrCompacted
	}
	if hi > s.mu.last+1 || lo >= hi {
		s.mu.Unlock()
		return nil, raft.ErrUnavailable
	}
	if lo >= s.mu.cacheFirst {
		ents := s.mu.cache[lo-s.mu.cacheFirst : hi-s.mu.cacheFirst]
		s.mu.Unlock()
		ents = limitSize(ents, maxSize)
		// The full slice expression makes a caller's append reallocate
		// instead of overwriting the cache.
		return ents[:len(ents):len(ents)], nil
	}
	s.mu.Unlock()
	if s.testHookRead != nil {
		s.testHookRead()
	}
	return s.readEntries(lo, hi, maxSize)
}

// readEntries reads [lo, hi) from the backend, stopping once maxSize is
// exceeded (but returning at least one entry).
func (s *LogStore) readEntries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	ents, err := s.back.entries(lo, hi, maxSize)
	switch {
	case errors.Is(err, errReadFailed):
		return nil, s.fail("reading", err)
	case err != nil && !errors.Is(err, raft.ErrCompacted):
		return nil, s.damaged(err)
	}
	return ents, err
}

// Save writes ents (replacing any stored entries at or after ents[0]) and
// hs (unless empty) in one batch, synced when sync is set. It is called by
// the Ready loop only, once per Ready: the group commit.
//
// A hard state that differs from the last one only in its commit index,
// with no entries and no sync, is not written: it is kept in memory and
// written with the next batch of entries. Losing it in a crash costs
// nothing (the commit index is raised to the applied index at start and
// recomputed by the leader), and skipping it saves a write per Ready for
// the Ready that only commits what the one before it persisted — on a
// single member, every other Ready at low load.
func (s *LogStore) Save(hs *raftpb.HardState, ents []*raftpb.Entry, sync bool) error {
	if len(ents) == 0 && raft.IsEmptyHardState(hs) {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	s.mu.Lock()
	trunc, last := s.mu.truncIndex, s.mu.last
	if len(ents) == 0 && !sync && hs.GetTerm() == s.mu.hardState.GetTerm() && hs.GetVote() == s.mu.hardState.GetVote() {
		s.mu.hardState = &raftpb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(hs.GetCommit())}
		s.mu.hardStateUnsaved = true
		s.mu.Unlock()
		return nil
	}
	if raft.IsEmptyHardState(hs) && s.mu.hardStateUnsaved {
		hs = s.mu.hardState
	}
	s.mu.Unlock()
	// Entries already folded into the truncation point are never rewritten.
	for len(ents) > 0 && ents[0].GetIndex() <= trunc {
		ents = ents[1:]
	}
	var stored *raftpb.HardState
	if !raft.IsEmptyHardState(hs) {
		stored = hs
	}
	if err := s.back.save(stored, ents, last, sync); err != nil {
		op := "writing entries and the hard state to"
		if sync {
			op = "writing and syncing entries and the hard state to"
		}
		return s.fail(op, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if !raft.IsEmptyHardState(hs) {
		s.mu.hardState = &raftpb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(hs.GetCommit())}
		s.mu.hardStateUnsaved = false
	}
	if len(ents) > 0 {
		s.appendCacheLocked(ents)
	}
	return nil
}

// appendCacheLocked puts freshly persisted entries into the tail cache,
// replacing any cached entries they overwrite.
func (s *LogStore) appendCacheLocked(ents []*raftpb.Entry) {
	first := ents[0].GetIndex()
	switch {
	case s.mu.cacheFirst > s.mu.last || first < s.mu.cacheFirst || first > s.mu.last+1:
		// Empty cache, or the new entries start before it: start afresh.
		s.mu.cache = append(make([]*raftpb.Entry, 0, len(ents)*2), ents...)
		s.mu.cacheFirst = first
		s.mu.cacheBytes = entriesBytes(ents)
	case first <= s.mu.last:
		// Conflicting suffix: copy into a new array, because slices of the
		// old one may still be in flight (returned by Entries).
		keep := s.mu.cache[:first-s.mu.cacheFirst]
		c := make([]*raftpb.Entry, len(keep), len(keep)+len(ents)*2)
		copy(c, keep)
		s.mu.cache = append(c, ents...)
		s.mu.cacheBytes = entriesBytes(s.mu.cache)
	default:
		s.mu.cache = append(s.mu.cache, ents...)
		s.mu.cacheBytes += entriesBytes(ents)
	}
	s.mu.last = ents[len(ents)-1].GetIndex()
	s.trimCacheLocked()
}

func (s *LogStore) trimCacheLocked() {
	drop := 0
	for len(s.mu.cache)-drop > 1 &&
		(len(s.mu.cache)-drop > s.maxCacheEntries || s.mu.cacheBytes > s.maxCacheBytes) {
		s.mu.cacheBytes -= entryBytes(s.mu.cache[drop])
		drop++
	}
	if drop > 0 {
		// Reslice without clearing the dropped slots: raft may still hold
		// slices of this array. The next growth of the cache copies only the
		// live window into a new array, releasing the old one.
		s.mu.cache = s.mu.cache[drop:]
		s.mu.cacheFirst += uint64(drop)
	}
}

// Compact discards the log up to and including index, which must be at or
// below the applied index: the state machine already holds its effects. It
// is a no-op for an index at or below the current truncation point. The
// batch is not synced: losing it in a crash only keeps more log. With a
// separate log engine the state engine is synced first, so the applied
// state is durable before the log below it goes.
func (s *LogStore) Compact(index uint64) error {
	if s.separate() {
		s.mu.Lock()
		trunc := s.mu.truncIndex
		s.mu.Unlock()
		if index <= trunc {
			return nil
		}
		// The state engine's writes are not synced: the applied index at
		// or above index, and the state it describes, must be durable
		// before the entries that could rebuild them go. They were
		// committed before this call, so the sync may run before writeMu
		// is taken, and Save does not wait for it.
		if err := s.eng.Sync(); err != nil {
			if errors.Is(err, storage.ErrWAL) {
				return err
			}
			return fmt.Errorf("raftnode: make applied state durable before compaction: %w", err)
		}
		if s.testHookCompact != nil {
			s.testHookCompact()
		}
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	trunc, last := s.mu.truncIndex, s.mu.last
	s.mu.Unlock()
	if index <= trunc {
		return nil
	}
	if index > last {
		return fmt.Errorf("raftnode: compact to %d beyond last index %d", index, last)
	}
	term, err := s.Term(index)
	if err != nil {
		return err
	}
	if err := s.back.compact(trunc, index, term); err != nil {
		return s.fail("compacting", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.truncIndex, s.mu.truncTerm = index, term
	if s.mu.cacheFirst <= index {
		if index >= s.mu.last {
			s.mu.cache, s.mu.cacheBytes = nil, 0
			s.mu.cacheFirst = s.mu.last + 1
		} else {
			n := int(index + 1 - s.mu.cacheFirst)
			for i := range n {
				s.mu.cacheBytes -= entryBytes(s.mu.cache[i])
			}
			s.mu.cache = s.mu.cache[n:]
			s.mu.cacheFirst = index + 1
		}
	}
	return nil
}

// fail records err, an I/O error of the log's engine while op (a phrase
// such as "reading" that takes the directory as its object), as the log's
// failure, and returns it wrapped in ErrLogStorage with the directory and
// the remedy. The first failure is kept (Failed): a read error reaches
// raft, which panics on it, and the Ready loop then stops with this error
// instead (see run).
func (s *LogStore) fail(op string, err error) error {
	dir := s.back.dir()
	if errors.Is(err, storage.ErrWAL) {
		// The engine's own message names the directory and the remedy.
		err = fmt.Errorf("%w: %s %s: %w", ErrLogStorage, op, dir, err)
	} else {
		err = fmt.Errorf("%w: %s %s: %w; the member stops rather than acknowledge what it cannot make durable or read back: "+
			"check the device holding %s (free space if it is full; the kernel log names I/O errors) and restart the member",
			ErrLogStorage, op, dir, err, dir)
	}
	s.failed.CompareAndSwap(nil, &err)
	return err
}

// damaged records err, a log whose stored bytes make no sense (an entry
// that does not decode, a gap), as the log's failure, like fail, and
// returns it wrapped in ErrLogStorage with the directory and the remedy.
// raft panics on such a read error; the Ready loop then stops with this
// error (see run) instead of a Go panic.
func (s *LogStore) damaged(err error) error {
	dir := s.back.dir()
	err = fmt.Errorf("%w: the raft log in %s is damaged: %w; the member stops rather than apply or send a log it cannot read: "+
		"remove this member from the cluster and add it back with an empty data directory (it then gets a snapshot from the leader), "+
		"or restore it from a backup", ErrLogStorage, dir, err)
	s.failed.CompareAndSwap(nil, &err)
	return err
}

// Failed returns the first I/O failure of the log's engine, or the damage
// a read found (wrapping ErrLogStorage), nil if there was none.
func (s *LogStore) Failed() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// StageConfState records cs in b. The apply loop calls it in the same batch
// that advances the applied index past the conf change that produced cs, so
// that a restart hands raft a configuration matching its applied index.
func StageConfState(b *storage.Batch, cs *raftpb.ConfState) error {
	v, err := proto.Marshal(cs)
	if err != nil {
		return fmt.Errorf("raftnode: encode conf state: %w", err)
	}
	if err := b.Set(keyConfState, v, nil); err != nil {
		return fmt.Errorf("raftnode: stage conf state: %w", err)
	}
	return nil
}

// SetConfState updates the in-memory conf state that InitialState reports;
// the caller has persisted it with StageConfState.
func (s *LogStore) SetConfState(cs *raftpb.ConfState) {
	s.mu.Lock()
	s.mu.confState = proto.CloneOf(cs)
	s.mu.Unlock()
}

// limitSize returns the longest prefix of ents whose encoded size does not
// exceed maxSize, and at least one entry.
func limitSize(ents []*raftpb.Entry, maxSize uint64) []*raftpb.Entry {
	if len(ents) <= 1 || maxSize == ^uint64(0) {
		return ents
	}
	size := uint64(proto.Size(ents[0]))
	for i := 1; i < len(ents); i++ {
		size += uint64(proto.Size(ents[i]))
		if size > maxSize {
			return ents[:i]
		}
	}
	return ents
}

// entryBytes approximates an entry's memory for the cache budget.
func entryBytes(e *raftpb.Entry) int { return len(e.GetData()) + 64 }

func entriesBytes(ents []*raftpb.Entry) int {
	n := 0
	for _, e := range ents {
		n += entryBytes(e)
	}
	return n
}

// Entry value encoding: type (1 byte), term (uvarint), data (the rest).
func entryValueLen(e *raftpb.Entry) int {
	var tmp [binary.MaxVarintLen64]byte
	return 1 + binary.PutUvarint(tmp[:], e.GetTerm()) + len(e.GetData())
}

func encodeEntryValue(dst []byte, e *raftpb.Entry) {
	dst[0] = byte(e.GetType())
	n := binary.PutUvarint(dst[1:], e.GetTerm())
	copy(dst[1+n:], e.GetData())
}

func decodeEntryValue(v []byte) (typ raftpb.EntryType, term uint64, data []byte, err error) {
	if len(v) < 2 {
		return 0, 0, nil, fmt.Errorf("raftnode: entry value is %d bytes", len(v))
	}
	typ = raftpb.EntryType(v[0])
	if _, ok := raftpb.EntryType_name[int32(typ)]; !ok {
		return 0, 0, nil, fmt.Errorf("raftnode: entry type %d is unknown", v[0])
	}
	term, n := binary.Uvarint(v[1:])
	if n <= 0 {
		return 0, 0, nil, errors.New("raftnode: entry term is malformed")
	}
	return typ, term, v[1+n:], nil
}

// decodeEntry builds an entry from its stored value, copying the data out
// of Pebble's buffer.
func decodeEntry(index uint64, v []byte) (*raftpb.Entry, error) {
	typ, term, data, err := decodeEntryValue(v)
	if err != nil {
		return nil, fmt.Errorf("%w (entry %d)", err, index)
	}
	e := &raftpb.Entry{Term: new(term), Index: new(index), Type: new(typ)}
	if len(data) > 0 {
		e.Data = append([]byte(nil), data...)
	}
	return e, nil
}

func encodeHardState(dst []byte, hs *raftpb.HardState) {
	binary.BigEndian.PutUint64(dst, hs.GetTerm())
	binary.BigEndian.PutUint64(dst[8:], hs.GetVote())
	binary.BigEndian.PutUint64(dst[16:], hs.GetCommit())
}

func decodeHardState(v []byte) (*raftpb.HardState, error) {
	if len(v) != 24 {
		return nil, fmt.Errorf("raftnode: hard state is %d bytes, want 24", len(v))
	}
	return &raftpb.HardState{
		Term:   new(binary.BigEndian.Uint64(v)),
		Vote:   new(binary.BigEndian.Uint64(v[8:])),
		Commit: new(binary.BigEndian.Uint64(v[16:])),
	}, nil
}

// raiseCommit lifts the in-memory hard state's commit index to index; see
// Start for why that is safe.
func (s *LogStore) raiseCommit(index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.hardState.GetCommit() < index {
		hs := proto.CloneOf(s.mu.hardState)
		hs.Commit = new(index)
		s.mu.hardState = hs
	}
}
