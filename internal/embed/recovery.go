package embed

import (
	"time"

	"github.com/cairn-db/cairn/internal/server"
)

// RecoveryOptions are etcd's settings for recovering from a lost quorum and
// for detecting corruption. The zero value turns all of them off.
type RecoveryOptions struct {
	// ForceNewCluster restarts a member on an existing data directory as
	// the only member of its cluster, with all its data
	// (--force-new-cluster). It is ignored on a new data directory.
	ForceNewCluster bool
	// CorruptCheckTime, if positive, is how often the leader compares its
	// HashKV with the followers' and raises the CORRUPT alarm on a mismatch
	// (--corrupt-check-time).
	CorruptCheckTime time.Duration
	// CompactHashCheckTime, if positive, is how often the leader compares
	// the hashes the members keep at compaction revisions
	// (--compact-hash-check-time).
	CompactHashCheckTime time.Duration
	// InitialCorruptCheck makes a restarting member compare its HashKV with
	// its peers' before it serves and refuse to start on a mismatch (the
	// feature gate InitialCorruptCheck).
	InitialCorruptCheck bool
}

func (o RecoveryOptions) apply(c *server.Config) {
	c.ForceNewCluster = o.ForceNewCluster
	c.CorruptCheckTime = o.CorruptCheckTime
	c.CompactHashCheckTime = o.CompactHashCheckTime
	c.InitialCorruptCheck = o.InitialCorruptCheck
}
