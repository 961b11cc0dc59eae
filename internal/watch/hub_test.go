package watch

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/mvcc"
)

func TestWatchKeyRangePrefixFromKey(t *testing.T) {
	e := newEnv(t, Options{})
	e.put("x", "0") // rev 2
	c := e.stream()
	key := c.watch(WatchRequest{Key: []byte("b")})
	rng := c.watch(WatchRequest{Key: []byte("b"), End: []byte("d")})
	pfx := c.watch(WatchRequest{Key: []byte("b"), End: []byte("c")})
	from := c.watch(WatchRequest{Key: []byte("c"), FromKey: true})
	if key != 0 || rng != 1 || pfx != 2 || from != 3 {
		t.Fatalf("auto ids %d %d %d %d, want 0 1 2 3", key, rng, pfx, from)
	}
	for id := range int64(4) {
		if r := c.created(id); r.Revision != 2 {
			t.Fatalf("created header revision %d, want 2", r.Revision)
		}
	}
	e.put("a", "1")  // 3: none
	e.put("b", "1")  // 4: key, range, prefix
	e.put("ba", "1") // 5: range, prefix
	e.put("c", "1")  // 6: range, from
	e.put("d", "1")  // 7: from
	e.put("zz", "1") // 8: from
	c.expectEach(
		"{id=0 rev=4 put:b=1@4}",
		"{id=1 rev=4 put:b=1@4}",
		"{id=2 rev=4 put:b=1@4}",
		"{id=1 rev=5 put:ba=1@5}",
		"{id=2 rev=5 put:ba=1@5}",
		"{id=1 rev=6 put:c=1@6}",
		"{id=3 rev=6 put:c=1@6}",
		"{id=3 rev=7 put:d=1@7}",
		"{id=3 rev=8 put:zz=1@8}")
	if rest := c.drainUntilProgress(); len(rest) != 0 {
		t.Fatalf("unexpected: %s", showEvents(rest))
	}
}

func TestWatchAtomicPerRevision(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.stream()
	c.watch(WatchRequest{Key: []byte("a"), End: []byte("z")})
	c.created(0)
	e.txn("a=1", "b=1", "zz=1", "c=1") // rev 2
	e.del("a", "c")                    // rev 3: deletes a and b
	// Several requests in one Write (group apply): revisions 4 and 5.
	e.apply(func(w *mvcc.Write) error {
		for _, k := range []string{"a", "b"} {
			if _, err := w.Put(&pb.PutRequest{Key: []byte(k), Value: []byte("2")}); err != nil {
				return err
			}
		}
		return nil
	})
	c.expect("{id=0 rev=2 put:a=1@2 put:b=1@2 put:c=1@2}")
	c.expect("{id=0 rev=3 del:a@3 del:b@3}")
	c.expect("{id=0 rev=4 put:a=2@4}")
	c.expect("{id=0 rev=5 put:b=2@5}")
}

func TestWatchPrevKVAndFilters(t *testing.T) {
	e := newEnv(t, Options{})
	e.put("k", "0") // 2
	c := e.stream()
	c.watch(WatchRequest{Key: []byte("k"), PrevKV: true})
	c.watch(WatchRequest{Key: []byte("k")})
	c.watch(WatchRequest{Key: []byte("k"), NoPut: true})
	c.watch(WatchRequest{Key: []byte("k"), NoDelete: true, PrevKV: true})
	for id := range int64(4) {
		c.created(id)
	}
	e.put("k", "1") // 3
	e.del("k", "")  // 4
	e.put("k", "2") // 5: a new key: no previous value
	c.expectEach(
		"{id=0 rev=3 put:k=1@3(prev=0)}",
		"{id=1 rev=3 put:k=1@3}",
		"{id=3 rev=3 put:k=1@3(prev=0)}",
		"{id=0 rev=4 del:k@4(prev=1)}",
		"{id=1 rev=4 del:k@4}",
		"{id=2 rev=4 del:k@4}",
		"{id=0 rev=5 put:k=2@5}",
		"{id=1 rev=5 put:k=2@5}",
		"{id=3 rev=5 put:k=2@5}")

	// The same from storage (a historical watch catches up).
	e.settle()
	h := e.stream()
	h.watch(WatchRequest{Key: []byte("k"), PrevKV: true, StartRev: 3})
	h.watch(WatchRequest{Key: []byte("k"), StartRev: 3, NoDelete: true})
	h.expectEach(
		"{id=0 rev=5 created}",
		"{id=1 rev=5 created}",
		"{id=0 rev=5 put:k=1@3(prev=0) del:k@4(prev=1) put:k=2@5}",
		"{id=1 rev=5 put:k=1@3 put:k=2@5}")
}

