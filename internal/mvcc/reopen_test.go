package mvcc

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/storage"
)

func TestReopenRestoresState(t *testing.T) {
	ts := newTestStore(t)
	for i := range 10 {
		ts.mustPut(fmt.Sprint("k", i%3), fmt.Sprint(i)) // 2..11
	}
	if _, err := ts.compact(6); err != nil {
		t.Fatal(err)
	}
	ts.del("k0", "k2", false) // 12: the last write is a delete
	before := ts.get("k", 0)
	ts.reopen()
	if ts.Rev() != 12 || ts.CompactRev() != 6 {
		t.Fatalf("after reopen: rev %d compact %d, want 12 6", ts.Rev(), ts.CompactRev())
	}
	if _, err := ts.Range(&pb.RangeRequest{Key: []byte("k0"), Revision: 5}); err != ErrCompacted {
		t.Fatalf("read below the compaction after reopen: %v", err)
	}
	if got := ts.get("k", 0); kvString(got.Kvs) != kvString(before.Kvs) {
		t.Fatalf("reads differ after reopen")
	}
	if r := ts.mustPut("k9", "x"); r.Header.Revision != 13 {
		t.Fatalf("first write after reopen at %d, want 13", r.Header.Revision)
	}
}

// TestCompactionResumesAfterRestart: a compaction that was scheduled and
// committed but not physically finished (a crash, or Close midway) is
// finished by the next Open.
func TestCompactionResumesAfterRestart(t *testing.T) {
	defer func(n int) { compactChunkEvents = n }(compactChunkEvents)
	compactChunkEvents = 3
	for _, midway := range []bool{false, true} {
		t.Run(fmt.Sprint("midway=", midway), func(t *testing.T) {
			ts := newTestStore(t)
			for i := range 20 {
				ts.mustPut(fmt.Sprint("k", i%4), fmt.Sprint(i)) // 2..21
			}
			// Commit the compaction, as the apply loop would, then "crash"
			// before Done starts the background work.
			b := ts.eng.NewBatch()
			if _, _, err := ts.Store.Write(b).Compact(&pb.CompactionRequest{Revision: 18}); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(false); err != nil {
				t.Fatal(err)
			}
			if midway {
				if _, done, err := ts.compactChunk(18, []byte{storage.PrefixEvents}); err != nil || done {
					t.Fatalf("first chunk: done %v err %v", done, err)
				}
			}
			ts.reopen()
			if ts.CompactRev() != 18 {
				t.Fatalf("compact rev after reopen %d, want 18", ts.CompactRev())
			}
			waitClosed(t, ts.comp.barrier(18))
			// Put i went to k(i%4) at revision i+2: at or below 18 each key
			// keeps its newest version (k0@18, k3@17, k2@16, k1@15), and
			// the puts at 19, 20, 21 stay.
			if n := countPrefix(t, ts.eng, storage.PrefixKeys); n != 4+3 {
				t.Fatalf("%d versions after the resumed compaction, want 7", n)
			}
			if n := countPrefix(t, ts.eng, storage.PrefixEvents); n != 4 {
				t.Fatalf("%d events after the resumed compaction, want 4 (revisions 18..21)", n)
			}
			for i := range 4 {
				k := fmt.Sprint("k", i)
				if got := ts.get(k, 18); len(got.Kvs) != 1 {
					t.Fatalf("%s@18 gone after compaction", k)
				}
			}
			// And it stays finished.
			ts.reopen()
			if got := ts.comp.pendingWaiters(); len(got) != 0 {
				t.Fatalf("waiters after reopen: %v", got)
			}
			if fin, _ := readMeta(ts.eng, metaCompactFinished, -1); fin != 18 {
				t.Fatalf("finished compaction %d, want 18", fin)
			}
		})
	}
}

