package mvcc

import (
	"fmt"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestKeyFilterNoFalseNegatives adds enough keys to fill several segments:
// none of them may be reported absent, and few keys never added may be
// reported present.
func TestKeyFilterNoFalseNegatives(t *testing.T) {
	f := makeKeyFilter()
	f.ready.Store(true)
	const n = 300_000
	for i := range n {
		f.add(keyPrefix(nil, fmt.Appendf(nil, "key/%d", i)))
	}
	if segs := len(f.mu.segs); segs < 3 {
		t.Fatalf("%d keys in %d segments, want at least 3", n, segs)
	}
	for i := range n {
		if f.absent(keyPrefix(nil, fmt.Appendf(nil, "key/%d", i))) {
			t.Fatalf("key/%d added but reported absent", i)
		}
	}
	present := 0
	for i := range n {
		if !f.absent(keyPrefix(nil, fmt.Appendf(nil, "other/%d", i))) {
			present++
		}
	}
	// About 1% per segment; 3 segments hold most keys.
	if rate := float64(present) / n; rate > 0.05 {
		t.Fatalf("false positive rate %.3f", rate)
	}
	t.Logf("%d segments, false positives %.4f", len(f.mu.segs), float64(present)/n)
}

// TestKeyFilterGivesUp: past maxFilterKeys the filter stops growing and
// reports every key as maybe present.
func TestKeyFilterGivesUp(t *testing.T) {
	defer func(n int) { maxFilterKeys = n }(maxFilterKeys)
	maxFilterKeys = 3 * firstFilterKeys
	f := makeKeyFilter()
	f.ready.Store(true)
	for i := range 4 * firstFilterKeys {
		f.add(keyPrefix(nil, fmt.Appendf(nil, "key/%d", i)))
	}
	if !f.mu.gaveUp || f.mu.segs != nil {
		t.Fatalf("gave up %v, %d segments", f.mu.gaveUp, len(f.mu.segs))
	}
	if f.absent(keyPrefix(nil, []byte("never"))) {
		t.Fatal("a filter that gave up reports a key absent")
	}
}

// TestKeyFilterBuilderStopsCounting: on a store with more keys than
// maxFilterKeys, the builder's count pass stops just past it and the
// filter gives up, instead of walking (and reading) the whole keyspace.
func TestKeyFilterBuilderStopsCounting(t *testing.T) {
	ts := newTestStore(t)
	for i := range 1000 {
		ts.mustPut(fmt.Sprint("k", i), "v")
	}
	defer func(n int) { maxFilterKeys = n }(maxFilterKeys)
	maxFilterKeys = 100
	ts.reopen()
	if n := ts.filter.counted.Load(); n != 101 {
		t.Fatalf("the count pass visited %d keys, want 101", n)
	}
	f := ts.filter
	if gaveUp := f.hasGivenUp(); !gaveUp || f.ready.Load() {
		t.Fatalf("gave up %v, ready %v; want a filter that gave up", gaveUp, f.ready.Load())
	}
	// Writes still see the keys' versions (the lookup is never skipped).
	if r := ts.mustPut("k5", "w"); r.Header.Revision == 0 {
		t.Fatal("no revision")
	}
	got := ts.get("k5", 0)
	if len(got.Kvs) != 1 || got.Kvs[0].Version != 2 {
		t.Fatalf("k5 after the overwrite: %v, want version 2", got.Kvs)
	}
}

// TestKeyFilterSkipsLargeStores: on a store larger than
// maxFilterBuildBytes the builder gives up without walking it.
func TestKeyFilterSkipsLargeStores(t *testing.T) {
	ts := newTestStore(t)
	for i := range 1000 {
		ts.mustPut(fmt.Sprint("k", i), "v")
	}
	defer func(n int64) { maxFilterBuildBytes = n }(maxFilterBuildBytes)
	maxFilterBuildBytes = 1
	ts.reopen()
	f := ts.filter
	if gaveUp := f.hasGivenUp(); !gaveUp || f.ready.Load() || f.counted.Load() != 0 {
		t.Fatalf("gave up %v, ready %v, counted %d; want a filter that gave up before walking", gaveUp, f.ready.Load(), f.counted.Load())
	}
	ts.mustPut("k5", "w")
	if got := ts.get("k5", 0); len(got.Kvs) != 1 || got.Kvs[0].Version != 2 {
		t.Fatalf("k5 after the overwrite: %v, want version 2", got.Kvs)
	}
}

// TestKeyFilterNotReady: until the builder has walked the keyspace, every
// key is maybe present.
func TestKeyFilterNotReady(t *testing.T) {
	f := makeKeyFilter()
	if f.absent(keyPrefix(nil, []byte("never"))) {
		t.Fatal("a filter not ready reports a key absent")
	}
}

// TestKeyFilterBuiltFromEngine: after a reopen and a restore, the filter
// built from the engine knows the keys written before, so writes to them
// see their versions.
func TestKeyFilterBuiltFromEngine(t *testing.T) {
	ts := newTestStore(t)
	for i := range 1000 {
		ts.mustPut(fmt.Sprint("k", i), "v")
	}
	ts.del("k5", "", false)
	ts.reopen()
	if !ts.filter.ready.Load() {
		t.Fatal("filter not ready after its builder ended")
	}
	check := func(ts *testStore, key string, wantVer int64, wantPrev bool) {
		t.Helper()
		r := ts.mustPut(key, "w", func(r *pb.PutRequest) { r.PrevKv = true })
		if (r.PrevKv != nil) != wantPrev {
			t.Fatalf("put %s: prev %v, want one: %v", key, r.PrevKv, wantPrev)
		}
		got := ts.get(key, 0)
		if len(got.Kvs) != 1 || got.Kvs[0].Version != wantVer {
			t.Fatalf("%s after put: %v, want version %d", key, got.Kvs, wantVer)
		}
	}
	check(ts, "k7", 2, true)
	check(ts, "k5", 1, false) // deleted before the reopen
	check(ts, "new", 1, false)
	if d := ts.del("k9", "", true); d.Deleted != 1 || len(d.PrevKvs) != 1 {
		t.Fatalf("delete k9 after reopen: %v", d)
	}

	dst := newTestStore(t)
	dst.mustPut("k3", "other")
	if err := dst.Restore(func() error {
		copyKeyspaces(t, ts.eng, dst.eng)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	dst.waitFilter()
	check(dst, "k8", 2, true)
	check(dst, "k3", 2, true)
	check(dst, "fresh", 1, false)
}

// TestKeyFilterWhileBuilding: keys written while the builder walks the
// keyspace are in the filter when it becomes ready.
func TestKeyFilterWhileBuilding(t *testing.T) {
	ts := newTestStore(t)
	for i := range 5000 {
		ts.mustPut(fmt.Sprint("a", i), "v")
	}
	// The store's own filter was built at open: build a second one while
	// writing.
	f := makeKeyFilter()
	old := ts.filter
	ts.filter = f
	go f.build(ts.Store)
	rng := rand.New(rand.NewPCG(1, 2))
	var written []string
	for i := 0; !f.ready.Load() || i < 100; i++ {
		k := fmt.Sprint("b", rng.IntN(1000))
		ts.mustPut(k, "v")
		written = append(written, k)
	}
	<-f.done
	ts.filter = old
	for _, k := range written {
		if f.absent(keyPrefix(nil, []byte(k))) {
			t.Fatalf("%s written while building, reported absent", k)
		}
	}
	for i := range 5000 {
		if f.absent(keyPrefix(nil, []byte(fmt.Sprint("a", i)))) {
			t.Fatalf("a%d reported absent", i)
		}
	}
}

// BenchmarkKeyFilterBuild is the builder's walk of a store of 100,000 keys
// with one version each (what Open and Restore start in the background).
func BenchmarkKeyFilterBuild(b *testing.B) {
	ts := newTestStore(b)
	fill(b, ts, 100_000, 1)
	b.ReportAllocs()
	for b.Loop() {
		f := makeKeyFilter()
		f.build(ts.Store)
		if !f.ready.Load() {
			b.Fatal("not ready")
		}
	}
}

// TestKeyFilterSizedByBuilder: the builder sizes one segment for the keys
// it found, plus a quarter, instead of doubling its way up to them.
func TestKeyFilterSizedByBuilder(t *testing.T) {
	ts := newTestStore(t)
	const n = 100_000
	fill(t, ts, n, 2)
	ts.reopen()
	segs := ts.filter.mu.segs
	// A key the filter already says is there (a false positive) is not
	// added again.
	if len(segs) != 2 || segs[1].cap != max(n+n/4, 2*firstFilterKeys) || segs[1].keys < n*99/100 {
		t.Fatalf("segments after the build: %d, last %d keys of %d", len(segs), segs[len(segs)-1].keys, segs[len(segs)-1].cap)
	}
	for i := range n {
		if ts.filter.absent(keyPrefix(nil, fmt.Appendf(nil, "key/%08d", i))) {
			t.Fatalf("key/%08d reported absent", i)
		}
	}
}

// hasGivenUp reports whether the filter gave up, under its lock.
func (f *keyFilter) hasGivenUp() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.gaveUp
}
