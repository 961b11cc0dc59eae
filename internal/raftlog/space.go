package raftlog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/cairn-db/cairn/internal/storage"
)

// spareSeg is a segment file prepared ahead of the roll that will use it:
// created under a name replay ignores, preallocated, synced, holding
// nothing yet.
type spareSeg struct {
	seq  uint64
	name string
	f    vfs.File
	size int64 // the size it is preallocated to
}

// spareRetry is how often preparing a spare segment that failed is tried
// again.
const spareRetry = time.Second

// minDeviceSegment is the smallest size a segment shrinks to on a nearly
// full device.
const minDeviceSegment = 1 << 20

// NoRoom returns the last failure to prepare the next segment, nil once
// one is ready (or before the first segment is started). It may be called
// from any goroutine.
//
// A caller (the member) treats non-nil as "the log's device is full": it
// stops taking writes that add data, so the room left in the current
// segment carries the deletes and compactions that free space. The log
// itself keeps appending into the current segment, and tries again to
// prepare the next one at most once a second, at an Append, Compact or
// SetIdentity; NoRoom turns nil when that succeeds.
func (l *Log) NoRoom() error {
	if p := l.noRoom.Load(); p != nil {
		return *p
	}
	return nil
}

// now reads the log's clock.
func (l *Log) now() time.Time {
	if l.opts.Now != nil {
		return l.opts.Now()
	}
	return time.Now()
}

// segmentSize returns the size to give a new segment: SegmentBytes, or
// on a device with less than eight segments' worth of space available an
// eighth of what is available (in whole MiB, at least 1 MiB, never more
// than SegmentBytes), so that a small device is not filled by the log's
// preallocation alone. Where the file system cannot tell its usage
// (MemFS), SegmentBytes.
func (l *Log) segmentSize() int64 {
	size := l.opts.SegmentBytes
	du, err := l.fs.GetDiskUsage(l.dir)
	if err != nil || du.AvailBytes >= uint64(8*size) {
		return size
	}
	small := max(int64(du.AvailBytes/8), minDeviceSegment) &^ (minDeviceSegment - 1)
	return min(size, small)
}

// retrySpare prepares the spare segment again when the last attempt
// failed at least spareRetry ago. Called by the writer before it writes;
// its failure is not the log's (see NoRoom).
func (l *Log) retrySpare() {
	if l.noRoom.Load() == nil || l.w.cur == nil || l.now().Sub(l.w.lastTry) < spareRetry {
		return
	}
	l.prepareSpare()
}

// prepareSpare creates the spare segment for nextSeq, unless one is ready:
// created, preallocated in full (where the file system has no fallocate,
// without a reservation), synced (data and metadata) and the directory
// synced, so the roll that uses it allocates nothing. A failure is
// recorded for NoRoom, and the partial file removed; the log is not
// failed, and keeps appending into the current segment.
func (l *Log) prepareSpare() {
	if l.w.spare != nil {
		return
	}
	seq := l.w.nextSeq
	name := l.fs.PathJoin(l.dir, spareName(seq))
	size := l.segmentSize()
	f, err := l.fs.Create(name, vfs.WriteCategoryUnspecified)
	if err == nil {
		if perr := preallocate(f, size); perr != nil && !noFallocate(perr) {
			err = perr
		}
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = storage.SyncDir(l.fs, l.dir)
		}
		if err != nil {
			_ = f.Close()
			_ = l.fs.Remove(name)
		}
	}
	if err != nil {
		err = fmt.Errorf("raftlog: prepare segment %s: %w", name, err)
		l.noRoom.Store(&err)
		l.w.lastTry = l.now()
		return
	}
	l.w.spare = &spareSeg{seq: seq, name: name, f: f, size: size}
	l.noRoom.Store(nil)
}

// takeSpare returns the spare segment renamed to segment seq's name, nil
// if no spare is ready. The rename is made durable by the directory sync
// that ends the roll: until then, a crash leaves either the spare (removed
// at Open) or a segment with no start record (a roll cut short).
func (l *Log) takeSpare(seq uint64) (*spareSeg, error) {
	s := l.w.spare
	if s == nil {
		return nil, nil
	}
	l.w.spare = nil
	if s.seq != seq {
		// Never happens: the spare is always for nextSeq.
		_ = s.f.Close()
		_ = l.fs.Remove(s.name)
		return nil, nil
	}
	if err := l.fs.Rename(s.name, l.fs.PathJoin(l.dir, segmentName(seq))); err != nil {
		_ = s.f.Close()
		return nil, err
	}
	return s, nil
}

// spareName is the file name of a spare for segment seq; replay ignores it.
func spareName(seq uint64) string { return fmt.Sprintf("%016x.spare", seq) }

// isSpareName reports whether name is a spare segment's.
func isSpareName(name string) bool {
	hex, ok := strings.CutSuffix(name, ".spare")
	if !ok || len(hex) != 16 {
		return false
	}
	_, err := strconv.ParseUint(hex, 16, 64)
	return err == nil
}

// removeSpares removes the spare segments left in dir by an earlier
// process: they hold nothing. The removals are not synced: a spare that
// comes back after a crash is removed again.
func removeSpares(fs vfs.FS, dir string, names []string) error {
	var errs []error
	for _, n := range names {
		if isSpareName(n) {
			if err := fs.Remove(fs.PathJoin(dir, n)); err != nil {
				errs = append(errs, fmt.Errorf("raftlog: remove %s: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}
