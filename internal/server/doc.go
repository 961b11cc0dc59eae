// Package server runs a cairn member: it opens the member's engine, the
// state machine (mvcc) and the raft node (raftnode), and connects them.
// It holds no request logic of its own beyond routing: the api calls it,
// it turns each write into a raft proposal and each linearizable read into
// a read-index round, and the state machine does the work.
//
// # Writes
//
// A write (Put, DeleteRange, Txn, Compact, Alarm) is marshaled as an
// etcdserverpb.InternalRaftRequest with a unique ID in its header and
// proposed; the caller waits on a channel registered under that ID until
// the apply loop answers, the request timeout passes (ErrTimeout), the
// caller's context ends (ErrCanceled) or the member stops (ErrStopped).
// Before proposing, a request is refused if applying lags committing by
// more than 5000 entries (ErrTooManyRequests), if it is larger than
// MaxRequestBytes (ErrRequestTooLarge), or, for writes that add data, if
// the engine has outgrown QuotaBackendBytes (ErrNoSpace; the first refusal
// also raises the NOSPACE alarm through raft).
//
// # The apply loop
//
// One goroutine takes committed entries from the raft node in log order —
// everything the node has handed over since it last looked, up to 16
// Readys — and applies them into ONE storage batch through one mvcc.Write
// (group apply). Entries at or below the engine's applied index are
// skipped: after a restart raft replays from the applied index, and this
// check makes a double apply impossible even if it did not. The batch also
// carries the new applied index (and, for a conf change, the new raft
// ConfState and member list), is committed without fsync — the raft log is
// the durable record and replays anything a crash loses — and only then
// published to readers (Write.Done) and answered to the waiting proposers.
// A request's own error (mvcc's errors, ErrNoSpace while the NOSPACE alarm
// is raised) goes to its proposer; any other failure (an undecodable entry,
// a storage error) stops the member rather than let it diverge.
//
// # Reads
//
// A serializable Range reads the store directly. A linearizable one joins
// the current read batch; one goroutine runs a read-index round per batch
// (raft confirms leadership and returns the commit index), waits until the
// apply loop has applied that index, and releases every read of the batch
// at once, so concurrent reads share one round.
//
// Every response header carries the cluster ID, member ID, raft term and
// the store revision the response reflects.
//
// # Lifecycle
//
// New bootstraps a one-member cluster in a new data directory (member and
// cluster IDs derived as etcd derives them) or restarts from an existing
// one. Stop closes the stop channel (failing pending requests with
// ErrStopped), stops the raft node, waits for every goroutine and closes
// the engine. A fatal error does the same in the background; Done reports
// the end and Err the cause.
//
// # Not yet
//
// Multi-member clusters (the peer transport, snapshots, membership
// changes through the API) are not wired in: New refuses an initial cluster
// of more than one member. Read-only transactions go through raft (correct,
// but not as cheap as etcd's read-index path), pending a read-side
// transaction in mvcc. Leases and auth are absent: a Put with a lease fails
// with mvcc.ErrLeaseNotFound.
package server
