package mvcc

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairn-db/cairn/internal/storage"
)

// copyKeyspaces makes dst's mvcc keyspaces a copy of src's, as a snapshot
// install does.
func copyKeyspaces(t *testing.T, src, dst *storage.Engine) {
	t.Helper()
	b := dst.NewWriteBatch()
	for _, p := range []byte{storage.PrefixKeys, storage.PrefixEvents, storage.PrefixMVCCMeta} {
		lo, hi := []byte{p}, []byte{p + 1}
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			t.Fatal(err)
		}
		it, err := src.DB().NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			t.Fatal(err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			if err := b.Set(it.Key(), it.Value(), nil); err != nil {
				t.Fatal(err)
			}
		}
		it.Close()
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreReplacesState(t *testing.T) {
	src := newTestStore(t)
	src.mustPut("a", "1")
	src.mustPut("b", "2")
	src.mustPut("a", "3")
	src.mustPut("c", "4")

	dst := newTestStore(t)
	dst.mustPut("zzz", "only here")
	// A physical compaction waiter on dst carries over the restore.
	done, err := dst.compact(2)
	if err != nil {
		t.Fatal(err)
	}
	<-done

	// Compaction scheduled in src's state but not finished: dst resumes it.
	hold := make(chan struct{})
	compactHook = func() { <-hold }
	defer func() { compactHook = nil }() // once every compaction below is done
	srcDone, err := src.compact(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(func() error {
		copyKeyspaces(t, src.eng, dst.eng) // src's compaction waits in the hook
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(hold)
	<-srcDone

	if dst.Rev() != src.Rev() || dst.CompactRev() != 3 {
		t.Fatalf("after restore rev %d compact %d; want %d and 3", dst.Rev(), dst.CompactRev(), src.Rev())
	}
	if r := dst.get("zzz", 0); len(r.Kvs) != 0 {
		t.Fatalf("key of the replaced state survived: %v", r.Kvs)
	}
	if r := dst.get("a", 0); len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "3" || r.Kvs[0].Version != 2 {
		t.Fatalf("a = %v", r.Kvs)
	}
	h1, c1, r1, err1 := src.HashKV(0)
	h2, c2, r2, err2 := dst.HashKV(0)
	if err1 != nil || err2 != nil || h1 != h2 || c1 != c2 || r1 != r2 {
		t.Fatalf("HashKV src %x/%d/%d/%v dst %x/%d/%d/%v", h1, c1, r1, err1, h2, c2, r2, err2)
	}
	// Writes continue from the restored revision.
	if p := dst.mustPut("d", "5"); p.Header.Revision != src.Rev()+1 {
		t.Fatalf("put after restore at revision %d, want %d", p.Header.Revision, src.Rev()+1)
	}
	// The compaction the restored state scheduled finishes on dst too.
	ch, err := dst.compact(3)
	if err == nil {
		t.Fatal("compaction at the restored compaction revision succeeded")
	}
	<-ch
}
