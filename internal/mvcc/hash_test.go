package mvcc

import (
	"context"
	"fmt"
	"testing"

	"go.etcd.io/etcd/pkg/v3/traceutil"
)

// hashHistory writes a history with overwrites, deletes and re-creations,
// the same on each store given.
func hashHistory(stores ...*testStore) {
	for _, ts := range stores {
		for i := range 40 {
			ts.mustPut(fmt.Sprint("k", i%7), fmt.Sprint("v", i), withLease(int64(1+i%2)))
			if i%5 == 4 {
				ts.del(fmt.Sprint("k", i%3), "", false)
			}
		}
	}
}

type kvHash struct {
	hash                uint32
	compactRev, hashRev int64
}

func hashAt(t *testing.T, ts *testStore, rev int64) kvHash {
	t.Helper()
	h, c, r, err := ts.HashKV(rev)
	if err != nil {
		t.Fatalf("HashKV(%d): %v", rev, err)
	}
	return kvHash{h, c, r}
}

// TestHashAtCompactionSurvivesCompactionAndDefragment: the hash at a
// revision R, taken before the store is compacted at R, is what every
// member answers for R afterwards, once the history below R is physically
// gone and the engine defragmented, after a restart too, and on a member
// whose compaction ran while another's did not. That is what etcd's
// compaction-time hash check compares.
func TestHashAtCompactionSurvivesCompactionAndDefragment(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	hashHistory(a, b)
	const first, second = 20, 40
	beforeFirst := hashAt(t, a, first)
	if got := hashAt(t, b, first); got != beforeFirst {
		t.Fatalf("members with the same history: %+v and %+v", beforeFirst, got)
	}
	for _, ts := range []*testStore{a, b} {
		ch, err := ts.compact(first)
		if err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ch)
	}
	beforeSecond := hashAt(t, a, second)
	if beforeSecond.compactRev != first {
		t.Fatalf("HashKV(%d) after compacting at %d: %+v", second, first, beforeSecond)
	}
	// a compacts at the second revision and defragments; b compacts there
	// too but its physical compaction is held back.
	ch, err := a.compact(second)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch)
	if err := a.Defragment(context.Background()); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	compactHook = func() { <-release }
	defer func() { compactHook = nil }()
	chb, err := b.compact(second)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		for _, tc := range []struct {
			ts   *testStore
			name string
		}{{a, "a"}, {b, "b"}} {
			if got := hashAt(t, tc.ts, first); got != beforeFirst {
				t.Errorf("%s: %s HashKV(%d) = %+v, was %+v before compacting at it", when, tc.name, first, got, beforeFirst)
			}
			if got := hashAt(t, tc.ts, second); got != beforeSecond {
				t.Errorf("%s: %s HashKV(%d) = %+v, was %+v before compacting at it", when, tc.name, second, got, beforeSecond)
			}
		}
	}
	check("b's compaction pending")
	close(release)
	waitClosed(t, chb)
	check("both compacted")
	a.reopen()
	b.reopen()
	check("after a restart")
	if _, _, _, err := a.HashKV(first + 1); err != ErrCompacted {
		t.Fatalf("HashKV below the compaction revision, not a compaction's: err = %v, want ErrCompacted", err)
	}
}

// TestCompactionHashesKeepTheNewest: only the newest compactionHashes
// compaction hashes are kept.
func TestCompactionHashesKeepTheNewest(t *testing.T) {
	ts := newTestStore(t)
	hashHistory(ts)
	for rev := int64(2); rev <= 2+compactionHashes; rev++ {
		ch, err := ts.compact(rev)
		if err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ch)
	}
	kept, err := ts.hashMetaRevs(metaHashKept)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != compactionHashes || kept[0].rev != 3 {
		t.Fatalf("kept compaction hashes %+v, want the %d newest, from 3", kept, compactionHashes)
	}
	if _, _, _, err := ts.HashKV(2); err != ErrCompacted {
		t.Fatalf("HashKV of a compaction whose hash was dropped: err = %v, want ErrCompacted", err)
	}
}

// TestHashAtCompactionLikeEtcd: etcd too answers HashKV at a compaction
// revision with the hash taken before it, and the compaction revision
// before it; ours reports the same revisions.
func TestHashAtCompactionLikeEtcd(t *testing.T) {
	ts := newTestStore(t)
	o := newEtcdOracle(t)
	for i := range 30 {
		ts.mustPut(fmt.Sprint("k", i%4), fmt.Sprint(i))
		o.kv.Put([]byte(fmt.Sprint("k", i%4)), []byte(fmt.Sprint(i)), 0)
	}
	o.events(t, 30)
	for _, rev := range []int64{10, 25} {
		wantBefore, _, err := o.kv.HashStorage().HashByRev(rev)
		if err != nil {
			t.Fatal(err)
		}
		before := hashAt(t, ts, rev)
		done, err := o.kv.Compact(traceutil.TODO(), rev)
		if err != nil {
			t.Fatal(err)
		}
		<-done
		ch, err := ts.compact(rev)
		if err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ch)
		wantAfter, _, err := o.kv.HashStorage().HashByRev(rev)
		if err != nil {
			t.Fatal(err)
		}
		after := hashAt(t, ts, rev)
		if wantAfter != wantBefore {
			t.Fatalf("etcd's HashByRev(%d) changed with its compaction: %+v, then %+v", rev, wantBefore, wantAfter)
		}
		if after != before || after.compactRev != wantAfter.CompactRevision || after.hashRev != wantAfter.Revision {
			t.Fatalf("HashKV(%d): %+v before compacting at it, %+v after; etcd: compaction revision %d, revision %d",
				rev, before, after, wantAfter.CompactRevision, wantAfter.Revision)
		}
	}
}
