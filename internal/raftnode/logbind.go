package raftnode

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"

	"github.com/cairn-db/cairn/internal/raftlog"
	"github.com/cairn-db/cairn/internal/storage"
)

// subLogID keys the log's identity ('r' 'w'), kept in both engines when
// the log has its own (see the package doc's Where the log is).
const subLogID byte = 'w'

var keyLogID = []byte{storage.PrefixRaft, subLogID}

const logIDLen = 16

// ErrLogMismatch is returned by BindLog when the raft log and the state
// engine do not belong together; the message says which way and what to do.
var ErrLogMismatch = errors.New("raftnode: the raft log and the data directory do not belong together")

// BindLog checks that log is the raft log of the state engine state, and
// pairs a new log with a new state. log may be state itself (the log kept
// inside, in a data directory written before segment files), segment
// files, or an engine of its own (an old --wal-dir). It refuses, with
// ErrLogMismatch:
//
//   - a shared log for a state whose log was kept separately (started
//     without --wal-dir after running with it);
//   - a separate log for a state that keeps its log inside (started with
//     --wal-dir after running without it, or restored from a backup);
//   - a separate log that belongs to another state, or an empty one for a
//     state that had a separate log (a wrong or a lost --wal-dir).
//
// A new separate log gets a random identity, written synced to the log
// first and to the state second, so a crash in between leaves a log
// nobody claims, which the next start claims in turn. It is called before
// anything else reads either engine's raft keys, and before Start.
func BindLog(state *storage.Engine, log Log) error {
	stateID, err := getOptional(state, keyLogID)
	if err != nil {
		return err
	}
	if log == Log(state) {
		if stateID != nil {
			return fmt.Errorf("%w: %s keeps its raft log in a separate directory (--wal-dir); start with that --wal-dir", ErrLogMismatch, state.Dir())
		}
		return nil
	}
	logID, err := logIdentity(log)
	if err != nil {
		return err
	}
	switch {
	case stateID != nil && logID == nil:
		return fmt.Errorf("%w: %s holds no raft log, but the data directory %s had its log there (a wrong or lost --wal-dir)", ErrLogMismatch, log.Dir(), state.Dir())
	case stateID != nil && !bytes.Equal(stateID, logID):
		return fmt.Errorf("%w: the raft log in %s belongs to another data directory than %s", ErrLogMismatch, log.Dir(), state.Dir())
	case stateID != nil:
		return nil
	}
	// A state that names no separate log.
	if inside, err := hasRaftState(state); err != nil {
		return err
	} else if inside {
		return fmt.Errorf("%w: the data directory %s keeps its raft log inside; start without --wal-dir", ErrLogMismatch, state.Dir())
	}
	inLog, err := logHasState(log)
	if err != nil {
		return err
	}
	if inLog && logID == nil {
		return fmt.Errorf("%w: %s holds raft state that names no data directory", ErrLogMismatch, log.Dir())
	}
	if logID == nil {
		logID = newLogID()
		if err := setLogIdentity(log, logID); err != nil {
			return fmt.Errorf("raftnode: name the raft log in %s: %w", log.Dir(), err)
		}
	} else if inLog {
		// A log with entries whose state never recorded it: the state was
		// lost or is another's.
		return fmt.Errorf("%w: the raft log in %s belongs to another data directory than %s", ErrLogMismatch, log.Dir(), state.Dir())
	}
	b := state.NewWriteBatch()
	if err := errors.Join(b.Set(keyLogID, logID, nil), b.Commit(true)); err != nil {
		return fmt.Errorf("raftnode: record the raft log in %s: %w", state.Dir(), err)
	}
	return nil
}

// LogLayout is where a state engine says its raft log is kept.
type LogLayout int

const (
	// LogNew: nowhere yet; a new data directory.
	LogNew LogLayout = iota
	// LogInside: in the state engine itself (a data directory written
	// before segment files, run without --wal-dir).
	LogInside
	// LogSeparate: apart from the state engine, in the log the state names
	// by its identity: segment files, or an engine of its own (an old
	// --wal-dir).
	LogSeparate
)

// StoredLogLayout reports where state keeps its raft log.
func StoredLogLayout(state *storage.Engine) (LogLayout, error) {
	if id, err := getOptional(state, keyLogID); err != nil {
		return 0, err
	} else if id != nil {
		return LogSeparate, nil
	}
	if inside, err := hasRaftState(state); err != nil {
		return 0, err
	} else if inside {
		return LogInside, nil
	}
	return LogNew, nil
}

// newLogID returns a new random identity for a separate raft log.
func newLogID() []byte {
	id := make([]byte, logIDLen)
	rand.Read(id)
	return id
}

func getOptional(eng *storage.Engine, key []byte) ([]byte, error) {
	v, err := eng.Get(key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("raftnode: read %q in %s: %w; check the device holding %s (the kernel log names I/O errors) and restart the member",
			key, eng.Dir(), err, eng.Dir())
	}
	return v, nil
}

// hasRaftState reports whether eng holds log entries, a hard state or a
// truncation point.
func hasRaftState(eng *storage.Engine) (bool, error) {
	for _, k := range [][]byte{keyHardState, keyTruncated} {
		if v, err := getOptional(eng, k); err != nil || v != nil {
			return v != nil, err
		}
	}
	it, err := eng.DB().NewIter(&pebble.IterOptions{
		LowerBound: []byte{storage.PrefixRaft, subEntry},
		UpperBound: []byte{storage.PrefixRaft, subEntry + 1},
	})
	if err != nil {
		return false, fmt.Errorf("raftnode: scan log in %s: %w", eng.Dir(), err)
	}
	defer it.Close()
	found := it.First()
	return found, it.Error()
}

// logIdentity returns the identity recorded in a separate log, nil if none.
func logIdentity(log Log) ([]byte, error) {
	switch l := log.(type) {
	case *storage.Engine:
		return getOptional(l, keyLogID)
	case *raftlog.Log:
		return l.Identity(), nil
	}
	return nil, fmt.Errorf("raftnode: a raft log of type %T is not one this package keeps", log)
}

// setLogIdentity records id in a separate log, synced.
func setLogIdentity(log Log, id []byte) error {
	switch l := log.(type) {
	case *storage.Engine:
		b := l.NewWriteBatch()
		return errors.Join(b.Set(keyLogID, id, nil), b.Commit(true))
	case *raftlog.Log:
		return l.SetIdentity(id)
	}
	return fmt.Errorf("raftnode: a raft log of type %T is not one this package keeps", log)
}

// logHasState reports whether a separate log holds entries, a hard state
// or a truncation point.
func logHasState(log Log) (bool, error) {
	switch l := log.(type) {
	case *storage.Engine:
		return hasRaftState(l)
	case *raftlog.Log:
		index, _ := l.Truncation()
		return l.LastIndex() > 0 || index > 0 || !raft.IsEmptyHardState(l.HardState()), nil
	}
	return false, fmt.Errorf("raftnode: a raft log of type %T is not one this package keeps", log)
}
