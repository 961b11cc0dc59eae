package mvcc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// Errors returned by the store. Their text is etcd's, so clients that match
// errors by message see the same thing.
var (
	// ErrCompacted is returned for a read, hash or compaction at a revision
	// that has already been compacted away.
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	// ErrFutureRev is returned for a read, hash or compaction at a revision
	// above the store's current revision.
	ErrFutureRev = errors.New("mvcc: required revision is a future revision")
	// ErrKeyNotFound is returned by a Put with ignore_value or ignore_lease
	// on a key that does not exist.
	ErrKeyNotFound = errors.New("etcdserver: key not found")
	// ErrLeaseNotFound is returned by a Put that attaches a lease that does
	// not exist.
	ErrLeaseNotFound = errors.New("lease not found")
)

// Options tune a Store.
type Options struct {
	// LeaseExists reports whether a lease is granted. It is called from the
	// apply goroutine only. Nil means no lease exists, so every Put with a
	// lease fails with ErrLeaseNotFound.
	LeaseExists func(id int64) bool
	// Logger receives the background compaction's errors; nil discards them.
	Logger *slog.Logger
}

// revState is what readers see of the store: it is replaced whole, never
// modified, so one atomic load gives a consistent pair.
type revState struct {
	rev        int64 // the last revision whose writes are committed and published
	compactRev int64 // the last scheduled compaction revision, -1 for none
}

// Store is the revisioned key-value state machine. Reads (Range, Rev,
// CompactRev, HashKV, Events) may run from any goroutine, concurrently with
// each other and with the apply goroutine; writes go through Write and must
// come from one goroutine at a time.
type Store struct {
	eng   *storage.Engine
	db    *pebble.DB
	opts  Options
	state atomic.Pointer[revState]
	comp  *compactor
	// views keeps the views of finished reads for the next reads at the
	// same state; unwatch stops it from following the engine's generation.
	views   viewPool
	unwatch func()
	// filter holds the keys that have a version (see keyFilter). Only
	// the apply goroutine replaces it (Restore), with no Write open.
	filter *keyFilter

	chunkEvents int // events per compaction batch
}

// Open loads the store kept in eng: its current revision and compaction
// state. A physical compaction that a crash or Close interrupted resumes in
// the background, and the key filter (see keyFilter) is built there. A new
// store is at revision 1 and has never been compacted (CompactRev is -1).
func Open(eng *storage.Engine, opts Options) (*Store, error) {
	s := &Store{eng: eng, db: eng.DB(), opts: opts, chunkEvents: compactChunkEvents}
	rev, err := readMeta(eng, metaRev, 1)
	if err != nil {
		return nil, err
	}
	scheduled, err := readMeta(eng, metaCompactScheduled, -1)
	if err != nil {
		return nil, err
	}
	finished, err := readMeta(eng, metaCompactFinished, -1)
	if err != nil {
		return nil, err
	}
	s.state.Store(&revState{rev: rev, compactRev: scheduled})
	s.unwatch = eng.WatchGeneration(func() { s.views.drop(false) })
	s.comp = startCompactor(s, finished)
	if scheduled > finished {
		s.comp.schedule(scheduled, nil)
	}
	s.filter = newKeyFilter(s)
	return s, nil
}

func readMeta(eng *storage.Engine, key []byte, def int64) (int64, error) {
	v, err := eng.Get(key)
	if errors.Is(err, storage.ErrNotFound) {
		return def, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mvcc: read meta %q: %w", key, err)
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("mvcc: meta %q is %d bytes, want 8", key, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func (s *Store) logger() *slog.Logger {
	if s.opts.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.opts.Logger
}

// Rev returns the current revision: that of the last published write.
func (s *Store) Rev() int64 { return s.state.Load().rev }

// CompactRev returns the revision of the last compaction, -1 if the store
// has never been compacted (as etcd reports it). Reads below it fail with
// ErrCompacted, even while its physical removal still runs.
func (s *Store) CompactRev() int64 { return s.state.Load().compactRev }

// Close stops the background compaction and the key filter's builder,
// waiting for them; an unfinished compaction resumes at the next Open.
// Close does not close the engine.
func (s *Store) Close() error {
	s.filter.stop()
	s.comp.stop()
	s.unwatch()
	s.views.drop(true)
	return nil
}

// openView returns a view over the published state and that state; the
// caller gives it back with closeView. The iterator is created after the
// state is loaded, so every write at or below st.rev is in it; and it is
// only used if the compaction revision did not change meanwhile, so the
// background compaction (which starts only after a new compaction revision
// is published) cannot have removed anything a read at or above
// st.compactRev needs. A view reused from the pool was opened the same way
// at the same state (see viewPool).
func (s *Store) openView() (*view, *revState, error) {
	for {
		st := s.state.Load()
		gen := s.eng.Generation()
		if v := s.views.get(st, gen); v != nil {
			return v, st, nil
		}
		it, err := s.db.NewIter(&keysIterOptions)
		if err != nil {
			return nil, nil, fmt.Errorf("mvcc: open iterator: %w", err)
		}
		if s.state.Load().compactRev == st.compactRev {
			return &view{it: it, st: st, gen: gen}, st, nil
		}
		it.Close()
	}
}

// closeView gives back a view from openView: it is kept for the next read
// if the state it was opened at is still the published one.
func (s *Store) closeView(v *view) { s.views.put(v, s.state.Load(), s.eng.Generation()) }

func (v *view) close() { v.it.Close() }

// Range reads keys as etcd's Range does, honouring every option of the
// request (serializable is the caller's business). The response header
// carries only the revision: the store's current revision, whatever
// revision was read. It returns ErrCompacted for a revision below the
// compaction revision and ErrFutureRev for one above the current revision;
// 0 or a negative revision reads the current one. Safe for concurrent use.
//
// etcd's behaviours that may surprise, reproduced on purpose:
//   - Count is the number of keys in the range at that revision, before
//     the min/max mod/create revision filters and the limit.
//   - A sort target other than KEY with sort_order NONE sorts ascending, but
//     the limit (plus one, to set More) is taken in key order first: with
//     limit 1 and target MOD, the result is the smaller mod revision of the
//     first two keys, not of the whole range. With an explicit order, the
//     whole range is sorted before the limit.
//   - keys_only results carry lease 0 unless sorted by VALUE (etcd answers
//     them from its index, which has no lease).
func (s *Store) Range(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	v, st, err := s.openView()
	if err != nil {
		return nil, err
	}
	defer s.closeView(v)
	return v.rangeReq(r, st.rev, st.compactRev)
}

// RangePage is Range for a caller that pages through a range and has no use
// for its total: with a limit and key order it stops reading at the limit,
// so Count holds only the keys it read (len(Kvs), one more when More is
// set). Paging n keys then costs O(n) key visits, not O(n²/limit). Safe for
// concurrent use, as Range.
func (s *Store) RangePage(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	v, st, err := s.openView()
	if err != nil {
		return nil, err
	}
	defer s.closeView(v)
	return v.rangeCounted(r, st.rev, st.compactRev, false)
}

// Defragment gives back the disk space of the history compaction removed,
// online: reads and writes go on meanwhile (see storage.Engine.Defragment,
// which it calls, for what it does and returns). Call it after a
// compaction's removal is done (the channel Compact returns is closed):
// until then the removed versions are still being deleted. Safe for
// concurrent use.
func (s *Store) Defragment(ctx context.Context) error {
	// Pooled views would keep the replaced tables on disk until the
	// engine's generation changes; let them go now.
	s.views.drop(false)
	return s.eng.Defragment(ctx)
}
