package watch

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairn-db/cairn/internal/clock"
)

// EventSource is the store the hub watches; *mvcc.Store provides it. Its
// methods are called from many goroutines at once.
type EventSource interface {
	// Events returns the events of revisions from on, whole revisions,
	// stopping once limit or more are read (0: no limit); next is where to
	// continue. It fails, with any error, when from is below the
	// compaction revision.
	Events(from int64, limit int) (evs []*mvccpb.Event, next int64, rev int64, err error)
	// Rev is the current (published) revision.
	Rev() int64
	// CompactRev is the compaction revision: Events below it fail.
	CompactRev() int64
}

// Defaults of Options.
const (
	// DefaultProgressNotifyInterval is etcd's --watch-progress-notify-interval.
	DefaultProgressNotifyInterval = 10 * time.Minute
	// MinProgressNotifyInterval is the shortest interval honoured, as in
	// etcd.
	MinProgressNotifyInterval = 100 * time.Millisecond
	// DefaultMaxStreamBytes bounds the responses queued for one stream.
	DefaultMaxStreamBytes = 512 << 10
	// DefaultMaxPendingBytes bounds the notified events not yet dispatched.
	DefaultMaxPendingBytes = 64 << 20
	// DefaultCatchUpBytes is the target size of one catch-up read.
	DefaultCatchUpBytes = 1 << 20
	// DefaultMaxResponseBytes is the size up to which a catch-up response
	// keeps adding revisions.
	DefaultMaxResponseBytes = 1 << 20
	// ctrlSlots bounds the control responses (created, canceled, progress
	// on request) a stream holds unsent; past it, requests wait, which
	// pushes back on a client that sends requests but reads no responses.
	ctrlSlots = 64
	// queuedOverhead is what a queued response costs beyond its events.
	queuedOverhead = 64
)

// Options configure a Hub. Zero fields take the defaults.
type Options struct {
	// ProgressNotifyInterval is how often watchers created with
	// progress_notify that got no events are sent a progress notification.
	// Values below MinProgressNotifyInterval are raised to it.
	ProgressNotifyInterval time.Duration
	// MaxStreamBytes bounds the estimated size of the responses queued for
	// a stream. An event that does not fit moves its watcher to catch-up
	// from storage instead: memory stays bounded and nothing is lost.
	MaxStreamBytes int
	// MaxPendingBytes bounds the events notified but not yet dispatched.
	// Past it, the revisions are not kept: every synced watcher catches up
	// from storage over them.
	MaxPendingBytes int
	// CatchUpBytes is the target size of one read from storage by a
	// catching-up stream.
	CatchUpBytes int
	// MaxResponseBytes is the size up to which one catch-up response keeps
	// adding revisions (a single revision is never split).
	MaxResponseBytes int
	// Clock makes the tickers that drive progress notifications; nil
	// means the wall clock.
	Clock clock.Clock
	// Logger receives the hub's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the hub's gauges (etcd's names: watch streams,
	// watchers, slow watchers); nil registers none.
	Registerer prometheus.Registerer
}

