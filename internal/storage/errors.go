package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// ErrNoSpace is returned (wrapped, with the directory and the cause) by Open
// when the device holding the data directory is too full for the engine to
// start: recovering the write-ahead log needs to write a table, and Pebble
// would otherwise retry that write forever.
var ErrNoSpace = errors.New("storage: no space left on the device")

// ErrBackground is returned (wrapped, with the cause) by Open when the
// engine could not finish recovering its write-ahead log for an I/O error
// other than a full device.
var ErrBackground = errors.New("storage: background write failed")

// ErrFlush wraps the error a failed flush hands to
// Options.OnBackgroundError (with its cause, which IsNoSpace and errors.Is
// still see): Pebble retries a failed flush until one succeeds, and while
// none does the memtables fill until writes stall, so the owner may want
// to stop on it rather than wait. A failed compaction (Pebble sets its key
// span aside for a while) and other background errors come unwrapped.
var ErrFlush = errors.New("storage: flush failed")

// ErrWAL is returned (wrapped, with the directory, Pebble's message and
// the remedy) by Batch.Commit and Engine.Sync once a write or a sync of
// the engine's write-ahead log has failed. Pebble cannot take another
// write after that (its commit pipeline is left broken), so every later
// commit fails with the same error at once, without reaching Pebble: the
// owner must stop, and the member restart once the device is repaired.
// Whatever the failed commit held may or may not be durable; nothing
// committed (synced) before it is affected.
var ErrWAL = errors.New("storage: writing the write-ahead log failed")

// IsNoSpace reports whether err, from Open or passed to
// Options.OnBackgroundError, comes from a full device (ENOSPC or EDQUOT).
func IsNoSpace(err error) bool {
	return errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// IsMediaFailure reports whether err, from a read or a write of the
// engine, comes from the device failing (EIO) or from a table whose bytes
// do not check out (Pebble's corruption errors): an error the engine
// cannot answer around, where the owner stops rather than go on serving.
func IsMediaFailure(err error) bool {
	return errors.Is(err, syscall.EIO) || pebble.IsCorruptionError(err)
}

// openRetries is how many times a flush may fail during Open before Open
// gives up on it: a transient error gets retried, a full disk does not
// spin forever.
const openRetries = 3

// Backoff between retries of a failing flush. Pebble retries a failed
// flush at once, with no delay of its own, so a persistent error would spin
// a core.
const (
	minRetryDelay = 10 * time.Millisecond
	maxRetryDelay = 500 * time.Millisecond
)

// events is what the engine learns from Pebble's event listener and
// logger: background errors, counted, logged with their cause and passed
// on to the owner's hook; disk stalls; and, while Open runs, whether the
// recovery flush keeps failing.
type events struct {
	lg      *slog.Logger
	dir     string
	onError func(error)

	errors   atomic.Uint64 // background errors so far
	diskSlow atomic.Uint64 // disk operations reported slow so far
	consec   atomic.Int64  // background errors since the last flush or compaction that succeeded
	// flushFailed is set by a failed flush's FlushEnd, which Pebble calls
	// just before it reports the flush's error to BackgroundError.
	flushFailed atomic.Bool
	lastLogged  atomic.Int64  // unix nanos of the last error logged, for rate limiting
	stalls      atomic.Uint64 // write stalls so far
	// lastStallLogged is the unix nanos of the last write stall logged.
	lastStallLogged atomic.Int64

	// opening is set while pebble.Open runs. A failed flush then counts
	// in openFlushFailures; after openRetries of them its error goes to
	// openFailed, and the goroutine that reported it parks on abandon:
	// pebble.Open is waiting for that flush and cannot be interrupted, and
	// the retry would spin.
	opening           atomic.Bool
	openFlushFailures atomic.Int64
	openFailed        chan error
	abandon           chan struct{}
	failOnce          sync.Once
}

func newEvents(lg *slog.Logger, dir string, onError func(error)) *events {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &events{lg: lg, dir: dir, onError: onError, openFailed: make(chan error, 1), abandon: make(chan struct{})}
}

// listener returns the Pebble event listener; gen is called when a flush or
// compaction finishes.
func (ev *events) listener(gen func()) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: ev.backgroundError,
		FlushEnd: func(info pebble.FlushInfo) {
			// A flush that wrote no table (its memtable held nothing that
			// survives) reports Pebble's unexported errEmptyTable: it
			// succeeded all the same.
			failed := info.Err != nil && info.Err.Error() != "pebble: empty table"
			ev.flushFailed.Store(failed)
			if !failed {
				ev.consec.Store(0)
				gen()
			}
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			if info.Err == nil {
				ev.consec.Store(0)
				gen()
			}
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			// Called on Pebble's monitoring goroutine: no I/O but the log.
			ev.diskSlow.Add(1)
			ev.lg.Warn("storage: disk operation is slow", "dir", ev.dir, "path", info.Path,
				"op", info.OpType.String(), "bytes", info.WriteSize, "duration", info.Duration)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			// Short stalls come and go under a heavy write load: log them
			// at most every 10 s.
			ev.stalls.Add(1)
			now := time.Now().UnixNano()
			if last := ev.lastStallLogged.Load(); now-last >= int64(10*time.Second) && ev.lastStallLogged.CompareAndSwap(last, now) {
				ev.lg.Warn("storage: writes stalled until a flush or compaction catches up",
					"dir", ev.dir, "reason", info.Reason, "stalls", ev.stalls.Load())
			}
		},
		LowDiskSpace: func(info pebble.LowDiskSpaceInfo) {
			ev.lg.Warn("storage: low disk space", "dir", ev.dir, "available-bytes", info.AvailBytes,
				"total-bytes", info.TotalBytes, "below-percent", info.PercentThreshold)
		},
	}
}

