package mvcc

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestDefragmentAfterCompaction: history that compaction removed takes
// disk space until Defragment, which brings the engine's size down to
// about its live data while the store stays readable.
func TestDefragmentAfterCompaction(t *testing.T) {
	ts := newTestStore(t)
	// A quota of 64 MiB: 1 MiB memtables, so the write-ahead logs (about
	// 4.4 of them, preallocated) do not dwarf the data.
	const quota = 64 << 20
	ts.engOpts.QuotaBytes = quota
	ts.reopen()
	val := func() string { return rand.Text() + rand.Text() + rand.Text() } // ~80 random bytes
	big := func() string {
		s := ""
		for range 12 {
			s += val()
		}
		return s // ~1 KB
	}
	// 20 versions of 200 keys, then most keys deleted.
	for round := range 20 {
		_, err := ts.apply(func(w *Write) error {
			for k := range 200 {
				if _, err := w.Put(&pb.PutRequest{Key: fmt.Appendf(nil, "key%03d", k), Value: []byte(big())}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(round, err)
		}
	}
	ts.del("key000", "key190", false)
	if err := ts.eng.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	full := ts.eng.Size()
	ch, err := ts.compact(ts.Rev())
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch)
	if err := ts.Defragment(context.Background()); err != nil {
		t.Fatal(err)
	}
	size, inUse := ts.eng.Size(), ts.eng.SizeInUse()
	t.Logf("Size() %d before, %d after; SizeInUse() %d after", full, size, inUse)
	// 10 keys of ~1 KB are left of 4 MB written.
	if inUse > 200<<10 {
		t.Fatalf("SizeInUse() = %d after compaction and Defragment, with ~10 KB live (Size() was %d)", inUse, full)
	}
	if size > full/2 || size-inUse > 5*quota/64 {
		t.Fatalf("Size() = %d, SizeInUse() = %d after compaction and Defragment; Size() was %d", size, inUse, full)
	}
	if got := ts.get("key195", 0); len(got.Kvs) != 1 || got.Kvs[0].Version != 20 {
		t.Fatalf("key195 after Defragment: %v", got.Kvs)
	}
	if got := ts.get("key005", 0); len(got.Kvs) != 0 {
		t.Fatalf("deleted key005 after Defragment: %v", got.Kvs)
	}
}