// TestUnpublishedWriteInvisible: between the batch commit and Done, readers
// keep seeing the old revision, even though the data is in Pebble.
func TestUnpublishedWriteInvisible(t *testing.T) {
	ts := newTestStore(t)
	ts.mustPut("a", "1") // 2
	h0, _, _, err := ts.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	b := ts.eng.NewBatch()
	w := ts.Store.Write(b)
	if _, err := w.Put(&pb.PutRequest{Key: []byte("a"), Value: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(&pb.PutRequest{Key: []byte("b"), Value: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	resp := ts.get("a", 0)
	all, _ := ts.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	evs, _, _, _ := ts.Events(3, 0)
	h1, _, _, _ := ts.HashKV(0)
	if ts.Rev() != 2 || kvString(resp.Kvs) != "a=1@2/2/1" || all.Count != 1 || len(evs) != 0 || h1 != h0 {
		t.Fatalf("unpublished write visible: rev %d, a=%q, count %d, %d events, hash changed %v",
			ts.Rev(), kvString(resp.Kvs), all.Count, len(evs), h1 != h0)
	}
	w.Done()
	if ts.Rev() != 4 || kvString(ts.get("a", 0).Kvs) != "a=2@2/3/2" {
		t.Fatalf("after Done: rev %d a=%q", ts.Rev(), kvString(ts.get("a", 0).Kvs))
	}
}

func TestHashKV(t *testing.T) {
	history := func(ts *testStore) {
		for i := range 12 {
			ts.mustPut(fmt.Sprint("k", i%5), fmt.Sprint(i), withLease(int64(1+i%2)))
			if i%4 == 3 {
				ts.del(fmt.Sprint("k", i%3), "", false)
			}
		}
	}
	a, b := newTestStore(t), newTestStore(t)
	history(a)
	history(b)
	if a.Rev() != b.Rev() {
		t.Fatal("histories differ")
	}
	for rev := int64(1); rev <= a.Rev(); rev++ {
		ha, _, _, err1 := a.HashKV(rev)
		hb, _, hr, err2 := b.HashKV(rev)
		if err1 != nil || err2 != nil || ha != hb || hr != rev {
			t.Fatalf("rev %d: hashes %x %x (%v %v), hash rev %d", rev, ha, hb, err1, err2, hr)
		}
	}
	// The hash does not depend on whether the physical compaction ran: b's
	// is held back while a's completes.
	release := make(chan struct{})
	compactHook = func() { <-release }
	defer func() { compactHook = nil }()
	cha, _ := a.compact(9)
	close(release) // a's may run...
	waitClosed(t, cha)
	release = make(chan struct{})
	chb, _ := b.compact(9) // ...b's waits
	// At the compaction's own revision the hash is the one taken when it
	// was scheduled, over what the compaction before it (none: -1) left,
	// as etcd answers it.
	for rev, wantCompact := range map[int64]int64{0: 9, 9: -1, 12: 9} {
		ha, ca, _, err1 := a.HashKV(rev)
		hb, cb, _, err2 := b.HashKV(rev)
		if err1 != nil || err2 != nil || ha != hb || ca != wantCompact || cb != wantCompact {
			t.Fatalf("rev %d after compaction: %x/%d %x/%d (%v %v), want compaction revision %d", rev, ha, ca, hb, cb, err1, err2, wantCompact)
		}
	}
	close(release)
	waitClosed(t, chb)
	if _, _, _, err := a.HashKV(8); err != ErrCompacted {
		t.Fatalf("hash below the compaction: %v", err)
	}
	if _, _, _, err := a.HashKV(a.Rev() + 1); err != ErrFutureRev {
		t.Fatalf("hash of a future revision: %v", err)
	}
	h1, _, _, _ := a.HashKV(0)
	a.mustPut("k1", "other")
	b.mustPut("k1", "another")
	if h2, _, _, _ := a.HashKV(0); h2 == h1 {
		t.Fatal("a write did not change the hash")
	}
	if ha, _, _, _ := a.HashKV(0); func() bool { hb, _, _, _ := b.HashKV(0); return ha == hb }() {
		t.Fatal("different writes gave the same hash")
	}
}