// backgroundError runs on the Pebble goroutine whose flush or compaction
// failed (or that met another error in the background), usually holding
// the DB's mutex.
func (ev *events) backgroundError(err error) {
	n := ev.errors.Add(1)
	c := ev.consec.Add(1)
	flush := ev.flushFailed.Swap(false)
	if flush && ev.opening.Load() {
		// The flush of the recovered write-ahead log, which pebble.Open
		// waits for.
		f := ev.openFlushFailures.Add(1)
		ev.lg.Error("storage: flushing the recovered write-ahead log failed", "dir", ev.dir, "attempt", f, "err", err)
		if f >= openRetries {
			ev.failOnce.Do(func() { ev.openFailed <- err })
			<-ev.abandon // never closed: see events.opening
		}
		time.Sleep(retryDelay(f))
		return
	}
	// Log the first error of a run and then at most one a second: a
	// persistent error repeats at every retry.
	now := time.Now().UnixNano()
	if c == 1 || now-ev.lastLogged.Load() >= int64(time.Second) {
		ev.lastLogged.Store(now)
		ev.lg.Error("storage: background job failed; Pebble retries it",
			"dir", ev.dir, "flush", flush, "err", err, "no-space", IsNoSpace(err), "consecutive", c, "total", n)
	}
	if ev.onError != nil {
		if flush {
			ev.onError(fmt.Errorf("%w: %w", ErrFlush, err))
		} else {
			ev.onError(err)
		}
	}
	// A failed flush is retried as soon as this returns: delay it. Other
	// reporters (a compaction, whose key span Pebble then avoids for a
	// while; table stats; disk usage) are not held up.
	if flush {
		time.Sleep(retryDelay(c))
	}
}

func retryDelay(consecutive int64) time.Duration {
	d := minRetryDelay
	for i := int64(1); i < consecutive && d < maxRetryDelay; i++ {
		d *= 2
	}
	return min(d, maxRetryDelay)
}

