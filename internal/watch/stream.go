package watch

import (
	"bytes"
	"context"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairn-db/cairn/internal/clock"
)

// Stream is one client's watch stream: many watchers, one ordered sequence
// of responses. Watch, Reject, Cancel and RequestProgress may be called
// from one goroutine (the one reading the client's requests) while another
// (the one sending responses) calls Recv; Close from either.
type Stream struct {
	h      *Hub
	ctrl   chan struct{} // control response slots: full while one is held
	wakec  chan struct{}
	closec chan struct{}

	mu struct {
		sync.Mutex
		closed   bool
		watchers map[int64]*watcher // every watcher with an id, compacted ones too
		nextID   int64
		unsynced index // watchers catching up from storage
		// queue holds the responses waiting for Recv, meta what the hub
		// needs to know of each; Recv hands queue itself out and takes
		// spare (the slice it handed out last time) as the next queue.
		queue []Response
		meta  []qmeta
		spare []Response
		bytes int // estimated size of queue
		// floor is the highest header revision handed out that progress
		// notifications must not go below: clientv3 resumes a watch after
		// the last header revision it saw, so headers must not go back.
		floor int64
		// progress request waiting to be answered (coalesced), and the
		// revision the answer must reach: the store's revision when asked.
		progressWanted bool
		progressTarget int64
		// progressBlocked is a watcher's future start revision the answer
		// waits for (reset when a watcher goes).
		progressBlocked int64
		nProgress       int   // live watchers with progress_notify
		catchLimit      int   // events per storage read, adapted to their size
		round           int64 // catch-up rounds so far (see catchRound)
	}

	// tick drives progress notifications; owned by the Recv goroutine.
	tick clock.Ticker
}

// queued is a response to queue.
type queued struct {
	resp  Response
	w     *watcher // the watcher an event or created response is for
	bytes int
	ctrl  bool // holds a control slot
}

// qmeta is what the hub remembers of a queued response.
type qmeta struct {
	w    *watcher
	ctrl bool
}

// NewStream returns a new stream on the hub.
func (h *Hub) NewStream() *Stream {
	s := &Stream{h: h, ctrl: make(chan struct{}, ctrlSlots), wakec: make(chan struct{}, 1), closec: make(chan struct{})}
	s.mu.watchers = make(map[int64]*watcher)
	s.mu.unsynced = newIndex()
	s.mu.catchLimit = 64
	h.streams.Add(1)
	return s
}

func (s *Stream) signal() {
	select {
	case s.wakec <- struct{}{}:
	default:
	}
}

// acquire takes a control slot, waiting while the consumer is behind.
func (s *Stream) acquire(ctx context.Context) error {
	select {
	case s.ctrl <- struct{}{}:
		return nil
	case <-s.closec:
		return ErrStreamClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Stream) release() { <-s.ctrl }

// enqueueLocked appends a response. Control responses hold a slot taken
// by acquire.
func (s *Stream) enqueueLocked(q queued) {
	s.mu.queue = append(s.mu.queue, q.resp)
	s.mu.meta = append(s.mu.meta, qmeta{w: q.w, ctrl: q.ctrl})
	s.mu.bytes += q.bytes
	if len(s.mu.queue) == 1 {
		s.signal()
	}
}

// Watch creates a watcher and queues its created response (or, if it is
// refused, a created-and-canceled response with watch id -1 and the
// reason, as etcd sends). It returns the watch id, or the refusal:
// ErrEmptyWatcherRange, ErrWatcherDuplicateID, ErrNegativeRevision. It
// waits only while the stream holds many unsent control responses, and
// fails with ctx's error or ErrStreamClosed.
//
// A watcher starting at or below the hub's dispatched revision first
// catches up from storage; one starting later (or at 0: after the current
// revision) is fed by the dispatcher from the start.
func (s *Stream) Watch(ctx context.Context, r WatchRequest) (int64, error) {
	var err error
	switch {
	case r.StartRev < 0:
		err = ErrNegativeRevision
	case !r.FromKey && len(r.End) > 0 && bytes.Compare(r.Key, r.End) >= 0:
		err = ErrEmptyWatcherRange
	}
	if err := s.acquire(ctx); err != nil {
		return InvalidWatchID, err
	}
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		s.release()
		return InvalidWatchID, ErrStreamClosed
	}
	cur := h.src.Rev()
	id := r.ID
	if err == nil {
		if id == 0 {
			for s.mu.watchers[s.mu.nextID] != nil {
				s.mu.nextID++
			}
			id = s.mu.nextID
			s.mu.nextID++
		} else if s.mu.watchers[id] != nil {
			err = ErrWatcherDuplicateID
		}
	}
	if err != nil {
		s.enqueueLocked(queued{ctrl: true, bytes: queuedOverhead, resp: Response{
			WatchID: InvalidWatchID, Created: true, Canceled: true, CancelReason: err.Error(), Revision: cur}})
		return InvalidWatchID, err
	}
	w := &watcher{
		s: s, id: id, key: r.Key, fromKey: r.FromKey, startRev: r.StartRev,
		prevKV: r.PrevKV, noPut: r.NoPut, noDelete: r.NoDelete, progress: r.ProgressNotify, fragment: r.Fragment,
		pos: -1,
	}
	if !r.FromKey && len(r.End) > 0 {
		w.end = r.End
	}
	w.next = r.StartRev
	if r.StartRev == 0 {
		w.next = cur + 1
	}
	if w.next > h.dispatched.Load() {
		// Every revision from next on is still to be dispatched.
		w.state = stateSynced
		h.mu.synced.add(w)
	} else {
		w.state = stateUnsynced
		s.mu.unsynced.add(w)
	}
	s.mu.watchers[id] = w
	h.watchers.Add(1)
	if w.progress {
		s.mu.nProgress++
	}
	s.mu.floor = max(s.mu.floor, cur)
	s.enqueueLocked(queued{ctrl: true, w: w, bytes: queuedOverhead, resp: Response{
		WatchID: id, Created: true, Revision: cur, Fragment: w.fragment}})
	return id, nil
}

