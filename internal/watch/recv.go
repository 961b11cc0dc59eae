package watch

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Recv returns the stream's next responses, in order, waiting until there
// are some. The caller must send them all, in order, before calling Recv
// again: ordering across Recv calls relies on it, and Recv reuses the
// returned slice. Only one goroutine may call Recv.
//
// Recv is also where the stream's slow watchers catch up: when watchers
// are unsynced it reads the next batch of events from storage for them,
// after handing out what the dispatcher queued, so catch-up costs the
// stream's own goroutine and a bounded batch of memory, and one slow
// stream delays no other. It sends the periodic progress notifications
// too, so they come in order with events.
//
// It fails with ctx's error, ErrStreamClosed, ErrHubClosed, or a storage
// error (after which the stream should be ended: the client resumes on a
// new one).
func (s *Stream) Recv(ctx context.Context) ([]Response, error) {
	out, err := s.recv(ctx)
	if err != nil && s.tick != nil {
		s.tick.Stop()
		s.tick = nil
	}
	return out, err
}

func (s *Stream) recv(ctx context.Context) ([]Response, error) {
	for {
		out, catch, wantTick, err := s.pop()
		if err != nil {
			return nil, err
		}
		if catch.from > 0 {
			more, err := s.catchUp(catch)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
		}
		if len(out) > 0 {
			return out, nil
		}
		if catch.from > 0 {
			// Catch-up advanced without anything to send; keep going.
			continue
		}
		if wantTick && s.tick == nil {
			s.tick = s.h.opts.Clock.NewTicker(jitter(s.h.opts.ProgressNotifyInterval))
		} else if !wantTick && s.tick != nil {
			s.tick.Stop()
			s.tick = nil
		}
		var tickc <-chan time.Time
		if s.tick != nil {
			tickc = s.tick.C()
		}
		select {
		case <-s.wakec:
		case <-tickc:
			s.progressTick()
		case <-s.closec:
			return nil, ErrStreamClosed
		case <-s.h.done:
			return nil, ErrHubClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// catchRound is the unsynced watchers one Recv call catches up: those
// listed when the queue was emptied (so none has queued responses that
// its catch-up responses could overtake).
type catchRound struct {
	round int64      // the watchers' round mark
	from  int64      // lowest next among them; 0: none
	ws    []*watcher // the watchers
}

// pop takes the queued responses and lists the unsynced watchers ready to
// catch up: those whose created response has been handed out (their
// events must not overtake it).
func (s *Stream) pop() (out []Response, catch catchRound, wantTick bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil, catch, false, ErrStreamClosed
	}
	for i, m := range s.mu.meta {
		if m.ctrl {
			s.release()
		}
		// A canceled watcher's responses queued before its cancel still go
		// out: a progress notification queued between them counts them
		// as delivered.
		if m.w != nil {
			if s.mu.queue[i].Created {
				m.w.announced = true
			} else {
				m.w.eventsSince = true
			}
		}
	}
	if len(s.mu.queue) > 0 {
		out = s.mu.queue
		clear(s.mu.meta)
		// The caller is done with the slice Recv returned last time.
		clear(s.mu.spare)
		s.mu.queue, s.mu.meta, s.mu.spare, s.mu.bytes = s.mu.spare[:0], s.mu.meta[:0], out, 0
		if cap(out) > 1024 {
			// Let a burst's buffers go.
			s.mu.queue, s.mu.meta, s.mu.spare = nil, nil, nil
		}
	}
	s.mu.round++
	catch.round = s.mu.round
	s.mu.unsynced.each(func(w *watcher) {
		if w.announced {
			w.round = catch.round
			catch.ws = append(catch.ws, w)
			if catch.from == 0 || w.next < catch.from {
				catch.from = w.next
			}
		}
	})
	return out, catch, s.mu.nProgress > 0, nil
}

// catchUp reads the next batch of events from storage for the unsynced
// watchers ws and returns their responses; watchers that reach the
// dispatched revision rejoin the synced set.
func (s *Stream) catchUp(c catchRound) ([]Response, error) {
	h := s.h
	from := c.from
	var out []Response
	if from <= h.dispatched.Load() {
		s.mu.Lock()
		limit := s.mu.catchLimit
		s.mu.Unlock()
		evs, next, _, err := h.src.Events(from, limit)
		if err != nil {
			if compactRev := h.src.CompactRev(); from < compactRev {
				return s.compacted(c.ws, compactRev), nil
			}
			return nil, fmt.Errorf("watch: read events from revision %d: %w", from, err)
		}
		out = s.deliverBatch(c.round, evs, next)
	}
	s.rejoin()
	return out, nil
}

// compacted ends the watchers that need revisions below compactRev with
// etcd's compaction response; the others retry on the next round.
func (s *Stream) compacted(ws []*watcher, compactRev int64) []Response {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Response
	for _, w := range ws {
		if w.state != stateUnsynced || w.next >= compactRev {
			continue
		}
		s.mu.unsynced.remove(w)
		if w.progress {
			s.mu.nProgress--
		}
		w.state = stateCompacted
		h.watchers.Add(-1)
		out = append(out, Response{WatchID: w.id, Canceled: true, CompactRevision: compactRev, Fragment: w.fragment})
	}
	s.answerProgressLocked(h, false)
	return out
}

// catchResp is a catch-up response being built for one watcher.
type catchResp struct {
	w     *watcher
	evs   []*mvccpb.Event
	bytes int
	rev   int64 // revision of the last event added
}

// deliverBatch turns events read from storage (whole revisions, up to
// next-1) into responses for the round's watchers that are still
// unsynced, one
// response per watcher holding whole revisions, split at revision
// boundaries past MaxResponseBytes.
func (s *Stream) deliverBatch(round int64, evs []*mvccpb.Event, next int64) []Response {
	maxBytes := s.h.opts.MaxResponseBytes
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil
	}
	total := 0
	var noPrev []*mvccpb.Event // copies without PrevKv, made once per event
	var out []Response
	cur := make(map[*watcher]*catchResp)
	var order []*catchResp
	for i, ev := range evs {
		rev := revOf(ev)
		total += eventBytes(ev, true)
		s.mu.unsynced.stab(ev.Kv.Key, func(w *watcher) {
			if w.round != round || rev < w.next || !w.wants(ev) {
				return
			}
			e := ev
			if !w.prevKV && ev.PrevKv != nil {
				if noPrev == nil {
					noPrev = make([]*mvccpb.Event, len(evs))
				}
				if noPrev[i] == nil {
					noPrev[i] = withoutPrev(ev)
				}
				e = noPrev[i]
			}
			c := cur[w]
			if c == nil {
				c = &catchResp{w: w}
				cur[w] = c
				order = append(order, c)
			} else if c.rev != rev && c.bytes >= maxBytes {
				// Full, and at a revision boundary: hand it out and start anew.
				out = append(out, Response{WatchID: w.id, Revision: c.rev, Events: c.evs, Fragment: w.fragment})
				*c = catchResp{w: w}
			}
			c.evs = append(c.evs, e)
			c.bytes += eventBytes(e, w.prevKV)
			c.rev = rev
		})
	}
	for _, c := range order {
		if len(c.evs) > 0 {
			out = append(out, Response{WatchID: c.w.id, Revision: next - 1, Events: c.evs, Fragment: c.w.fragment})
			c.w.eventsSince = true
		}
	}
	s.mu.unsynced.each(func(w *watcher) {
		if w.round == round {
			w.next = max(w.next, next)
		}
	})
	if len(out) > 0 {
		s.mu.floor = max(s.mu.floor, next-1)
	}
	// Aim the next read at CatchUpBytes whatever the events' size.
	if len(evs) > 0 {
		avg := max(total/len(evs), 1)
		s.mu.catchLimit = min(max(s.h.opts.CatchUpBytes/avg, 1), 4096)
	}
	return out
}

// rejoin moves the unsynced watchers that have caught up with the
// dispatcher back to the synced set: from then on the dispatcher queues
// their events, starting at next.
func (s *Stream) rejoin() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	d := h.dispatched.Load()
	var back []*watcher
	s.mu.unsynced.each(func(w *watcher) {
		if w.announced && w.next > d {
			back = append(back, w)
		}
	})
	for _, w := range back {
		s.mu.unsynced.remove(w)
		w.state = stateSynced
		h.mu.synced.add(w)
	}
	if len(back) > 0 {
		s.answerProgressLocked(h, false)
	}
}

// progressTick queues a progress notification for every synced watcher
// with progress_notify that got no events since the last tick, as etcd
// does.
func (s *Stream) progressTick() {
	h := s.h
	// With h.mu held the dispatcher is between writes: everything queued
	// is at or below d, so a notification at d does not go back behind an
	// event already queued.
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	d := h.dispatched.Load()
	for _, w := range s.mu.watchers {
		if !w.progress || !w.live() {
			continue
		}
		if !w.eventsSince && w.state == stateSynced && d >= w.startRev && d >= s.mu.floor {
			s.enqueueLocked(queued{bytes: queuedOverhead, resp: Response{WatchID: w.id, Revision: d}})
		}
		w.eventsSince = false
	}
}
