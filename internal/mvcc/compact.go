package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// Compact applies a CompactionRequest: from now on reads below the revision
// fail with ErrCompacted, and a background goroutine removes what only such
// reads could see. The returned channel closes when that removal is done.
// It returns ErrCompacted (and a channel that closes once every earlier
// compaction is physically done, as etcd does) when the revision is not
// above the current compaction revision, and ErrFutureRev when it is above
// the current revision.
func (w *Write) Compact(r *pb.CompactionRequest) (*pb.CompactionResponse, <-chan struct{}, error) {
	rev := r.Revision
	if rev <= w.compactRev {
		if w.compacted {
			ch := make(chan struct{})
			w.waiters = append(w.waiters, ch)
			return nil, ch, ErrCompacted
		}
		return nil, w.s.comp.barrier(w.compactRev), ErrCompacted
	}
	if rev > w.rev {
		return nil, nil, ErrFutureRev
	}
	// The hash at rev over what the previous compaction left: see
	// keepCompactionHashes.
	w.b.Set(hashMetaKey(metaHashPending, rev), encodeInt64(w.compactRev), nil)
	w.compactRev, w.compacted = rev, true
	w.b.Set(metaCompactScheduled, encodeInt64(rev), nil)
	ch := make(chan struct{})
	w.waiters = append(w.waiters, ch)
	return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: w.rev}}, ch, nil
}

// compactChunkEvents is how many events one compaction batch removes, so that no
// batch grows with the history and an interrupted compaction loses little.
var compactChunkEvents = 1000 // a var for tests; each Store copies it at Open

// compactHook, when set (by tests), runs before each physical compaction.
var compactHook func()

var errStopped = errors.New("mvcc: store closed")

// compactor owns the goroutine that physically removes compacted history.
type compactor struct {
	s    *Store
	wake chan struct{} // capacity 1: a pending wake-up
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu struct {
		sync.Mutex
		target   int64 // highest compaction revision scheduled
		finished int64 // highest compaction revision physically done
		failed   error // set when a compaction failed; it is not retried
		waiters  []compactWaiter
	}
}

type compactWaiter struct {
	rev int64
	ch  chan struct{}
}