// Reject queues a refused creation's response (watch id -1, created and
// canceled, with reason), for requests the caller refuses itself (etcd
// refuses a negative start revision and a permission failure this way).
func (s *Stream) Reject(ctx context.Context, reason string) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	cur := s.h.src.Rev()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		s.release()
		return ErrStreamClosed
	}
	s.enqueueLocked(queued{ctrl: true, bytes: queuedOverhead, resp: Response{
		WatchID: InvalidWatchID, Created: true, Canceled: true, CancelReason: reason, Revision: cur}})
	return nil
}

// Cancel removes watcher id and queues its canceled response, after the
// responses already queued for it. It returns ErrWatcherNotExist (and
// queues nothing, as etcd) for an unknown id.
func (s *Stream) Cancel(ctx context.Context, id int64) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.mu.watchers[id]
	if s.mu.closed || w == nil {
		s.release()
		if s.mu.closed {
			return ErrStreamClosed
		}
		return ErrWatcherNotExist
	}
	s.removeLocked(h, w)
	s.enqueueLocked(queued{ctrl: true, bytes: queuedOverhead, resp: Response{
		WatchID: id, Canceled: true, Revision: h.src.Rev()}})
	s.answerProgressLocked(h, false)
	return nil
}

// removeLocked takes w out of its index and the stream.
func (s *Stream) removeLocked(h *Hub, w *watcher) {
	switch w.state {
	case stateSynced:
		h.mu.synced.remove(w)
	case stateUnsynced:
		s.mu.unsynced.remove(w)
	}
	if w.live() {
		h.watchers.Add(-1)
		if w.progress {
			s.mu.nProgress--
		}
	}
	w.state = stateCanceled
	delete(s.mu.watchers, w.id)
	s.mu.progressBlocked = 0
}

// RequestProgress asks for a progress notification for the whole stream
// (watch id -1): once every watcher is synced and the hub has dispatched
// the store's revision as of now, a response with that revision is
// queued, after every event up to it. Requests made while one is waiting
// are answered by the same notification. A stream with no watchers gets
// none, as in etcd.
func (s *Stream) RequestProgress(ctx context.Context) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	h := s.h
	target := h.src.Rev()
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		s.release()
		return ErrStreamClosed
	}
	s.mu.progressWanted = true
	s.mu.progressTarget = max(s.mu.progressTarget, target)
	h.mu.waiters[s] = struct{}{}
	// Answered now, the response holds the slot like any control response;
	// a deferred answer is one per stream however many requests wait.
	if !s.answerProgressLocked(h, true) {
		s.release()
	}
	return nil
}

// answerProgressLocked queues the stream's progress notification if it is
// wanted and true now, holding a control slot if slot, and reports
// whether it queued one. h.mu and s.mu are held.
func (s *Stream) answerProgressLocked(h *Hub, slot bool) bool {
	if !s.mu.progressWanted {
		delete(h.mu.waiters, s)
		return false
	}
	d := h.dispatched.Load()
	if s.mu.closed || d < s.mu.progressTarget || d < s.mu.floor || d < s.mu.progressBlocked || s.mu.unsynced.len() > 0 {
		return false
	}
	live := 0
	for _, w := range s.mu.watchers {
		if !w.live() {
			continue
		}
		if d < w.startRev {
			// Waiting for a future start revision: no need to look again
			// before the hub gets there (the dispatcher asks after every
			// write).
			s.mu.progressBlocked = w.startRev
			return false
		}
		live++
	}
	s.mu.progressWanted, s.mu.progressTarget = false, 0
	delete(h.mu.waiters, s)
	if live == 0 {
		return false
	}
	s.enqueueLocked(queued{ctrl: slot, bytes: queuedOverhead, resp: Response{WatchID: InvalidWatchID, Revision: d}})
	return true
}

// deliverLocked queues a synced watcher's events of revision rev, or
// moves the watcher to catch-up when the stream's queue is full. Called by
// the dispatcher with h.mu and s.mu held.
func (s *Stream) deliverLocked(h *Hub, w *watcher, rev int64, evs []*mvccpb.Event) {
	if len(evs) == 0 {
		w.next = rev + 1
		return
	}
	n := queuedOverhead
	for _, ev := range evs {
		n += eventBytes(ev, w.prevKV)
	}
	if len(s.mu.queue) > 0 && s.mu.bytes+n > h.opts.MaxStreamBytes {
		// The consumer is behind: this watcher reads from storage from here
		// on, so the queue stays bounded and nothing is lost.
		h.mu.synced.remove(w)
		w.state = stateUnsynced
		w.next = rev
		s.mu.unsynced.add(w)
		return
	}
	w.next = rev + 1
	s.enqueueLocked(queued{w: w, bytes: n, resp: Response{WatchID: w.id, Revision: rev, Events: evs, Fragment: w.fragment}})
}

// Close removes every watcher of the stream and wakes Recv and waiting
// requests, which then fail with ErrStreamClosed. Safe to call more than
// once.
func (s *Stream) Close() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return
	}
	for _, w := range s.mu.watchers {
		s.removeLocked(h, w)
	}
	s.mu.closed = true
	s.mu.queue, s.mu.meta, s.mu.spare, s.mu.bytes = nil, nil, nil, 0
	delete(h.mu.waiters, s)
	close(s.closec)
	h.streams.Add(-1)
}
