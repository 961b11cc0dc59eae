package storage

import (
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// diskUsage is du: the blocks every file under dir takes.
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writeRandom(t *testing.T, e *Engine, prefix string, n, size int) {
	t.Helper()
	for i := range n {
		b := e.NewWriteBatch()
		b.Set(fmt.Appendf(nil, "k/%s%06d", prefix, i), randomBytes(size), nil)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestSizeIsWhatTheDiskHolds: Size counts every block of the database's
// files, write-ahead logs preallocated past their data included, and a
// small quota keeps the logs small.
func TestSizeIsWhatTheDiskHolds(t *testing.T) {
	const quota = 16 << 20
	dir := t.TempDir()
	e, err := Open(dir, Options{QuotaBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	writeRandom(t, e, "a", 4000, 1000) // 4 MB, a quarter of the quota
	// A flush or compaction may still be running: wait for the directory
	// to stay the same across a Size call, which must then agree with it.
	var size, du int64
	for deadline := time.Now().Add(time.Minute); ; {
		before := diskUsage(t, filepath.Join(dir, "db"))
		size = e.Size()
		du = diskUsage(t, filepath.Join(dir, "db"))
		if before == du && size == du {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Size() = %d, the disk holds %d in the database directory", size, du)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if inUse := e.SizeInUse(); inUse > size || inUse < 4_000_000 {
		t.Fatalf("SizeInUse() = %d with Size() = %d and 4 MB written", inUse, size)
	}
	// What is not live data (logs kept for reuse, preallocated tails)
	// stays a fraction of the quota.
	if over := size - e.SizeInUse(); over > quota/4 {
		t.Fatalf("Size() - SizeInUse() = %d, more than a quarter of the %d quota", over, quota)
	}
}

func TestMemTableSizeFollowsQuota(t *testing.T) {
	for _, tc := range []struct {
		quota int64
		want  uint64
	}{
		{0, 32 << 20}, {-1, 32 << 20}, {8 << 30, 32 << 20}, {2 << 30, 32 << 20},
		{256 << 20, 4 << 20}, {16 << 20, 256 << 10}, {2 << 20, 64 << 10}, {1 << 10, 64 << 10},
	} {
		if got := memTableSize(tc.quota); got != tc.want {
			t.Errorf("memTableSize(%d) = %d, want %d", tc.quota, got, tc.want)
		}
	}
}

// TestDefragmentGivesSpaceBack: after deleting most of the data,
// Defragment brings Size down to the live data, while the engine stays
// readable and writable.
func TestDefragmentGivesSpaceBack(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{QuotaBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	writeRandom(t, e, "a", 8000, 1000)
	writeRandom(t, e, "b", 500, 1000)
	if err := e.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	full := e.Size()
	b := e.NewWriteBatch()
	b.DeleteRange([]byte("k/a"), []byte("k/b"), nil)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if deleted := e.Size(); deleted < full*9/10 {
		t.Fatalf("Size() fell from %d to %d on a delete alone: the test needs the data to stay until compacted", full, deleted)
	}
	if err := e.Defragment(context.Background()); err != nil {
		t.Fatal(err)
	}
	size, inUse := e.Size(), e.SizeInUse()
	if inUse > 1<<20 {
		t.Fatalf("SizeInUse() = %d after Defragment, with 500 KB live", inUse)
	}
	// What remains beyond the live data is the write-ahead logs: the one
	// in use and the three kept for reuse, preallocated.
	if slack := size - inUse; slack > 5*int64(memTableSize(64<<20)) {
		t.Fatalf("Size() = %d, SizeInUse() = %d after Defragment (it was %d): %d apart", size, inUse, full, slack)
	}
	if v, err := e.Get([]byte("k/b000042")); err != nil || len(v) != 1000 {
		t.Fatalf("Get of a kept key after Defragment = %d bytes, %v", len(v), err)
	}
	if _, err := e.Get([]byte("k/a000042")); err != ErrNotFound {
		t.Fatalf("Get of a deleted key after Defragment: err = %v, want ErrNotFound", err)
	}
}
