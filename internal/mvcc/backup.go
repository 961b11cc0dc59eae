package mvcc

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cairn-db/cairn/internal/storage"
)

// StateStats gathers, from a member's replicated records (a backup file's,
// say) handed to Add in key order, what the mvcc keyspace says about them:
// the store's revision, its compaction revision and how many key versions
// (every revision of every key, tombstones included, as etcd's snapshot
// status counts its keys) it holds. The zero value is ready to use.
type StateStats struct {
	// Revision is the store's current revision (1 if the records hold
	// none, as a new store starts at 1).
	Revision int64
	// CompactRevision is the revision of the last finished compaction,
	// -1 for none.
	CompactRevision int64
	// Versions counts the stored versions of keys.
	Versions int64

	sawRev, sawCompact bool
}

// Add looks at one record.
func (st *StateStats) Add(k, v []byte) {
	if len(k) == 0 {
		return
	}
	switch {
	case k[0] == storage.PrefixKeys:
		st.Versions++
	case bytes.Equal(k, metaRev) && len(v) == 8:
		st.Revision, st.sawRev = int64(decodeUint64(v)), true
	case bytes.Equal(k, metaCompactFinished) && len(v) == 8:
		st.CompactRevision, st.sawCompact = int64(decodeUint64(v)), true
	}
}

// Finish fills in the defaults of what Add did not see.
func (st *StateStats) Finish() {
	if !st.sawRev {
		st.Revision = 1
	}
	if !st.sawCompact {
		st.CompactRevision = -1
	}
}

// RevisionIn returns the store's current revision as get (a point read of
// one consistent view of the engine, storage.ErrNotFound for a missing
// key) sees it.
func RevisionIn(get func(key []byte) ([]byte, error)) (int64, error) {
	v, err := get(metaRev)
	if errors.Is(err, storage.ErrNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mvcc: read revision: %w", err)
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: revision is %d bytes", errCorruptKey, len(v))
	}
	return int64(decodeUint64(v)), nil
}