func TestWatchStartRevision(t *testing.T) {
	e := newEnv(t, Options{})
	for i := range 5 {
		e.put("k", fmt.Sprint(i)) // revs 2..6
	}
	e.settle() // so that the first three catch up from storage
	c := e.stream()
	c.watch(WatchRequest{Key: []byte("k"), StartRev: 4}) // historical, inclusive
	c.watch(WatchRequest{Key: []byte("k"), StartRev: 8}) // future
	c.watch(WatchRequest{Key: []byte("k"), StartRev: 1}) // the whole history
	c.watch(WatchRequest{Key: []byte("k"), StartRev: 7}) // the next revision
	c.expectEach(
		"{id=0 rev=6 created}",
		"{id=1 rev=6 created}",
		"{id=2 rev=6 created}",
		"{id=3 rev=6 created}",
		"{id=0 rev=6 put:k=2@4 put:k=3@5 put:k=4@6}",
		"{id=2 rev=6 put:k=0@2 put:k=1@3 put:k=2@4 put:k=3@5 put:k=4@6}")
	e.put("k", "5") // 7
	e.put("k", "6") // 8
	want := map[string]bool{
		"{id=0 rev=7 put:k=5@7}": true, "{id=2 rev=7 put:k=5@7}": true, "{id=3 rev=7 put:k=5@7}": true,
		"{id=0 rev=8 put:k=6@8}": true, "{id=1 rev=8 put:k=6@8}": true, "{id=2 rev=8 put:k=6@8}": true, "{id=3 rev=8 put:k=6@8}": true,
	}
	for range len(want) {
		r := show(c.next())
		if !want[r] {
			t.Fatalf("unexpected %s", r)
		}
		delete(want, r)
	}
}

func TestWatchIDs(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.stream()
	ctx := context.Background()
	if id := c.watch(WatchRequest{ID: 1, Key: []byte("a")}); id != 1 {
		t.Fatalf("chosen id %d", id)
	}
	c.created(1)
	if _, err := c.s.Watch(ctx, WatchRequest{ID: 1, Key: []byte("b")}); !errors.Is(err, ErrWatcherDuplicateID) {
		t.Fatalf("duplicate id: %v", err)
	}
	c.expect(`{id=-1 rev=1 created canceled reason="mvcc: duplicate watch ID provided on the WatchStream"}`)
	// Auto ids take the lowest free ones.
	for _, want := range []int64{0, 2, 3} {
		if id := c.watch(WatchRequest{Key: []byte("a")}); id != want {
			t.Fatalf("auto id %d, want %d", id, want)
		}
		c.created(want)
	}
	if _, err := c.s.Watch(ctx, WatchRequest{Key: []byte("b"), End: []byte("a")}); !errors.Is(err, ErrEmptyWatcherRange) {
		t.Fatalf("empty range: %v", err)
	}
	c.expect(`{id=-1 rev=1 created canceled reason="mvcc: watcher range is empty"}`)
	if err := c.s.Reject(ctx, "etcdserver: mvcc: required revision has been compacted"); err != nil {
		t.Fatal(err)
	}
	c.expect(`{id=-1 rev=1 created canceled reason="etcdserver: mvcc: required revision has been compacted"}`)
	// Another stream has its own ids.
	d := e.stream()
	if id := d.watch(WatchRequest{ID: 1, Key: []byte("a")}); id != 1 {
		t.Fatalf("other stream's id %d", id)
	}
}