func startCompactor(s *Store, finished int64) *compactor {
	c := &compactor{s: s, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	c.mu.target, c.mu.finished = finished, finished
	go c.run()
	return c
}

// schedule asks for the history below rev to be removed and closes each of
// chans when it is.
func (c *compactor) schedule(rev int64, chans []chan struct{}) {
	c.mu.Lock()
	if rev > c.mu.target {
		c.mu.target = rev
	}
	for _, ch := range chans {
		c.mu.waiters = append(c.mu.waiters, compactWaiter{rev: rev, ch: ch})
	}
	c.releaseLocked()
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// barrier returns a channel that closes once the compaction at rev is
// physically done.
func (c *compactor) barrier(rev int64) <-chan struct{} {
	ch := make(chan struct{})
	c.mu.Lock()
	c.mu.waiters = append(c.mu.waiters, compactWaiter{rev: rev, ch: ch})
	c.releaseLocked()
	c.mu.Unlock()
	return ch
}

// releaseLocked closes the channels of the waiters whose compaction is done.
func (c *compactor) releaseLocked() {
	kept := c.mu.waiters[:0]
	for _, w := range c.mu.waiters {
		if w.rev <= c.mu.finished {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	c.mu.waiters = kept
}

// stop ends the goroutine and waits for it. Waiters still pending are left
// open: their compaction did not finish, and resumes at the next Open.
func (c *compactor) stop() {
	c.once.Do(func() { close(c.quit) })
	<-c.done
}

func (c *compactor) run() {
	defer close(c.done)
	for {
		select {
		case <-c.quit:
			return
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			target, finished, failed := c.mu.target, c.mu.finished, c.mu.failed
			c.mu.Unlock()
			if target <= finished || failed != nil {
				break
			}
			err := c.s.compactTo(target, c.quit)
			if errors.Is(err, errStopped) {
				return
			}
			c.mu.Lock()
			if err != nil {
				c.mu.failed = err
				c.s.logger().Error("mvcc: compaction failed; it resumes at the next restart",
					"revision", target, "error", err)
			} else {
				c.mu.finished = target
				c.releaseLocked()
			}
			c.mu.Unlock()
		}
	}
}

// compactTo removes, chunk by chunk, every event below rev and every version
// that only reads below rev could see: for each key, all versions older than
// its newest one at or below rev, and that one too if it is a tombstone.
//
// The event log says which keys have such versions: a key has versions to
// remove only if it changed since the previous compaction, and then it has
// an event at or below rev. A key's older versions are all removed when its first
// event is met, including the one an earlier compaction kept (whose event is
// gone). Each chunk is one batch that removes some events together with the
// versions of their keys, so an interrupted run leaves a consistent store
// and the next run picks up at the first remaining event; the last batch
// records rev as the finished compaction.
//
// It runs concurrently with the apply goroutine and readers: the apply
// goroutine only adds versions above the current revision (never touched
// here), and readers at or above rev never look past a key's newest version
// at or below rev, which is kept unless it is a tombstone (and a key whose
// newest version is a tombstone reads as absent either way).
func (s *Store) compactTo(rev int64, quit <-chan struct{}) error {
	if compactHook != nil {
		compactHook()
	}
	if err := s.keepCompactionHashes(); err != nil {
		return err
	}
	from := []byte{storage.PrefixEvents}
	for {
		next, done, err := s.compactChunk(rev, from)
		if err != nil {
			return err
		}
		from = next
		if done {
			return nil
		}
		select {
		case <-quit:
			return errStopped
		default:
		}
	}
}

// compactChunk compacts the keys of up to chunkEvents events from the
// event key from on, and returns where the next chunk starts.
func (s *Store) compactChunk(rev int64, from []byte) (next []byte, done bool, err error) {
	evStart := []byte{storage.PrefixEvents}
	// Events at rev itself stay (a watch may start at the compaction
	// revision) but are visited too: a key deleted exactly at rev has no
	// other event that would lead here.
	evKeep := eventKey(nil, rev, 0)
	evIt, err := s.db.NewIter(&pebble.IterOptions{LowerBound: from, UpperBound: eventKey(nil, rev+1, 0)})
	if err != nil {
		return nil, false, fmt.Errorf("mvcc: compaction: %w", err)
	}
	defer evIt.Close()
	kIt, err := s.db.NewIter(&keysIterOptions)
	if err != nil {
		return nil, false, fmt.Errorf("mvcc: compaction: %w", err)
	}
	kv := &view{it: kIt}
	defer kv.close()

	b := s.db.NewBatch()
	defer b.Close()
	seen := make(map[string]struct{})
	var last []byte
	n := 0
	valid := evIt.First()
	for ; valid && n < s.chunkEvents; valid = evIt.Next() {
		val, err := evIt.ValueAndErr()
		if err != nil {
			return nil, false, fmt.Errorf("mvcc: compaction: %w", err)
		}
		if len(val) < 1 {
			return nil, false, fmt.Errorf("%w: empty event", errCorruptKey)
		}
		key := val[1:]
		if _, ok := seen[string(key)]; !ok {
			seen[string(key)] = struct{}{}
			if err := compactKey(kv, b, key, rev); err != nil {
				return nil, false, err
			}
		}
		last = append(last[:0], evIt.Key()...)
		n++
	}
	if err := evIt.Error(); err != nil {
		return nil, false, fmt.Errorf("mvcc: compaction: %w", err)
	}
	if end := append(last, 0); n > 0 {
		if bytes.Compare(end, evKeep) > 0 {
			end = evKeep
		}
		if err := b.DeleteRange(evStart, end, nil); err != nil {
			return nil, false, err
		}
	}
	if !valid {
		if err := b.Set(metaCompactFinished, encodeInt64(rev), nil); err != nil {
			return nil, false, err
		}
	}
	// No sync: losing this batch in a crash only means redoing it, since
	// the finished revision is in it too.
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, false, fmt.Errorf("mvcc: compaction: %w", err)
	}
	return append(last, 0), !valid, nil
}

// compactKey adds to b the deletion of every version of key that a
// compaction at rev removes.
func compactKey(v *view, b *pebble.Batch, key []byte, rev int64) error {
	v.prefix = keyPrefix(v.prefix[:0], key)
	v.seekBuf = seekAt(v.seekBuf[:0], v.prefix, rev)
	valid := v.it.SeekGE(v.seekBuf)
	if !valid || !bytes.HasPrefix(v.it.Key(), v.prefix) {
		return v.it.Error() // nothing at or below rev: already compacted
	}
	var ver version
	if err := v.decodeCurrent(&ver); err != nil {
		return err
	}
	if !ver.tombstone {
		valid = v.it.Next() // keep the newest; remove the rest
	}
	for ; valid && bytes.HasPrefix(v.it.Key(), v.prefix); valid = v.it.Next() {
		if err := b.Delete(v.it.Key(), nil); err != nil {
			return err
		}
	}
	return v.it.Error()
}

// pendingWaiters returns the revisions still waited on (for tests).
func (c *compactor) pendingWaiters() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var revs []int64
	for _, w := range c.mu.waiters {
		revs = append(revs, w.rev)
	}
	return revs
}
