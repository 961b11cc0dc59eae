package server

import (
	"time"

	"github.com/cairn-db/cairn/internal/raftnode"
)

// testingKnobs let this package's tests reach states that are otherwise
// only reachable by killing the process or stalling a goroutine. Only
// newServer sets them; New, which every other caller uses, leaves them
// zero, so production code paths never see them.
type testingKnobs struct {
	// dropApplyBatch, if it returns true, makes the apply loop discard the
	// batch it was about to commit and stop the member, as a crash between
	// the raft log write and the apply commit would.
	dropApplyBatch func() bool
	// skipPropose drops proposals before they reach raft.
	skipPropose bool
	// beforeReadRound runs before each read-index round.
	beforeReadRound func()
	// catchUpEntries overrides how much raft log a compaction keeps.
	catchUpEntries uint64
	// beforeApply runs before each apply group.
	beforeApply func()
	// authNow, if set, is the clock of the auth tokens (their TTLs) alone.
	authNow func() time.Time
	// oldLogLayout gives a new data directory the raft log of a data
	// directory written before segment files: raftnode.LogInside (in the
	// state engine; --wal-dir must then be empty) or raftnode.LogSeparate
	// (an engine of its own in --wal-dir). Zero: segment files.
	oldLogLayout raftnode.LogLayout
}