func TestWatchCancel(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.stream()
	ctx := context.Background()
	c.watch(WatchRequest{Key: []byte("a")})
	c.watch(WatchRequest{Key: []byte("a")})
	c.created(0)
	c.created(1)
	e.put("a", "1") // 2
	c.expectEach("{id=0 rev=2 put:a=1@2}", "{id=1 rev=2 put:a=1@2}")
	if err := c.s.Cancel(ctx, 0); err != nil {
		t.Fatal(err)
	}
	c.expect("{id=0 rev=2 canceled}")
	if err := c.s.Cancel(ctx, 0); !errors.Is(err, ErrWatcherNotExist) {
		t.Fatalf("second cancel: %v", err)
	}
	e.put("a", "2")
	c.expect("{id=1 rev=3 put:a=2@3}")
	// Responses queued before a cancel still go out before it.
	resume := c.hold()
	e.put("a", "3")
	e.settle()
	if err := c.s.Cancel(ctx, 1); err != nil {
		t.Fatal(err)
	}
	e.put("a", "4")
	resume()
	c.expect("{id=1 rev=4 put:a=3@4}")
	c.expect("{id=1 rev=4 canceled}")
	// The id is free again.
	if id := c.watch(WatchRequest{ID: 1, Key: []byte("a")}); id != 1 {
		t.Fatal(id)
	}
	c.created(1)
}

func TestWatchCompacted(t *testing.T) {
	e := newEnv(t, Options{})
	for i := range 5 {
		e.put("k", fmt.Sprint(i)) // 2..6
	}
	e.compact(4)
	e.settle()
	c := e.stream()
	c.watch(WatchRequest{Key: []byte("k"), StartRev: 3})
	c.watch(WatchRequest{Key: []byte("k"), StartRev: 4, PrevKV: true})
	c.created(0)
	// Watcher 0's compaction answer may come before or after watcher 1 is
	// created; watcher 1's events only after its creation.
	got := map[int64]string{}
	created1 := false
	for range 3 {
		r := c.next()
		switch {
		case r.WatchID == 1 && r.Created:
			created1 = true
		case r.WatchID == 1 && !created1:
			t.Fatalf("watcher 1's %s before its creation", show(r))
		default:
			got[r.WatchID] = show(r)
		}
	}
	if !created1 {
		t.Fatalf("watcher 1 was not created: %v", got)
	}
	if want := "{id=0 rev=0 canceled compact=4}"; got[0] != want {
		t.Errorf("from 3: %s, want %s", got[0], want)
	}
	// At the compaction revision itself the history is still there (the
	// event at 4 has no previous value any more: it is below the
	// compaction, as in etcd).
	if want := "{id=1 rev=6 put:k=2@4 put:k=3@5(prev=2) put:k=4@6(prev=3)}"; got[1] != want {
		t.Errorf("from 4: %s, want %s", got[1], want)
	}
	// A compacted watcher keeps its id until canceled, as in etcd.
	if _, err := c.s.Watch(context.Background(), WatchRequest{ID: 0, Key: []byte("k")}); err != nil {
		t.Fatalf("auto id: %v", err)
	}
	c.created(2)
	if err := c.s.Cancel(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	c.expect("{id=0 rev=6 canceled}")
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, Options{Registerer: reg})
	c := e.stream()
	c.watch(WatchRequest{Key: []byte("a")})
	c.watch(WatchRequest{Key: []byte("a"), StartRev: 1})
	c.created(0)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if got["etcd_debugging_mvcc_watch_stream_total"] != 1 || got["etcd_debugging_mvcc_watcher_total"] != 2 {
		t.Fatalf("metrics %v", got)
	}
	if _, ok := got["etcd_debugging_mvcc_slow_watcher_total"]; !ok {
		t.Fatalf("no slow watcher gauge in %v", got)
	}
}
