// Package lockelect serves etcd's v3lockpb.Lock and v3electionpb.Election
// gRPC services on top of the public etcd v3 API.
//
// Neither service has state of its own. Every call becomes ordinary KV,
// Watch and Lease requests, made through a *clientv3.Client that the member
// dials to itself, so locks and elections are plain keys that any etcd client
// can read, watch, and contend for: a lock taken here excludes a lock taken
// with clientv3's concurrency.Mutex or etcdctl on the same name, and the other
// way round. Every cairn member serves both services, and their JSON gateway,
// on each client URL (internal/embed), backed by a client that dials the
// member over a unix socket in its data directory.
//
// # Keys
//
// A lock or election called N is the set of keys under the prefix "N/". A
// caller with lease L owns the key "N/<L in lowercase hex>", attached to L,
// and the owner of the key with the smallest create revision under the prefix
// holds the lock or leads the election. Callers queue in create-revision
// order: each waiter watches only its immediate predecessor (the newest key
// older than its own), so a release wakes one waiter, not all of them. A
// request with lease 0 gets a fresh lease with a 60 s TTL that nobody keeps
// alive, as in etcd.
//
// Calls with the same lease share one key: locking twice with one lease is a
// single acquisition, and campaigning again with another value proclaims it.
//
// # Lock
//
// Lock creates the caller's key (or finds it) and answers once the key is the
// oldest under the prefix. The answer's key is what Unlock takes; its create
// revision is a fencing token that grows with every grant. Unlock deletes the
// given key, whatever it is, and never fails for a missing key. A Lock that
// fails while waiting (the caller went away, a watch broke) deletes its key
// unless the key has been replaced since.
//
// # The lease-alive guarantee
//
// A lock is granted, and a campaign won, only at a revision at which the
// caller's key exists with the create revision it was queued with. The grant
// comes from one linearizable read that sees both the caller's key and no
// older key under the prefix, and the answer's header carries that read's
// revision (or, uncontended, the revision of the transaction that created the
// key and saw no older one). A key exists only while its lease is alive, so a
// lease that expired or was revoked while its owner waited yields an error,
// never a grant: "mutex: session is expired" for Lock and "election: not
// leader" for Campaign. The waiter watches its own key as well as its
// predecessor, so it gives up as soon as its key is gone rather than after the
// whole queue ahead of it has drained.
//
// Why: a waiter that trusted only the deletion of its predecessors would
// answer "granted" for a key that had long since expired with its lease,
// while a later caller legitimately held the lock: two holders at once. That
// is etcd issue #11456, found by Jepsen; etcd's Lock now re-reads its key
// before answering, and its Campaign still does not. Nothing can stop a lease
// from expiring right after the grant, which is why holders should guard
// their writes with the fencing token (compare the key's create revision in a
// transaction) rather than trust the answer alone.
//
// # Election
//
// Campaign queues like Lock, with the caller's value as the key's value, and
// answers with a LeaderKey (name, key, create revision, lease). Proclaim
// replaces the leader's value and Resign deletes the leader key, both only if
// the key still has the LeaderKey's create revision; Proclaim answers
// "election: not leader" otherwise, Resign answers success either way.
// Leader returns the oldest key under the prefix or "election: no leader".
// Observe streams the leader key's value each time it is set, starting with
// the current leader (or the first key created when there is none), and moves
// on to the next leader when the current one's key is deleted.
//
// # Errors
//
// Errors of the KV and Lease calls underneath are returned as clientv3 gives
// them, which is what etcd does, so a caller gets etcd's status for each:
// for instance "etcdserver: requested lease not found" (gRPC code Unknown)
// for a lease that does not exist. The services' own errors carry etcd's
// text. Unlike etcd, Observe ends with the error when its watch breaks
// (etcd ends the stream with no error), and it recovers from a compaction
// under its watch by reading the leader again.
//
// The caller's auth token, the CN of its verified client certificate
// (CallerCNKey, set by the member's API layer) and require-leader metadata
// are passed on to the calls underneath, so they run with the caller's
// permissions, as etcd's in-process client does.
package lockelect
