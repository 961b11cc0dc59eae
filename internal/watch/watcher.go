package watch

import (
	"bytes"
	"errors"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Errors with etcd's text, which clients see as a watch's cancel reason.
var (
	// ErrEmptyWatcherRange is returned for a range whose end is not above its
	// key.
	ErrEmptyWatcherRange = errors.New("mvcc: watcher range is empty")
	// ErrWatcherDuplicateID is returned for a client-chosen watch id the
	// stream already has.
	ErrWatcherDuplicateID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
	// ErrWatcherNotExist is returned when canceling an id the stream does
	// not have.
	ErrWatcherNotExist = errors.New("mvcc: watcher does not exist")
)

// Errors of the hub itself.
var (
	// ErrStreamClosed is returned by a Stream's methods after Close.
	ErrStreamClosed = errors.New("watch: stream closed")
	// ErrHubClosed is returned by Recv once the hub is closed.
	ErrHubClosed = errors.New("watch: hub closed")
	// ErrNegativeRevision is returned for a negative start revision, which
	// the API answers as etcd does before it reaches the hub.
	ErrNegativeRevision = errors.New("watch: negative start revision")
)

// InvalidWatchID is the watch id of responses that belong to no single
// watcher: a refused creation and a progress notification for the whole
// stream (clientv3 broadcasts the latter to all its watchers).
const InvalidWatchID = -1

// WatchRequest creates a watcher. Key alone watches one key; Key and End
// the range [Key, End); Key and FromKey every key from Key on.
type WatchRequest struct {
	// ID is the client's watch id; 0 lets the stream choose the lowest
	// free id (etcd's ids start at 0 too).
	ID      int64
	Key     []byte
	End     []byte
	FromKey bool
	// StartRev is the first revision to deliver (inclusive); 0 means the
	// revision after the current one.
	StartRev int64
	// PrevKV asks for the key's previous value in every event.
	PrevKV bool
	// NoPut and NoDelete drop events of that type.
	NoPut, NoDelete bool
	// ProgressNotify asks for a progress notification after every
	// interval in which the watcher got no events.
	ProgressNotify bool
	// Fragment lets large responses be split (see Response.Fragment).
	Fragment bool
}

// Response is one message for the client of a stream, in stream order.
// Its Events are shared with other watchers and with the store's write:
// they must be treated as read-only.
type Response struct {
	WatchID int64
	// Revision is the response header's revision. For events: every event
	// of this watcher up to Revision has now been delivered. For a
	// progress notification (no events, not created or canceled): every
	// event up to Revision of the watcher (or, for InvalidWatchID, of every
	// watcher of the stream) has been delivered. 0 in a compaction
	// response, as in etcd.
	Revision        int64
	Created         bool
	Canceled        bool
	CompactRevision int64
	CancelReason    string
	// Events are whole revisions, oldest first, each revision's events in
	// the order they were made.
	Events []*mvccpb.Event
	// Fragment reports that the watcher asked for fragmentation, so the
	// transport may split a response that is too large to send whole.
	Fragment bool
}

type watcherState uint8

const (
	// synced: in the hub's index; the dispatcher queues every event from
	// next on.
	stateSynced watcherState = iota
	// unsynced: in its stream's index; the stream's consumer reads its
	// events from storage, from next on, until it catches up.
	stateUnsynced
	// compacted: needed a compacted revision; told so, receives nothing,
	// keeps its id until canceled (as in etcd).
	stateCompacted
	// canceled: removed from its stream.
	stateCanceled
)

// watcher is one watch on a stream.
type watcher struct {
	s        *Stream
	id       int64
	key, end []byte // end nil: one key (or from key when fromKey)
	fromKey  bool
	prevKV   bool
	noPut    bool
	noDelete bool
	progress bool
	fragment bool
	startRev int64

	// pos is the watcher's place in its index's set; guarded by the lock
	// of the index that holds it.
	pos int

	// state and next are written with s.mu held, and also h.mu while the
	// watcher is synced (or becomes or stops being synced); so the
	// dispatcher, which holds h.mu, may read them for synced watchers.
	state watcherState
	// next is the first revision not yet delivered (queued or handed to
	// the consumer): every event of this watcher below next is out.
	next int64

	// Guarded by s.mu.
	announced   bool  // its created response was handed to the consumer
	eventsSince bool  // events were handed out since the last progress tick
	round       int64 // catch-up round it was last listed in

	// Dispatcher scratch, guarded by h.mu.
	stamp int64 // revision being dispatched when touch is valid
	touch int   // index into the hub's touched list
}

func (w *watcher) isKey() bool { return w.end == nil && !w.fromKey }

// rangeEnd is the end of the watcher's interval, nil for +∞.
func (w *watcher) rangeEnd() []byte {
	if w.fromKey {
		return nil
	}
	return w.end
}

func (w *watcher) contains(key []byte) bool {
	if w.isKey() {
		return bytes.Equal(key, w.key)
	}
	return bytes.Compare(key, w.key) >= 0 && keyBelowEnd(key, w.rangeEnd())
}

// wants reports whether the watcher's filters keep ev.
func (w *watcher) wants(ev *mvccpb.Event) bool {
	if ev.Type == mvccpb.Event_PUT {
		return !w.noPut
	}
	return !w.noDelete
}

func (w *watcher) live() bool { return w.state == stateSynced || w.state == stateUnsynced }

// eventBytes estimates an event's encoded size, for memory accounting.
func eventBytes(ev *mvccpb.Event, withPrev bool) int {
	n := 24 + len(ev.Kv.Key) + len(ev.Kv.Value)
	if withPrev && ev.PrevKv != nil {
		n += 24 + len(ev.PrevKv.Key) + len(ev.PrevKv.Value)
	}
	return n
}

// withoutPrev returns ev as a watcher without prev_kv sees it.
func withoutPrev(ev *mvccpb.Event) *mvccpb.Event {
	if ev.PrevKv == nil {
		return ev
	}
	return &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
}

// revOf is the revision of an event (a delete carries it as ModRevision).
func revOf(ev *mvccpb.Event) int64 { return ev.Kv.ModRevision }