// openError turns the error that made the recovery flush fail into Open's
// error: what failed, where, and what to do about it.
func (ev *events) openError(cause error) error {
	if IsNoSpace(cause) {
		return fmt.Errorf("%w: %s: recovering the write-ahead log needs to write a table: %w; "+
			"free space on the device holding %s (or move the data directory to a larger device) and restart",
			ErrNoSpace, ev.dir, cause, ev.dir)
	}
	return fmt.Errorf("%w: %s: recovering the write-ahead log failed %d times: %w; "+
		"check the device holding %s (the kernel log names I/O errors) and restart",
		ErrBackground, ev.dir, openRetries, cause, ev.dir)
}

// pebbleLogger is Pebble's logger: its informational messages go to debug,
// its errors to error, and a fatal error (a failed WAL write or sync, which
// leaves the commit pipeline unusable) is logged, reported to the owner's
// hook, and then panics, as Pebble expects Fatalf not to return. The panic
// carries a *fatalError: Batch.Commit and Engine.Sync, on whose goroutine
// Pebble reports a failed commit, turn it back into an ErrWAL error, so
// the owner stops with a message instead of a Go panic. A fatal error on
// one of Pebble's own goroutines (a manifest write that fails at the end
// of a flush or a compaction) cannot be unwound so: that panic still ends
// the process, after the logged message.
type pebbleLogger struct{ ev *events }

func (l pebbleLogger) Infof(format string, args ...interface{}) {
	if l.ev.lg.Enabled(context.Background(), slog.LevelDebug) {
		l.ev.lg.Debug("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Errorf(format string, args ...interface{}) {
	l.ev.lg.Error("pebble: "+fmt.Sprintf(format, args...), "dir", l.ev.dir)
}

func (l pebbleLogger) Fatalf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	l.ev.errors.Add(1)
	l.ev.lg.Error("storage: fatal engine error, stopping", "dir", l.ev.dir, "err", msg)
	f := &fatalError{dir: l.ev.dir, msg: msg, cause: causeOf(args)}
	if l.ev.onError != nil {
		l.ev.onError(fmt.Errorf("%w: %w", ErrBackground, f))
	}
	panic(f)
}

// fatalError is the value pebbleLogger.Fatalf panics with.
type fatalError struct {
	dir, msg string
	// cause is the error among Fatalf's arguments (the failed write's),
	// kept so that errors.Is still finds its errno; nil if none.
	cause error
}

func (f *fatalError) Error() string {
	what := ErrWAL.Error()
	if !strings.HasPrefix(f.msg, "pebble: fatal commit error") {
		// Another of Pebble's fatal errors: a manifest write of a flush or
		// compaction, or a broken invariant.
		what = "storage: fatal engine error"
	}
	return fmt.Sprintf("%s: %s: %s; the member cannot make its writes durable and stops: "+
		"check the device holding %s (free space if it is full; the kernel log names I/O errors) and restart the member",
		what, f.dir, f.msg, f.dir)
}

func (f *fatalError) Unwrap() []error {
	if f.cause == nil {
		return []error{ErrWAL}
	}
	return []error{ErrWAL, f.cause}
}

func causeOf(args []interface{}) error {
	for _, a := range args {
		if err, ok := a.(error); ok {
			return err
		}
	}
	return nil
}

// recoverFatal, deferred by a call that commits to Pebble, turns a
// pebbleLogger.Fatalf panic on this goroutine into *errp and marks the
// engine failed; any other panic goes on.
func (e *Engine) recoverFatal(errp *error) {
	r := recover()
	if r == nil {
		return
	}
	f, ok := r.(*fatalError)
	if !ok {
		panic(r)
	}
	e.failed.CompareAndSwap(nil, f)
	*errp = f
}

// failure returns the error of the write-ahead log failure that broke the
// engine, nil while it is sound.
func (e *Engine) failure() error {
	if f := e.failed.Load(); f != nil {
		return f
	}
	return nil
}
