// Package lease is cairn's lease state machine: leases with a TTL, the
// keys attached to them, their expiry and checkpoints. It knows nothing of
// raft or gRPC; the server drives it.
//
// # Two sides
//
// A lease's existence, TTL, checkpointed remaining TTL and attached keys
// are replicated state: every member changes them in the same way at the
// same raft index, from the apply goroutine, into the batch that carries
// that entry's mvcc writes and applied index (Grant, Revoke, Checkpoint,
// ApplyEvents). A lease's clock is not: only the leader's lessor (the
// primary, after Promote) runs clocks, renews leases on keep-alives (Renew,
// no raft), and decides when a lease has expired (Expired) or its
// remaining TTL is worth persisting (Checkpoints). Those decisions reach
// the state machine only as proposals — LeaseRevoke, LeaseCheckpoint —
// so every member deletes the same keys at the same revision.
//
// # Who calls what
//
// The apply goroutine, for each committed entry, in order:
//
//	LeaseGrant{ID, TTL}     ttl, err := l.Grant(b, ID, TTL)
//	LeaseRevoke{ID}         keys, err := l.Revoke(b, ID)
//	                        then w.Txn(DeleteTxn(keys)): ONE txn deleting
//	                        each key in that order (no keys: an empty txn,
//	                        which takes no revision)
//	LeaseCheckpoint{cps}    l.Checkpoint(b, cp.ID, cp.Remaining_TTL) each
//	every mvcc request      l.ApplyEvents(b, w.Events()[seen:]) right after
//	                        it (puts with a lease attach, re-puts with
//	                        another lease or none and deletes detach)
//	the term's first entry  l.Promote(electionTimeout) if this member leads
//
// mvcc's Options.LeaseExists is l.Exists, so a put naming a lease that does
// not exist fails before it writes. Demote is called when this member
// stops leading. The leader side (Renew, Expired, Checkpoints, Run) and
// the reads (Lookup, TimeToLive, Keys, Leases, Exists) are safe from any
// goroutine; Run is one goroutine the server owns, handing expired leases
// and due checkpoints to callbacks that propose them.
//
// # Invariants
//
//   - A key is attached to at most one lease: the one its current version
//     names. Attachments change only through ApplyEvents and Revoke, so
//     they follow the mvcc keyspace exactly.
//   - Revoke returns the attached keys sorted, so the deletes — and the
//     event log, and the hash — are the same on every member; they all
//     happen in one revision, so watchers see them atomically.
//   - On the primary every lease is in the expiry heap, keyed by its
//     deadline (or, once reported expired, by the time to report it again);
//     elsewhere every deadline is "forever" and the heaps are empty. Expiry
//     and checkpoints pop from heaps, so a tick costs O(k log n) for k due
//     leases, never a scan of all n.
//   - A revoked lease leaves nothing behind: its record, attachments, map
//     entry and heap slots go, and the map and heaps give memory back when
//     they fall well below their peak.
//   - A new leader restarts each clock from the checkpointed remaining TTL
//     (if any) plus the election timeout, so a lease neither expires early
//     nor silently regains its full TTL; a renewal that makes a checkpoint
//     stale clears it through raft (Renew's resetCheckpoint).
//
// # Persistence
//
// The package owns keyspace 'l' of the engine (see package storage):
//
//	'l' 'r' id        →  varint TTL, varint remaining TTL (0: none)
//	'l' 'k' id key    →  empty: key is attached to lease id
//
// id is the lease ID as 8 bytes big endian. The attachments of one lease
// are one contiguous span, in key order, so Revoke and TimeToLive read
// only that lease's keys and no in-memory index of keys is kept: memory
// grows with the number of leases, not of leased keys. Open (and Reload,
// after a snapshot) rebuilds the leases from the records, with stopped
// clocks until Promote. Because every change rides in the apply batch, a
// crash loses only changes raft replays.
//
// # Time
//
// Time comes from an injected clock.Clock (Options.Clock); deadlines are
// nanoseconds since the lessor opened. TTLs below Options.MinTTL (etcd's
// 1.5 election timeouts, rounded up to seconds) are raised to it; TTLs
// above MaxTTL are refused.
package lease
