// Package server runs a cairn member: it opens the member's engine, the
// state machine (mvcc, lease) and the raft node (raftnode), and connects
// them. It holds no request logic of its own beyond routing: the api calls
// it, it turns each write into a raft proposal and each linearizable read
// into a read-index round, and the state machine does the work.
//
// # Components
//
// Server wires components, each an unexported type that owns one concern,
// in files named for it; Server's own methods are the API the api package
// calls, the apply loop, and the wiring between components.
//
//   - identity (bootstrap.go): the member and cluster IDs and the seed,
//     which New reads back or bootstraps once.
//   - applyState, with applyGroup (apply.go): the apply loop's bookkeeping
//     and its three steps, buildBatch, commitBatch and afterCommit; the
//     flat switch applyRequest routes each committed request.
//   - request.go: the request path every API call shares: readStore for
//     reads, proposed, propose and await for writes, fillHeader.
//   - waitRegistry (wait.go): proposers waiting for their results.
//   - readIndexer (read.go): linearizable reads batched into read-index
//     rounds.
//   - appliedIndex (applied.go): the applied index and those waiting for
//     it.
//   - leaseKeeper (lease.go, lease_peer.go, apply_lease.go): the lessor,
//     its role, its expiry loop and the forwarding to the leader.
//   - memberList (members.go): the applied member list, for readers.
//   - reconfig (cluster.go, publish.go): membership changes proposed with
//     etcd's checks, promotions forwarded to the leader, and this member's
//     attributes published; apply_member.go applies the changes.
//   - peerSet (peers.go): the peer transport and the peers it knows;
//     PeerHandler serves the peer endpoints.
//   - leaderTracker (leader.go): leadership as raft reports it, and why a
//     request timed out.
//   - alarmSet (alarm.go) and quota (quota.go): raised alarms, and the
//     backend quota with this member's NOSPACE alarm: the accounted size,
//     the read-only mode of a full device, and the keeper goroutine that
//     raises the alarm and clears it again under 80% of the quota.
//   - autoCompactor (compactor.go): auto-compaction.
//   - versionKeeper (version.go): the cluster version and the downgrade
//     job (replicated; Downgrade in downgrade.go), and the leader's monitor
//     that decides the cluster version from the members' server versions
//     (asked over the peer network, version_peer.go) and, with
//     AutoPromoteLearners, promotes caught-up learners (autopromote.go).
//   - corruptChecker (corrupt.go): the corruption checks that compare the
//     members' HashKV (at start, periodically, at compaction revisions)
//     and raise CORRUPT; see Corruption below.
//   - forceNewCluster (forcenew.go): ForceNewCluster's rewrite of the log
//     before raft starts.
//   - lifecycle (lifecycle.go): the member's goroutines, the stop signal
//     and the guard that keeps requests off a closed engine.
//   - metrics (metrics.go, metrics_etcd.go): etcd's member metrics, the
//     late-heartbeat watch around the transport and the live-key count;
//     and the watch hub (watch.go, internal/watch).
//   - authority (auth.go, apply_auth.go): the auth store of internal/auth,
//     the token provider and the bcrypt slots; see Auth below.
//
// # Writes
//
// A write (Put, DeleteRange, a Txn that writes, Compact, Alarm, a lease
// grant, revoke or checkpoint, a member's published attributes) is
// marshaled as an etcdserverpb.InternalRaftRequest with a unique ID in its
// header and proposed; the caller waits on a channel registered under that
// ID until the apply loop answers, the request timeout passes
// (ErrTimeout), the caller's context ends (ErrCanceled) or the member
// stops (ErrStopped).
// Before proposing, a write that adds data (a put, a txn that puts, a
// lease grant) is refused if it would take the engine past
// QuotaBackendBytes or the engine's device is full (ErrNoSpace; the first
// refusal also raises the NOSPACE alarm through raft, which clears itself
// once the member is back under 80% of the quota: see quota), and any
// write if applying lags committing by more than 5000 entries
// (ErrTooManyRequests) or if it is larger than MaxRequestBytes
// (ErrRequestTooLarge).
//
// # Space
//
// The engine is opened with the quota (which sizes its memtables and
// logs), the member's logger and quota.onBackgroundError: a flush or
// compaction that fails for a full device puts the member in read-only
// mode locally and raises its NOSPACE alarm; a background job (flush,
// compaction) that fails for another cause (EIO) stops the member with the
// error.
// Defragment
// (Maintenance.Defragment) compacts the whole engine online and measures
// it afresh, so the alarm can clear itself right after. A full device at
// New is fatal: storage.Open returns ErrNoSpace naming the directory and
// the remedy, and the process must exit (the failed open stays parked).
//
// # The apply loop
//
// One goroutine takes committed entries from the raft node in log order —
// everything the node has handed over since it last looked, up to 16
// Readys — and applies them into ONE storage batch through one mvcc.Write
// (group apply): buildBatch applies the entries, commitBatch commits and
// publishes the batch, afterCommit answers and follows up. Entries at or
// below the engine's applied index are skipped: after a restart raft
// replays from the applied index, and this check makes a double apply
// impossible even if it did not. The batch also
// carries the new applied index (and, for a conf change, the new raft
// ConfState and member list), is committed without fsync — the raft log is
// the durable record and replays anything a crash loses — and only then
// published to readers (Write.Done) and answered to the waiting proposers.
// A request's own error (mvcc's and the lessor's errors, ErrNoSpace while
// the NOSPACE alarm is raised, ErrUnsupportedRequest) goes to its
// proposer; any other failure (an undecodable entry, a storage error)
// stops the member rather than let it diverge.
//
// # Reads
//
// A serializable Range reads the store directly. A linearizable one joins
// the current read batch; one goroutine runs a read-index round per batch
// (raft confirms with a quorum that the leader is still the leader and
// returns its commit index; a follower asks the leader), waits until the
// apply loop has applied that index, and releases every read of the batch
// at once, so concurrent reads share one round. A member that knows no
// leader, or cannot reach a quorum, never answers a linearizable read from
// its possibly stale state: the round fails with ErrLeaderChanged when the
// leadership changes under it and ErrTimeout when no answer comes. A
// read-only Txn (mvcc.TxnReadOnly) is served the same way, from the store
// after a read-index round (none if every range in it is serializable),
// never through the log, as etcd serves it.
//
// Every response header carries the cluster ID, member ID, raft term and
// the store revision the response reflects.
//
// # Clusters
//
// Members talk over a PeerTransport (internal/transport, or a simulated
// network in tests), which PeerHandler serves on the peer listener together
// with GET /members (the cluster ID and member list, for a member joining
// with InitialClusterState "existing") and POST /members/promote/<id> (a
// promotion forwarded to the leader). The transport's peers follow the
// applied member list.
//
// Writes may go to any member: raft forwards a follower's proposal to the
// leader. While no leader is known, proposals wait (and time out with
// ErrTimeout or one of etcd's variants, see timeoutError); a proposal raft
// refuses outright (a leadership transfer in progress) fails with raft's
// ErrProposalDropped at once.
//
// Membership changes (MemberAdd, MemberRemove, MemberUpdate,
// MemberPromote) are raft ConfChange entries carrying the member; every
// member validates them against its applied member list in the apply loop
// (membership.Validate, etcd's checks and errors), so all accept or refuse
// the same ones. Before proposing, etcd's strict reconfiguration checks
// refuse changes that could cost the quorum (ErrNotEnoughStartedMembers,
// ErrUnhealthy), and a promotion needs the learner within 10% of the
// leader's log (ErrLearnerNotReady); only the leader knows that, so a
// follower forwards promotions to it. A member publishes its name and
// client URLs through raft once it runs (ClusterMemberAttrSet), as etcd
// does. A member that applies its own removal stops a second later with
// ErrRemoved; one that learns of it from a peer refusing it stops at once,
// and one whose data records its removal refuses to start.
//
// # Snapshots
//
// Every SnapshotCount applied entries the raft log is compacted, keeping
// SnapshotCatchUpEntries of it for followers that lag a little. One that
// lags further, or a new member, gets a snapshot of the leader's state
// (raftnode's package doc describes the stream and the atomic install).
// The apply loop installs it between two groups of entries: with readers
// of the store held off, mvcc.Store.Restore stops the background
// compaction, raftnode replaces the state (a protocol that a crash can
// interrupt anywhere: New finishes it before reading the engine), and the
// store, member list, removed IDs, alarms and leases are reloaded from the
// engine.
//
// # Backups
//
// Snapshot (Maintenance.Snapshot, `etcdctl snapshot save`) writes the
// replicated state, from a Pebble snapshot taken with readers of the store
// held off, as an etcd backend database (package etcdbackup) in a
// temporary file in the data directory, and streams it with its sha256
// appended, so etcdutl reads it. The stream holds the server's wait group,
// so Stop waits for it, and a Read once stopping has begun fails. Hash is
// a CRC-32 of the replicated state, comparable between cairn members.
// RestoreSnapshot (`cairn snapshot restore`) is offline and takes etcd's
// format (from cairn or etcd) or cairn's earlier one (raftnode's package
// doc), told apart by the first bytes: it checks the whole file, writes
// its records (an etcd file's converted by etcdbackup) into a new engine
// minus the old cluster's membership keys, then a new member list, IDs and
// seed derived as for a new cluster, and a raft log that starts after the
// backup's applied index (an etcd file's consistent index) at term 1, so
// New later restarts it like any existing data directory.
//
// # Lifecycle
//
// New bootstraps a new member (the founding members of a new cluster derive
// member and cluster IDs as etcd does, from the initial cluster and token;
// a joining member asks the running cluster) or restarts from an existing
// data directory, which keeps its identity and ignores the initial-cluster
// settings. Stop closes the stop channel (failing pending requests with
// ErrStopped), demotes the lessor, waits for the requests using the engine
// and admits no more, stops the transport and then the raft node, waits
// for every goroutine and closes the engine. A fatal error does the same
// in the background; Done reports the end and Err the cause.
//
// # Forced new cluster and corruption
//
// With ForceNewCluster, New on an existing data directory rewrites the raft
// log before raft starts (raftnode.ForceNewCluster): the entries after the
// commit index go, and committed removals of every other member are
// appended, which the apply loop applies like any conf change; the member
// then elects itself alone, keeping its IDs and its data.
//
// The corruption checks (corrupt.go's doc) ask peers for their HashKV
// over POST /members/hashkv on the peer listener. With a CORRUPT alarm
// raised, applyRequest refuses puts, deletes, txns, compactions and lease
// grants and revokes with ErrCorrupt on every member, as etcd's corrupt
// applier does; reads are served.
//
// # Leases
//
// The lessor (internal/lease) is replicated state like the store: the
// apply loop grants, revokes (deleting the lease's keys in one txn through
// the same mvcc.Write, so watchers see them at one revision) and
// checkpoints leases, and after every mvcc request hands the request's
// events to the lessor so puts attach keys and re-puts and deletes detach
// them — all in the entry's batch, with its applied index. mvcc's
// LeaseExists is the lessor's, so a put naming an absent lease fails with
// mvcc.ErrLeaseNotFound, as in etcd.
//
// Lease clocks run only on the leader. Its lessor becomes primary when
// the apply loop reaches the leader's first (empty) entry of its term,
// restarting every lease from its checkpointed remaining TTL (or its full
// TTL) plus the election timeout; it is demoted as soon as raft reports
// the leadership lost. A goroutine (leaseKeeper.run) proposes a
// LeaseRevoke for every expired lease and a LeaseCheckpoint for the
// remaining TTLs due every LeaseCheckpointInterval, so a new leader
// neither expires a lease early nor gives it its full TTL again.
// Keep-alives (LeaseRenew) and LeaseTimeToLive need the leader's clock: a
// follower forwards them to the leader over the peer network (POST
// /leases/renew, /leases/ttl, protobuf bodies), retrying while leadership
// moves until the request timeout, as etcd does. LeaseGrant picks an ID from the member's request ID
// generator when the client leaves it 0.
//
// # Auth
//
// Auth is etcd's, in the same places. The api puts each request's
// credentials (token, client certificate CN) into its context
// (WithCredentials); the server resolves them only when the request needs
// a user (authority.info): a simple token waits until this member has
// applied the entry that issued it, a JWT is verified, and with
// ClientCertAuth a request without a token runs as its certificate's CN
// (WithCertCredentials; an empty CN is a user nobody has, as in etcd).
//
//   - Reads (Range, a read-only Txn, LeaseTimeToLive with keys,
//     LeaseLeases) are checked before they read and refused with
//     auth.ErrAuthOldRevision if the auth revision moved while they ran.
//   - Writes carry the user and the auth revision in their request header
//     (propose stamps them); the apply loop checks them again against the
//     store as it is when the entry applies (checkEntry): role root for
//     the auth changes, UserList and RoleList; CanGetUser and CanGetRole;
//     key permissions for Put (and the keys of its lease, and prev_kv),
//     DeleteRange and every compare and op of a Txn, nested ones included;
//     write permission on a revoked lease's keys. A revision older than
//     the store's is auth.ErrAuthOldRevision, which clientv3 retries.
//   - The auth requests themselves go through raft and apply in the
//     entry's batch (the 'a' keyspace, see internal/auth), so the state
//     and the applied index land together; AuthStatus, UserGet and the
//     lists go through raft too, as in etcd, for a linearizable answer.
//   - Passwords are hashed (UserAdd, UserChangePassword) and checked
//     (Authenticate) on the request path, never in apply, in at most
//     GOMAXPROCS-1 goroutines at once (bcryptSlots), so an Authenticate
//     flood queues there and leaves the other requests a core. Authenticate
//     proposes only the user and the token's random prefix; apply issues
//     the token, the same on every member.
//   - The leader revokes expired leases as root (asRoot), as etcd does.
//   - The store is reloaded from the engine after a snapshot install: the
//     checkpoint carries the 'a' keyspace.
//   - The audit log (Config.AuditLog, package audit; audit.go): every
//     member records each auth change it applies (applyAuth), so every
//     member's log holds them all; the member that answers a request
//     refused for an auth reason records the refusal (checkedRead,
//     IsAdmin, RequireUser, WatchPermitted, Authenticate's password
//     check, checkLeaseAccess, and proposals refused by their
//     credentials or at apply).
//     Recording never waits for the disk.
//
// The api makes etcd's API-layer checks (role root for membership
// changes and most maintenance, a user for Status and MemberList) with
// IsAdmin and RequireUser.
//
// # Watch
//
// After committing and publishing each apply batch, the apply loop hands
// its events to the member's watch hub (WatchHub; internal/watch), which
// never blocks it; an installed snapshot is a gap the hub's watchers catch
// up over from the store.
package server
