package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cairn-db/cairn/internal/raftlog"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// logDirName is the raft log's directory inside the data directory when
// no --wal-dir is given.
const logDirName = "wal"

// logDir is where the raft log's files are: --wal-dir, or logDirName in
// the data directory.
func logDir(dataDir, walDir string) string {
	if walDir != "" {
		return walDir
	}
	return filepath.Join(dataDir, logDirName)
}

// openLog opens the member's raft log, wherever the state engine eng says
// it is (raftnode.StoredLogLayout): segment files in --wal-dir, or in
// <data dir>/wal without it, for a new data directory and one written
// since; eng itself for a data directory that kept its log inside (written
// before segment files, without --wal-dir); an engine of its own for an
// older --wal-dir. raftnode.BindLog then checks that the two belong
// together.
func openLog(cfg Config, knobs testingKnobs, eng *storage.Engine, q *quota) (raftnode.Log, error) {
	fs := cfg.FS
	if fs == nil {
		fs = storage.PrivateFS()
	}
	layout, err := raftnode.StoredLogLayout(eng)
	if err != nil {
		return nil, err
	}
	dir := logDir(cfg.DataDir, cfg.WalDir)
	if layout == raftnode.LogNew && knobs.oldLogLayout != raftnode.LogNew {
		layout = knobs.oldLogLayout
		if layout == raftnode.LogSeparate {
			return openLogEngine(cfg, dir, q)
		}
	}
	switch layout {
	case raftnode.LogInside:
		if cfg.WalDir != "" {
			return nil, fmt.Errorf("%w: the data directory %s keeps its raft log inside; start without --wal-dir", raftnode.ErrLogMismatch, cfg.DataDir)
		}
		return eng, nil
	case raftnode.LogSeparate:
		if _, err := fs.Stat(dir); errors.Is(err, os.ErrNotExist) {
			if cfg.WalDir == "" {
				return nil, fmt.Errorf("%w: %s keeps its raft log in a separate directory (--wal-dir); start with that --wal-dir", raftnode.ErrLogMismatch, cfg.DataDir)
			}
			return nil, fmt.Errorf("%w: %s holds no raft log, but the data directory %s had its log there (a wrong or lost --wal-dir)", raftnode.ErrLogMismatch, dir, cfg.DataDir)
		}
		if _, err := fs.Stat(fs.PathJoin(dir, "db")); err == nil {
			// An engine of the log's own, as --wal-dir made them before
			// segment files.
			return openLogEngine(cfg, dir, q)
		}
	}
	return openLogFiles(fs, dir, cfg.UnsafeNoFsync)
}

// openLogFiles opens the log's segment files in dir (without syncs for
// --unsafe-no-fsync), and says what to do when that fails.
func openLogFiles(fs vfs.FS, dir string, noSync bool) (*raftlog.Log, error) {
	files, err := raftlog.Open(fs, dir, raftlog.Options{NoSync: noSync})
	switch {
	case errors.Is(err, raftlog.ErrCorrupt):
		return nil, fmt.Errorf("%w: the raft log in %s is damaged: %w; the member does not start on a log it cannot read: "+
			"remove this member from the cluster and add it back with an empty data directory (it then gets a snapshot from the leader), "+
			"or restore it from a backup", raftnode.ErrLogStorage, dir, err)
	case err != nil:
		return nil, fmt.Errorf("%w: opening %s: %w; check the device holding %s (free space if it is full; the kernel log names I/O errors) and restart the member",
			raftnode.ErrLogStorage, dir, err, dir)
	}
	return files, nil
}

// openLogEngine opens the Pebble engine an old --wal-dir holds the log in.
func openLogEngine(cfg Config, dir string, q *quota) (*storage.Engine, error) {
	return storage.Open(dir, storage.Options{
		NoSync:            cfg.UnsafeNoFsync,
		FS:                cfg.FS,
		Logger:            cfg.Logger.With("component", "raft-log-storage"),
		OnBackgroundError: q.onBackgroundError,
	})
}

// logBytesWritten returns the bytes written to the raft log's storage: its
// segment files, or the write-ahead log of the engine that holds it (with
// the state's batches, when that is the state engine).
func (s *Server) logBytesWritten() int64 {
	switch l := s.logEng.(type) {
	case *raftlog.Log:
		return l.BytesWritten()
	case *storage.Engine:
		return int64(l.DB().Metrics().WAL.BytesWritten)
	}
	return 0
}
