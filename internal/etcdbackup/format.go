package etcdbackup

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Bucket names of etcd's backend (go.etcd.io/etcd/server/v3/storage/schema).
var (
	bucketKey            = []byte("key")
	bucketMeta           = []byte("meta")
	bucketLease          = []byte("lease")
	bucketAlarm          = []byte("alarm")
	bucketCluster        = []byte("cluster")
	bucketMembers        = []byte("members")
	bucketMembersRemoved = []byte("members_removed")
	bucketAuth           = []byte("auth")
	bucketAuthUsers      = []byte("authUsers")
	bucketAuthRoles      = []byte("authRoles")

	// allBuckets are the buckets a file written here holds, all of
	// etcd's.
	allBuckets = [][]byte{bucketKey, bucketMeta, bucketLease, bucketAlarm, bucketCluster,
		bucketMembers, bucketMembersRemoved, bucketAuth, bucketAuthUsers, bucketAuthRoles}
)

// Keys of the meta and auth buckets.
var (
	metaConsistentIndex  = []byte("consistent_index")
	metaTerm             = []byte("term")
	metaScheduledCompact = []byte("scheduledCompactRev")
	metaFinishedCompact  = []byte("finishedCompactRev")
	metaStorageVersion   = []byte("storageVersion")
	authEnabled          = []byte("authEnabled")
	authRevision         = []byte("authRevision")
)

// storageVersion is the schema version written into the meta bucket: the
// etcd release whose API cairn serves. etcd 3.6 and later refuse a backend
// whose version they cannot detect.
const storageVersion = "3.7.0"

// A revision key of the key bucket: 8-byte big-endian main revision, '_',
// 8-byte big-endian sub revision, and for a deletion a trailing 't'.
const (
	revKeyLen       = 8 + 1 + 8
	markedRevKeyLen = revKeyLen + 1
	tombstoneMark   = 't'
)

// digestLen is the length of the sha256 digest etcd appends to a backup.
const digestLen = sha256.Size

// digestAlign: a backup with its digest is digestLen bytes longer than a
// multiple of it, because the bbolt file itself always is a multiple of
// its page size. etcdutl tells a file with a digest by its size alone.
const digestAlign = 512

// ErrCorrupt is returned (wrapped, with the reason) for a file that is
// truncated, altered, or not an etcd backend database.
var ErrCorrupt = errors.New("etcdbackup: snapshot file is corrupt")

func appendRevKey(dst []byte, main, sub int64, tombstone bool) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(main))
	dst = append(dst, '_')
	dst = binary.BigEndian.AppendUint64(dst, uint64(sub))
	if tombstone {
		dst = append(dst, tombstoneMark)
	}
	return dst
}

func parseRevKey(k []byte) (main, sub int64, tombstone bool, err error) {
	switch {
	case len(k) == markedRevKeyLen && k[revKeyLen] == tombstoneMark:
		tombstone = true
	case len(k) == revKeyLen:
	default:
		return 0, 0, false, fmt.Errorf("%w: key bucket holds a key of %d bytes (%x), not a revision", ErrCorrupt, len(k), k)
	}
	if k[8] != '_' {
		return 0, 0, false, fmt.Errorf("%w: key bucket holds %x, not a revision", ErrCorrupt, k)
	}
	return int64(binary.BigEndian.Uint64(k)), int64(binary.BigEndian.Uint64(k[9:])), tombstone, nil
}

// hasDigest reports whether a file of n bytes ends with a sha256 digest,
// the way etcdutl decides it.
func hasDigest(n int64) bool { return n%digestAlign == digestLen }

// boltMagic is the magic number of a bbolt meta page, which starts the
// file: a 16-byte page header, then the magic (native byte order, little
// endian on every platform etcd ships for).
const boltMagic = 0xED0CDAED

// IsDatabase reports whether head, the first bytes of a file, start like
// a bbolt database, the format of etcd's backups. It looks at the magic
// number only, to tell formats apart; Read checks the rest.
func IsDatabase(head []byte) bool {
	return len(head) >= 20 && binary.LittleEndian.Uint32(head[16:20]) == boltMagic
}
