// Package watch is cairn's watch hub: it registers watchers, fans the
// store's events out to them, catches slow ones up from storage and sends
// progress notifications, with every guarantee of etcd's watch API. It
// knows nothing of gRPC: internal/api turns a Stream into etcd's Watch
// service.
//
// # Data flow
//
//	apply goroutine ── Notify(rev, events) ──▶ pending entries (nmu)
//	                                              │ dispatcher goroutine
//	                                              ▼
//	                        synced index (h.mu) ──▶ stream queues (s.mu)
//	                                              │ Recv, on the stream's goroutine
//	        store.Events (catch-up, unsynced) ────▶ responses, in order ──▶ client
//
// Notify appends the write's events to a list and wakes the dispatcher: it
// never blocks and does no matching, so the apply loop never waits for
// watchers. The dispatcher takes one revision at a time, finds the synced
// watchers whose range holds each event in the index (single keys in a map,
// ranges and from-key watches in an interval treap: no scan of all
// watchers), and appends one response per matched watcher to that
// watcher's stream queue. Responses point at the write's own events (one
// shared copy without PrevKv is made per revision for watchers that did not
// ask for prev_kv); no event is copied per watcher.
//
// Each stream is served by its own goroutine calling Recv, which hands out
// the queue and, for the stream's unsynced watchers, reads the next batch
// of events from storage (Store.Events) and builds their responses itself.
//
// # Synced and unsynced watchers
//
// A watcher is in exactly one of two sets. Synced (the hub's index): every
// event of revision next or later will be queued by the dispatcher.
// Unsynced (its stream's index): its stream's Recv reads its events from
// storage from next on. A watcher starts unsynced when its start revision
// is at or below the revision the hub has dispatched, synced otherwise
// (start 0 means the store's revision plus one).
//
// A synced watcher becomes unsynced when its stream's queue is full
// (Options.MaxStreamBytes): instead of queuing the revision, the
// dispatcher moves it to its stream's unsynced set with next set to that
// revision, and goes on. It rejoins the synced set when Recv has caught it
// up past the dispatched revision. So a slow consumer costs a bounded
// queue and its own storage reads, the dispatcher never waits for it, and
// other streams never notice it. If the dispatcher itself falls more than
// Options.MaxPendingBytes behind Notify, Notify stops keeping events and
// records a gap instead; at the gap every synced watcher becomes unsynced
// and reads those revisions from storage. A store restored from a
// snapshot is the same gap.
//
// # Invariants
//
//   - Ordered and unique: a watcher's responses leave through its stream
//     queue or through Recv's catch-up, never both for the same revision:
//     next only grows, the dispatcher skips revisions below a watcher's
//     next, and catch-up only serves watchers that had nothing queued when
//     Recv emptied the queue (a catch-up "round"), so its responses cannot
//     overtake queued ones. Recv's caller sends each batch before the next.
//   - Atomic: all of a watcher's events of one revision are in one
//     response; the dispatcher works a revision at a time and catch-up
//     reads and cuts only at revision boundaries (a response may hold
//     several whole revisions). Only the API's fragmentation, which the
//     client asked for, splits a response, and clients reassemble it.
//   - Reliable: an event is never dropped. A watcher is ended only by its
//     client (cancel, stream close) or by compaction, which it is told
//     about: a watcher that needs a revision below the compaction revision
//     gets etcd's response (compact_revision set, canceled) and keeps its
//     id until the client cancels it, as in etcd.
//   - Bookmarks: a response's revision R means every event of that
//     watcher up to R is delivered by the end of it. A progress
//     notification for the whole stream (watch id -1) is queued only when
//     every live watcher of the stream is synced, and carries the
//     dispatched revision D: every event up to D is already queued ahead
//     of it. It also waits until D reaches the store's revision at the
//     time of the request (so it covers every write acknowledged before
//     it) and every header revision the stream has sent (clientv3 resumes
//     after the last header revision it saw, so headers must not go
//     back). A periodic progress notification (progress_notify) goes to a
//     synced watcher that got no events during the interval, as etcd does.
//   - A created response precedes every other response of its watcher.
//
// # Memory bounds
//
// Per stream: the queue (MaxStreamBytes, plus one response when empty),
// at most 64 unsent control responses (past that, Watch, Cancel and
// RequestProgress wait, pushing back on a client that sends requests but
// reads no responses), and one catch-up batch (CatchUpBytes, the read size
// adapted to the events' average size; one revision is never split, so a
// single huge revision is read whole). Hub-wide: the pending entries
// (MaxPendingBytes). Events are shared with the store's write, never
// copied per watcher.
//
// # Locks
//
// nmu guards the pending entries only. h.mu guards the synced index and
// the dispatched revision; a stream's s.mu guards its queue, ids and
// unsynced index. Lock order: h.mu before s.mu. Storage is read with no
// lock held.
package watch
