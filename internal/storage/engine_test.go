package storage

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestAppliedIndexSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.AppliedIndex(); got != 0 {
		t.Fatalf("new engine applied index = %d, want 0", got)
	}
	b := e.NewBatch()
	b.Set([]byte("k/x"), []byte("v"), nil)
	b.SetAppliedIndex(42)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got, _ := e.AppliedIndex(); got != 42 {
		t.Fatalf("applied index after reopen = %d, want 42", got)
	}
	if v, err := e.Get([]byte("k/x")); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v; want \"v\"", v, err)
	}
	if _, err := e.Get([]byte("k/none")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key: err = %v, want ErrNotFound", err)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
}

func TestDiscardedBatchLeavesNoTrace(t *testing.T) {
	e, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	b := e.NewBatch()
	b.Set([]byte("k/y"), []byte("v"), nil)
	b.SetAppliedIndex(7)
	b.Discard()
	if got, _ := e.AppliedIndex(); got != 0 {
		t.Fatalf("applied index = %d after a discarded batch, want 0", got)
	}
}

// TestFlushLeavesNothingToReplay: after Flush the write-ahead log holds no
// live data, so the next Open replays nothing, and the writes are there.
func TestFlushLeavesNothingToReplay(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := e.NewWriteBatch()
	for i := range 2000 {
		b.Set(fmt.Appendf(nil, "k/%05d", i), make([]byte, 512), nil)
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if live := e.db.Metrics().WAL.Size; live < 1<<20*9/10 {
		t.Fatalf("the write-ahead log holds %d live bytes after about 1 MiB of writes", live)
	}
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	if live := e.db.Metrics().WAL.Size; live != 0 {
		t.Fatalf("the write-ahead log holds %d live bytes after Flush, want 0", live)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if v, err := e.Get([]byte("k/01999")); err != nil || len(v) != 512 {
		t.Fatalf("Get after Flush and reopen = %d bytes, %v", len(v), err)
	}
}

// smallDevice is a file system that reports avail bytes available.
type smallDevice struct {
	vfs.FS
	avail uint64
}

func (fs smallDevice) GetDiskUsage(string) (vfs.DiskUsage, error) {
	return vfs.DiskUsage{AvailBytes: fs.avail, TotalBytes: 2 * fs.avail}, nil
}

// TestFlushWithoutRoom: on a device with less room than twice the
// memtable, Flush refuses with ErrNoSpace instead of starting a flush that
// could fail in Pebble's goroutine, and the writes survive a reopen all
// the same (from the write-ahead log).
func TestFlushWithoutRoom(t *testing.T) {
	fs := smallDevice{FS: vfs.NewMem(), avail: 1 << 20}
	e, err := Open("data", Options{FS: fs, CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	b := e.NewWriteBatch()
	b.Set([]byte("k/x"), []byte("v"), nil)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Flush with 1 MiB available = %v, want ErrNoSpace", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = Open("data", Options{FS: fs, CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if v, err := e.Get([]byte("k/x")); err != nil || string(v) != "v" {
		t.Fatalf("Get after reopen = %q, %v", v, err)
	}
}
