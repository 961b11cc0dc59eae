package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// syncBuffer is a log destination safe for Pebble's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tableWriteFails is an errorfs injector that, while on, fails every write
// to an sstable (creating it included) with err: the flush of a memtable
// then fails, the write-ahead log does not.
type tableWriteFails struct {
	mu  sync.Mutex
	on  bool
	err error
}

func (f *tableWriteFails) set(on bool) {
	f.mu.Lock()
	f.on = on
	f.mu.Unlock()
}

func (f *tableWriteFails) String() string { return "table writes fail" }

func (f *tableWriteFails) MaybeError(op errorfs.Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.on && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".sst") {
		return f.err
	}
	return nil
}

const testDeadline = 60 * time.Second

func writeKeys(t *testing.T, e *Engine, n int, sync bool) {
	t.Helper()
	for i := range n {
		b := e.NewWriteBatch()
		b.Set(fmt.Appendf(nil, "k/%06d", i), bytes.Repeat([]byte{byte(i)}, 100), nil)
		if err := b.Commit(sync); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFlushErrorIsLoggedCountedAndReported: a flush that fails for a full
// disk is logged with its cause, counted and handed to OnBackgroundError;
// once space is back, the retried flush succeeds.
func TestFlushErrorIsLoggedCountedAndReported(t *testing.T) {
	inj := &tableWriteFails{err: syscall.ENOSPC}
	fs := errorfs.Wrap(vfs.NewMem(), inj)
	var logs syncBuffer
	reported := make(chan error, 100)
	e, err := Open("data", Options{
		FS:     fs,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnBackgroundError: func(err error) {
			select {
			case reported <- err:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	writeKeys(t, e, 100, false)
	inj.set(true)
	if _, err := e.DB().AsyncFlush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reported:
		if !IsNoSpace(err) || !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrFlush) {
			t.Fatalf("OnBackgroundError got %v, want a flush's ENOSPC error", err)
		}
	case <-time.After(testDeadline):
		t.Fatalf("no background error reported %v after a flush failed; log:\n%s", testDeadline, logs.String())
	}
	if n := e.BackgroundErrors(); n == 0 {
		t.Fatal("BackgroundErrors() = 0 after a failed flush")
	}
	if l := logs.String(); !strings.Contains(l, "no space left on device") || !strings.Contains(l, "level=ERROR") {
		t.Fatalf("the log does not name the cause at error level:\n%s", l)
	}
	inj.set(false)
	if err := e.DB().Flush(); err != nil {
		t.Fatalf("flush once space is back: %v", err)
	}
	if v, err := e.Get([]byte("k/000042")); err != nil || len(v) != 100 {
		t.Fatalf("Get after the retried flush = %d bytes, %v", len(v), err)
	}
}

// reopenFails writes keys that stay in the write-ahead log only (no
// flush), closes the engine, and opens it again while every table write
// fails with cause: recovering the log needs a flush. It returns Open's
// error, failing the test if Open does not return (Pebble retries a failed
// recovery flush forever).
func reopenFails(t *testing.T, cause error) error {
	t.Helper()
	mem := vfs.NewMem()
	e, err := Open("data", Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	writeKeys(t, e, 100, true)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	inj := &tableWriteFails{on: true, err: cause}
	done := make(chan error, 1)
	go func() {
		e, err := Open("data", Options{FS: errorfs.Wrap(mem, inj)})
		if err == nil {
			e.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Open succeeded with every table write failing")
		}
		return err
	case <-time.After(testDeadline):
		t.Fatalf("Open did not return within %v while the recovery flush failed with %v", testDeadline, cause)
		return nil
	}
}

func TestOpenOnFullDiskReturnsClearError(t *testing.T) {
	err := reopenFails(t, syscall.ENOSPC)
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Open: err = %v, want ErrNoSpace wrapping ENOSPC", err)
	}
	for _, want := range []string{"data", "free space", "restart"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open's error %q does not say %q", err, want)
		}
	}
}

func TestOpenOnFailingDiskReturnsClearError(t *testing.T) {
	err := reopenFails(t, syscall.EIO)
	if !errors.Is(err, ErrBackground) || !errors.Is(err, syscall.EIO) || IsNoSpace(err) {
		t.Fatalf("Open: err = %v, want ErrBackground wrapping EIO", err)
	}
	if !strings.Contains(err.Error(), "data") {
		t.Errorf("Open's error %q does not name the directory", err)
	}
}

// logSyncFails is an errorfs injector that, while on, fails every sync of a
// write-ahead log with EIO.
type logSyncFails struct{ tableWriteFails }

func (f *logSyncFails) MaybeError(op errorfs.Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		if f.on && strings.HasSuffix(op.Path, ".log") {
			return syscall.EIO
		}
	}
	return nil
}

// TestLogSyncErrorStopsWithACause: a failed write-ahead log sync leaves
// Pebble's commit pipeline unusable; the commit that met it fails with
// ErrWAL, naming the directory and the cause, after the error is logged
// and reported, and every later commit or sync fails so at once, without
// reaching Pebble (which would hang or panic).
func TestLogSyncErrorStopsWithACause(t *testing.T) {
	inj := &logSyncFails{}
	var logs syncBuffer
	var reported []error
	var mu sync.Mutex
	e, err := Open("data", Options{
		FS:     errorfs.Wrap(vfs.NewMem(), inj),
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnBackgroundError: func(err error) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// No Close: the engine is unusable after the failure.
	writeKeys(t, e, 10, true)
	inj.set(true)
	b := e.NewWriteBatch()
	b.Set([]byte("k/x"), []byte("v"), nil)
	err = b.Commit(true)
	if !errors.Is(err, ErrWAL) || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "data") || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("a synced commit whose log sync failed: %v, want ErrWAL naming the directory, EIO and the remedy", err)
	}
	if e.Failed() == nil {
		t.Fatal("Failed() = nil after a failed log sync")
	}
	b = e.NewWriteBatch()
	b.Set([]byte("k/y"), []byte("v"), nil)
	if err := b.Commit(false); !errors.Is(err, ErrWAL) {
		t.Fatalf("a commit after the failure: %v, want ErrWAL", err)
	}
	if err := e.Sync(); !errors.Is(err, ErrWAL) {
		t.Fatalf("a sync after the failure: %v, want ErrWAL", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) == 0 || !errors.Is(reported[0], ErrBackground) {
		t.Fatalf("OnBackgroundError got %v, want an ErrBackground", reported)
	}
	if e.BackgroundErrors() == 0 {
		t.Fatal("BackgroundErrors() = 0 after a failed log sync")
	}
	if l := logs.String(); !strings.Contains(l, "input/output error") || !strings.Contains(l, "level=ERROR") {
		t.Fatalf("the log does not name the cause at error level:\n%s", l)
	}
}
