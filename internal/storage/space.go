package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"time"
)

// Memtable sizes: see memTableSize.
const (
	defaultQuotaBytes = 2 << 30
	minMemTableSize   = 64 << 10
	maxMemTableSize   = 32 << 20
)

// memTableSize returns the memtable size for a quota: 1/64 of it, between
// 64 KiB and 32 MiB. Pebble preallocates each write-ahead log to 1.1x the
// memtable size and keeps MemTableStopWritesThreshold+1 (3) old logs for
// reuse besides the one in use, so the logs of an idle engine hold about
// 4.4x the memtable size: 7% of the quota at most, and 140 MiB for the
// default quota and above (more while a flush lags behind writes).
func memTableSize(quota int64) uint64 {
	if quota <= 0 {
		quota = defaultQuotaBytes
	}
	return uint64(min(max(quota/64, minMemTableSize), maxMemTableSize))
}

// Size returns the bytes the engine holds on the disk: every file in the
// database's directory, counted by the blocks it takes (so a write-ahead
// log's preallocated tail counts), sstables and write-ahead logs awaiting
// deletion and compaction outputs in progress included. This is what the
// quota is measured against. It lists the directory: a few hundred stat
// calls for a large database. Safe for concurrent use.
func (e *Engine) Size() int64 {
	names, err := e.fs.List(e.dbDir)
	if err != nil {
		return int64(e.db.Metrics().DiskSpaceUsage())
	}
	var n int64
	for _, name := range names {
		fi, err := e.fs.Stat(e.fs.PathJoin(e.dbDir, name))
		if err != nil {
			continue // deleted since the listing
		}
		if fi.IsDir() {
			continue
		}
		n += allocated(fi)
	}
	return n
}

// allocated returns the bytes a file takes on the disk: its blocks where
// the file system reports them (a preallocated file takes more than its
// size), its size otherwise (in-memory file systems).
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return max(st.Blocks*512, 0)
	}
	return fi.Size()
}

// SizeInUse returns an estimate of the bytes of live data: the live
// sstables and blob files, the data the live write-ahead logs hold, and the
// manifest and options files. Size less SizeInUse is what Defragment can
// give back: tables and logs awaiting deletion (or kept by an open
// iterator), logs kept for reuse and their preallocated tails. Deleted keys
// still count until a compaction drops them, which Defragment forces.
// Safe for concurrent use.
func (e *Engine) SizeInUse() int64 {
	m := e.db.Metrics()
	dead := m.WAL.ObsoletePhysicalSize + m.Table.Local.ObsoleteSize + m.Table.Local.ZombieSize +
		m.BlobFiles.Local.ObsoleteSize + m.BlobFiles.Local.ZombieSize
	// DiskSpaceUsage counts the live logs by their physical size; only the
	// data in them is in use.
	dead += m.WAL.PhysicalSize - min(m.WAL.Size, m.WAL.PhysicalSize)
	used := m.DiskSpaceUsage()
	return int64(used - min(dead, used))
}

// BackgroundErrors returns how many background errors (failed flushes,
// compactions, write-ahead log writes) the engine has met since Open, for
// the owner's metrics. Safe for concurrent use.
func (e *Engine) BackgroundErrors() uint64 { return e.ev.errors.Load() }

// WriteStalls returns how many times writes stalled since Open, waiting
// for a flush or compaction to catch up (logged at most every 10 s). Safe
// for concurrent use.
func (e *Engine) WriteStalls() uint64 { return e.ev.stalls.Load() }

// DiskSlowEvents returns how many disk operations took longer than 5 s
// since Open. Safe for concurrent use.
func (e *Engine) DiskSlowEvents() uint64 { return e.ev.diskSlow.Load() }

// defragPoll is how often Defragment looks whether the files the
// compaction made obsolete are gone.
const defragPoll = 5 * time.Millisecond

// Defragment gives back the space of deleted data while the engine keeps
// serving reads and writes: it flushes the memtable and compacts the whole
// keyspace, which rewrites every table without the deleted keys and
// versions (what mvcc's compaction removed is only marked deleted until
// then), and waits until the obsolete tables are deleted, so that Size comes
// down to SizeInUse plus the write-ahead logs kept for reuse (a few times
// the memtable size, see memTableSize). Files an open iterator still reads are deleted
// when it closes: Defragment waits for those only until ctx is done, and
// then returns nil all the same (the compaction is done). It returns ctx's
// error if ctx ends before the compaction does, and the compaction's error
// (wrapped) if it fails. Safe for concurrent use; concurrent calls each
// compact.
func (e *Engine) Defragment(ctx context.Context) error {
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("storage: defragment %s: flush: %w", e.dir, err)
	}
	// Every key of every keyspace: prefixes are single bytes (see the
	// package doc), so [0x00, 0xff 0xff) holds them all.
	if err := e.db.Compact(ctx, []byte{0}, []byte{0xff, 0xff}, true); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			return ctxErr
		}
		return fmt.Errorf("storage: defragment %s: %w", e.dir, err)
	}
	t := time.NewTicker(defragPoll)
	defer t.Stop()
	for {
		m := e.db.Metrics()
		// Obsolete write-ahead logs are kept for reuse (see memTableSize),
		// not deleted: they are not waited for.
		if m.Table.Local.ObsoleteSize+m.Table.Local.ZombieSize+
			m.BlobFiles.Local.ObsoleteSize+m.BlobFiles.Local.ZombieSize == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