func (o Options) withDefaults() Options {
	if o.ProgressNotifyInterval <= 0 {
		o.ProgressNotifyInterval = DefaultProgressNotifyInterval
	}
	o.ProgressNotifyInterval = max(o.ProgressNotifyInterval, MinProgressNotifyInterval)
	if o.MaxStreamBytes <= 0 {
		o.MaxStreamBytes = DefaultMaxStreamBytes
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if o.CatchUpBytes <= 0 {
		o.CatchUpBytes = DefaultCatchUpBytes
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// entry is one Notify call waiting for the dispatcher: the events of
// revisions (from, rev], or, for a gap, only the fact that those revisions
// happened (their events are in storage).
type entry struct {
	rev   int64
	evs   []*mvccpb.Event
	gap   bool
	bytes int
}

// Hub fans the store's events out to watchers. See the package doc.
type Hub struct {
	src  EventSource
	opts Options

	// nmu guards the entries Notify hands to the dispatcher. It is held
	// only to append or take them, so Notify never waits long.
	nmu struct {
		sync.Mutex
		pending      []entry
		pendingBytes int
		rev          int64 // revision of the last Notify
	}
	wake chan struct{}

	mu struct {
		sync.Mutex
		synced  index
		waiters map[*Stream]struct{} // streams with a progress request to answer
		touched []touched            // dispatcher scratch
		subset  []int                // dispatcher scratch
	}
	// dispatched is the revision up to which every event has been queued
	// for every synced watcher. Written with mu held.
	dispatched atomic.Int64

	// For metrics: open streams and live watchers.
	streams, watchers atomic.Int64

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// touched is a watcher matched by the revision being dispatched and the
// indexes (in the revision's events) of the events it matched.
type touched struct {
	w       *watcher
	matched []int32
}

// New returns a hub over src, at src's current revision, and starts its
// dispatcher. The caller must call Notify after every write to src (see
// Notify) and Close when done.
func New(src EventSource, opts Options) *Hub {
	h := &Hub{src: src, opts: opts.withDefaults(), wake: make(chan struct{}, 1), done: make(chan struct{})}
	rev := src.Rev()
	h.nmu.rev = rev
	h.dispatched.Store(rev)
	h.mu.synced = newIndex()
	h.mu.waiters = make(map[*Stream]struct{})
	h.registerMetrics()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.dispatchLoop()
	}()
	return h
}

// Notify hands the hub the events of one write: evs are the events of the
// revisions after the previous Notify up to rev, in order (mvcc's
// Write.Events, with rev its Write.Rev). Call it from the apply goroutine
// after Write.Done, for every write, in order (a write that changed
// nothing may be skipped or notified with no events). The hub keeps evs
// and shares them with watchers: they must not change afterwards.
//
// Notify never blocks and does O(len(evs)) work: the matching happens on
// the hub's dispatcher goroutine. If the dispatcher falls far behind,
// Notify stops keeping events (their revisions are then read back from
// storage), so memory stays bounded. A store that jumps ahead without
// events (restored from a snapshot) is notified with Notify(newRev, nil):
// every watcher then catches up from storage.
func (h *Hub) Notify(rev int64, evs []*mvccpb.Event) {
	bytes := 0
	for _, ev := range evs {
		bytes += eventBytes(ev, true)
	}
	h.nmu.Lock()
	prev := h.nmu.rev
	if rev <= prev {
		h.nmu.Unlock()
		return
	}
	h.nmu.rev = rev
	whole := len(evs) > 0 && revOf(evs[0]) == prev+1 && revOf(evs[len(evs)-1]) == rev
	over := h.nmu.pendingBytes+bytes > h.opts.MaxPendingBytes && len(h.nmu.pending) > 0
	switch n := len(h.nmu.pending); {
	case whole && !over:
		h.nmu.pending = append(h.nmu.pending, entry{rev: rev, evs: evs, bytes: bytes})
		h.nmu.pendingBytes += bytes
	case n > 0 && h.nmu.pending[n-1].gap:
		h.nmu.pending[n-1].rev = rev
	default:
		h.nmu.pending = append(h.nmu.pending, entry{rev: rev, gap: true})
	}
	h.nmu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Close stops the dispatcher; every stream's Recv then fails with
// ErrHubClosed. Safe to call more than once.
func (h *Hub) Close() {
	h.closeOnce.Do(func() { close(h.done) })
	h.wg.Wait()
}

// Rev returns the revision up to which events have been dispatched.
func (h *Hub) Rev() int64 { return h.dispatched.Load() }

func (h *Hub) dispatchLoop() {
	for {
		select {
		case <-h.wake:
		case <-h.done:
			return
		}
		for {
			h.nmu.Lock()
			batch := h.nmu.pending
			h.nmu.pending, h.nmu.pendingBytes = nil, 0
			h.nmu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i := range batch {
				h.mu.Lock()
				if batch[i].gap {
					h.dispatchGapLocked(batch[i].rev)
				} else {
					h.dispatchEntryLocked(batch[i])
				}
				h.answerWaitersLocked()
				h.mu.Unlock()
				batch[i] = entry{}
			}
		}
	}
}

// dispatchEntryLocked queues the entry's events, one revision at a time,
// for the synced watchers they match.
func (h *Hub) dispatchEntryLocked(e entry) {
	evs := e.evs
	for len(evs) > 0 {
		rev := revOf(evs[0])
		n := 1
		for n < len(evs) && revOf(evs[n]) == rev {
			n++
		}
		h.dispatchRevLocked(rev, evs[:n])
		evs = evs[n:]
	}
	h.dispatched.Store(e.rev)
}

// dispatchRevLocked queues the events of one revision. All of a watcher's
// events of the revision go into one response, which is what makes
// delivery atomic per revision.
func (h *Hub) dispatchRevLocked(rev int64, evs []*mvccpb.Event) {
	t := h.mu.touched[:0]
	for i, ev := range evs {
		h.mu.synced.stab(ev.Kv.Key, func(w *watcher) {
			if rev < w.next {
				return
			}
			if w.stamp != rev {
				w.stamp, w.touch = rev, len(t)
				if len(t) < cap(t) {
					t = t[:len(t)+1]
					t[len(t)-1].w = w
					t[len(t)-1].matched = t[len(t)-1].matched[:0]
				} else {
					t = append(t, touched{w: w})
				}
			}
			t[w.touch].matched = append(t[w.touch].matched, int32(i))
		})
	}
	h.mu.touched = t
	if len(t) == 0 {
		return
	}
	// Watchers without prev_kv share one copy of the events without it.
	var noPrev []*mvccpb.Event
	// Watchers of one stream tend to come together: lock each stream once
	// per run of them.
	var locked *Stream
	defer func() {
		if locked != nil {
			locked.mu.Unlock()
		}
	}()
	for i := range t {
		w := t[i].w
		if w.s != locked {
			if locked != nil {
				locked.mu.Unlock()
			}
			locked = w.s
			locked.mu.Lock()
		}
		src := evs
		if !w.prevKV {
			if noPrev == nil {
				noPrev = stripPrev(evs)
			}
			src = noPrev
		}
		out := src
		if len(t[i].matched) != len(evs) || w.noPut || w.noDelete {
			out = nil
			for _, j := range t[i].matched {
				if w.wants(src[j]) {
					out = append(out, src[j])
				}
			}
		}
		w.s.deliverLocked(h, w, rev, out)
		t[i].w = nil
	}
}

// stripPrev returns evs as watchers without prev_kv see them, sharing evs
// itself when no event has a previous value.
func stripPrev(evs []*mvccpb.Event) []*mvccpb.Event {
	for i, ev := range evs {
		if ev.PrevKv != nil {
			out := make([]*mvccpb.Event, len(evs))
			copy(out, evs[:i])
			for j := i; j < len(evs); j++ {
				out[j] = withoutPrev(evs[j])
			}
			return out
		}
	}
	return evs
}

// dispatchGapLocked handles revisions whose events the hub did not keep:
// every synced watcher moves to catch-up from storage, from the first
// revision it has not had.
func (h *Hub) dispatchGapLocked(rev int64) {
	from := h.dispatched.Load() + 1
	var moved []*watcher
	h.mu.synced.each(func(w *watcher) { moved = append(moved, w) })
	h.mu.synced = newIndex()
	for _, w := range moved {
		w.s.mu.Lock()
		w.next = max(w.next, from)
		w.state = stateUnsynced
		w.s.mu.unsynced.add(w)
		w.s.mu.Unlock()
		w.s.signal()
	}
	h.dispatched.Store(rev)
}

// answerWaitersLocked answers the progress requests that can now be.
func (h *Hub) answerWaitersLocked() {
	for s := range h.mu.waiters {
		s.mu.Lock()
		s.answerProgressLocked(h, false)
		s.mu.Unlock()
	}
}

// Stats is a count of the hub's streams and watchers.
type Stats struct {
	Streams int
	// Watchers counts the live watchers (not canceled or compacted).
	Watchers int
	// Slow counts the live watchers catching up from storage.
	Slow int
}

// Stats returns the hub's current counts. Safe for concurrent use.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	synced := h.mu.synced.len()
	n := int(h.watchers.Load())
	h.mu.Unlock()
	return Stats{Streams: int(h.streams.Load()), Watchers: n, Slow: max(n-synced, 0)}
}

// registerMetrics exports Stats under etcd's metric names, so dashboards
// built for etcd show them. A second hub on the same registry (several
// members in one test process) is not registered.
func (h *Hub) registerMetrics() {
	reg := h.opts.Registerer
	if reg == nil {
		return
	}
	gauge := func(name, help string, v func(Stats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd_debugging", Subsystem: "mvcc", Name: name, Help: help,
		}, func() float64 { return float64(v(h.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		gauge("watch_stream_total", "Total number of watch streams.", func(s Stats) int { return s.Streams }),
		gauge("watcher_total", "Total number of watchers.", func(s Stats) int { return s.Watchers }),
		gauge("slow_watcher_total", "Total number of unsynced slow watchers.", func(s Stats) int { return s.Slow }),
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				h.opts.Logger.Warn("watch metrics are not registered", "error", err)
			}
		}
	}
}
