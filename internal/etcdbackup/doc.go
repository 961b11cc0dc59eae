// Package etcdbackup converts between cairn's replicated state and etcd's
// backup file, in both directions, so that a cluster can move from etcd
// to cairn and back with every revision kept.
//
// # The file
//
// An etcd backup is etcd's backend database: a bbolt file (read and
// written here with go.etcd.io/bbolt, etcd's own engine). `etcdctl
// snapshot save` (Maintenance.Snapshot) appends the sha256 of the
// database to it; a member's member/snap/db has no digest. A file carries
// one exactly when its size is a multiple of 512 plus 32, since a bbolt
// file is a whole number of pages: that is how etcdutl tells them apart,
// and so does Read. Read checks, before it hands out anything: the
// digest if there is one, that the file holds every page the database
// says it has (a truncated file), and bbolt's consistency check of every
// page. A damaged file gives an error wrapping ErrCorrupt.
//
// # Buckets and what becomes of them
//
//	etcd bucket       key → value                          cairn state
//	key               main '_' sub ['t'] → mvccpb.KeyValue   mvcc versions, event log
//	meta              consistent_index, term               the restored raft log's start
//	                  scheduledCompactRev,                 mvcc compaction scheduled / finished
//	                  finishedCompactRev (main '_' 0)
//	                  storageVersion                       written "3.7.0"; read for Info
//	lease             ID (8 bytes BE) → leasepb.Lease       lease records (TTL, remaining TTL)
//	members,          the old cluster's members            dropped: a restore makes a new
//	members_removed,                                       cluster (etcdutl does the same)
//	cluster
//	alarm             raised alarms                        dropped (they describe the old disks)
//	auth              authEnabled (1 byte), authRevision   auth enabled flag, auth revision
//	authUsers         name → authpb.User                   users (bcrypt hash as it is)
//	authRoles         name → authpb.Role                   roles and their permissions
//
// In the key bucket, the 17-byte key is the version's revision (8-byte
// big-endian main revision, '_', 8-byte big-endian sub revision) with a
// trailing 't' for a deletion, whose value holds the key alone. Both
// stores keep the same versions after a compaction (every version at or
// above it, and each key's newest version below it unless that is a
// deletion), so the versions map one to one, with their create and mod
// revisions, versions and leases. The event log cairn keeps beside its
// versions is rebuilt from the versions at or above the finished
// compaction, as cairn's own compaction leaves it. The store's revision
// is, as etcd computes it on start, the newest version's main revision,
// or the compaction revision if that is higher (its deletions compacted
// away). Keys are attached to the lease their newest version names, when
// that lease exists, as etcd reattaches them on start.
//
// Users and roles move as they are, both ways: cairn's auth keyspace
// (package auth) holds the same authpb messages etcd's buckets do, so a
// user's bcrypt hash, options and roles and a role's permissions are
// copied, and a password authenticates on either side. A file whose auth
// revision is 0 or missing restores at 1, where cairn's revisions start.
// A file with auth enabled restores with auth enabled.
//
// # Writing
//
// Create builds the database from a consistent view of the state in a
// temporary directory on the data disk: the versions, read in cairn's
// key-major order, are first sorted by revision in a scratch Pebble store
// (bbolt filled in random order rewrites a page per entry), then appended
// to bbolt, a bounded number of writes per transaction. The database is
// streamed with its digest appended, and the directory is removed as soon
// as the file is open, so no backup is ever held in memory and nothing
// stays behind; a directory a crash left is removed by the next Create.
// The file's consistent index and term are the view's applied raft index
// and term; etcdutl's restore replaces both, and the members, when it
// builds a data directory from it.
//
// # Reading
//
// Read hands out cairn's records as it walks the key bucket; memory grows
// only with the live keys (the count etcdutl reports, and the leased keys
// to attach), as etcd's own restore of its index does.
package etcdbackup
