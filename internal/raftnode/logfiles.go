package raftnode

import (
	"errors"
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/raftlog"
	"github.com/cairn-db/cairn/internal/storage"
)

// A Log is where a member's raft log is kept: a *raftlog.Log, the segment
// files every new member gets (see the package doc's Where the log is), or a
// *storage.Engine, for a data directory written before them: the state
// engine itself, or an engine of the log's own (an old --wal-dir).
type Log interface {
	// Dir is the log's directory.
	Dir() string
	// Close closes the log.
	Close() error
}

// backendFor returns the backend that keeps the log in log, and log's
// engine if it is one.
func backendFor(log Log) (logBackend, *storage.Engine, error) {
	switch l := log.(type) {
	case *storage.Engine:
		return engineLog{l}, l, nil
	case *raftlog.Log:
		return fileLog{l}, nil, nil
	}
	return nil, nil, fmt.Errorf("raftnode: a raft log of type %T is not one this package keeps", log)
}

// fileLog keeps the log in segment files (package raftlog).
type fileLog struct{ l *raftlog.Log }

func (f fileLog) dir() string { return f.l.Dir() }

func (f fileLog) load() (*raftpb.HardState, uint64, uint64, uint64, error) {
	ti, tt := f.l.Truncation()
	return f.l.HardState(), ti, tt, f.l.LastIndex(), nil
}

func (f fileLog) save(hs *raftpb.HardState, ents []*raftpb.Entry, _ uint64, sync bool) error {
	return f.l.Append(hs, ents, sync)
}

// readError classifies an error of a read of the files as logBackend's
// reads do: raftlog's checks failing are damage, and so is an entry the
// bounds LogStore checked promised; anything else is an I/O error.
func readError(err error, what string) error {
	switch {
	case err == nil, errors.Is(err, raft.ErrCompacted), errors.Is(err, raftlog.ErrCorrupt):
		return err
	case errors.Is(err, raft.ErrUnavailable):
		return fmt.Errorf("raftnode: %s is missing from the log", what)
	}
	return fmt.Errorf("%w: %s: %w", errReadFailed, what, err)
}

func (f fileLog) term(i uint64) (uint64, error) {
	t, err := f.l.Term(i)
	return t, readError(err, fmt.Sprintf("entry %d", i))
}

func (f fileLog) entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	ents, err := f.l.Entries(lo, hi, maxSize)
	return ents, readError(err, fmt.Sprintf("entries [%d, %d)", lo, hi))
}

func (f fileLog) compact(_, index, _ uint64) error { return f.l.Compact(index) }

func (f fileLog) reset(index, term uint64) error { return f.l.Reset(index, term, nil) }
