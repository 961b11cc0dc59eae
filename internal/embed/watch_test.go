package embed

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/internal/freeport"
)

// nextEvents reads from wc until n events have arrived, failing on a
// canceled or closed channel.
func nextEvents(t *testing.T, wc clientv3.WatchChan, n int) []*clientv3.Event {
	t.Helper()
	var evs []*clientv3.Event
	for len(evs) < n {
		wr, ok := <-wc
		if !ok {
			t.Fatalf("watch channel closed after %d of %d events", len(evs), n)
		}
		if err := wr.Err(); err != nil {
			t.Fatalf("watch failed after %d of %d events: %v", len(evs), n, err)
		}
		evs = append(evs, wr.Events...)
	}
	if len(evs) != n {
		t.Fatalf("got %d events, want %d", len(evs), n)
	}
	return evs
}

func checkEvent(t *testing.T, ev *clientv3.Event, typ mvccpb.Event_EventType, key, val string, rev int64) {
	t.Helper()
	if ev.Type != typ || string(ev.Kv.Key) != key || string(ev.Kv.Value) != val || ev.Kv.ModRevision != rev {
		t.Errorf("event %v %q=%q at %d, want %v %q=%q at %d", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision, typ, key, val, rev)
	}
}

// TestWatchEndToEnd drives a member's Watch service through clientv3:
// live events on a prefix, history from a past revision with prev_kv, a
// watch from a compacted revision, and a progress request.
func TestWatchEndToEnd(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	ctx := ctxT(t)

	live := c.Watch(ctx, "a/", clientv3.WithPrefix())
	// The watch exists once the server answered created; a progress
	// request is answered only after that.
	if err := c.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	if wr := <-live; !wr.IsProgressNotify() || wr.Header.Revision != 1 {
		t.Fatalf("progress answer %+v, want a notification at revision 1", wr)
	}
	for i, kv := range [][2]string{{"a/1", "x"}, {"b/1", "y"}, {"a/2", "z"}, {"a/1", "w"}} {
		if _, err := c.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if _, err := c.Delete(ctx, "a/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	evs := nextEvents(t, live, 5)
	checkEvent(t, evs[0], mvccpb.PUT, "a/1", "x", 2)
	checkEvent(t, evs[1], mvccpb.PUT, "a/2", "z", 4)
	checkEvent(t, evs[2], mvccpb.PUT, "a/1", "w", 5)
	checkEvent(t, evs[3], mvccpb.DELETE, "a/1", "", 6)
	checkEvent(t, evs[4], mvccpb.DELETE, "a/2", "", 6)

	past := c.Watch(ctx, "a/1", clientv3.WithRev(2), clientv3.WithPrevKV())
	evs = nextEvents(t, past, 3)
	checkEvent(t, evs[1], mvccpb.PUT, "a/1", "w", 5)
	if evs[1].PrevKv == nil || string(evs[1].PrevKv.Value) != "x" {
		t.Errorf("re-put's prev_kv %v, want x", evs[1].PrevKv)
	}
	if evs[2].PrevKv == nil || string(evs[2].PrevKv.Value) != "w" {
		t.Errorf("delete's prev_kv %v, want w", evs[2].PrevKv)
	}

	if _, err := c.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	wr := <-c.Watch(ctx, "a/", clientv3.WithPrefix(), clientv3.WithRev(3))
	if wr.CompactRevision != 5 || !errors.Is(wr.Err(), rpctypes.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: compact revision %d, err %v; want 5, %v", wr.CompactRevision, wr.Err(), rpctypes.ErrCompacted)
	}
}

// TestWatchOnFollower watches on every member of a cluster while writes go
// through one: each watcher gets every event, in order.
func TestWatchOnFollower(t *testing.T) {
	ms := startCluster(t, 3, "http", nil)
	ctx := ctxT(t)
	var chans []clientv3.WatchChan
	for _, m := range ms {
		c := client(t, m)
		// From revision 1: the watcher misses nothing whenever it starts.
		chans = append(chans, c.Watch(ctx, "k", clientv3.WithPrefix(), clientv3.WithRev(1)))
	}
	w := client(t, ms[0])
	const n = 50
	for i := range n {
		if _, err := w.Put(ctx, fmt.Sprintf("k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	for j, wc := range chans {
		evs := nextEvents(t, wc, n)
		for i, ev := range evs {
			if string(ev.Kv.Key) != fmt.Sprintf("k%02d", i) || ev.Kv.ModRevision != int64(i+2) {
				t.Fatalf("member %d: event %d is %q at %d", j+1, i, ev.Kv.Key, ev.Kv.ModRevision)
			}
		}
	}
}

// TestWatchResumesAcrossRestart restarts the member a watcher is connected
// to: clientv3 resumes the watch from the last revision it saw, and the
// watcher gets every event exactly once.
func TestWatchResumesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	url := "http://" + freeport.Addr(t)
	cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []string{url}, []string{url}
	m, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := client(t, m)
	ctx := ctxT(t)
	wc := c.Watch(ctx, "k", clientv3.WithPrefix())
	if err := c.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	<-wc // the progress answer: the watcher is registered
	put := func(i int) {
		t.Helper()
		if _, err := c.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	for i := range 5 {
		put(i)
	}
	nextEvents(t, wc, 5)
	m.Close()

	m = start(t, cfg)
	for i := 5; i < 10; i++ {
		put(i)
	}
	evs := nextEvents(t, wc, 5)
	for i, ev := range evs {
		if string(ev.Kv.Key) != fmt.Sprintf("k%d", i+5) || ev.Kv.ModRevision != int64(i+7) {
			t.Errorf("event %d after restart: %q at %d", i, ev.Kv.Key, ev.Kv.ModRevision)
		}
	}
}

// TestWatchRequiringLeaderEndsWithoutOne cuts a member off from its
// cluster: a watch that required a leader ends with etcd's "no leader",
// so its client can move to a member that still sees writes, while a
// watch that did not require one stays open.
func TestWatchRequiringLeaderEndsWithoutOne(t *testing.T) {
	ms := startCluster(t, 3, "http", nil)
	ctx := ctxT(t)
	c := client(t, ms[2])
	if _, err := c.Put(ctx, "x", "y"); err != nil { // the member knows the leader
		t.Fatal(err)
	}
	required := c.Watch(clientv3.WithRequireLeader(ctx), "k")
	plain := c.Watch(ctx, "k")
	if err := c.RequestProgress(clientv3.WithRequireLeader(ctx)); err != nil {
		t.Fatal(err)
	}
	if err := c.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	for _, wc := range []clientv3.WatchChan{required, plain} {
		// The progress answers: both watchers are registered.
		if wr := <-wc; !wr.IsProgressNotify() {
			t.Fatalf("got %+v, want a progress notification", wr)
		}
	}
	ms[0].Close()
	ms[1].Close()

	var err error
	for wr := range required {
		if err = wr.Err(); err != nil {
			break
		}
	}
	if !errors.Is(err, rpctypes.ErrNoLeader) {
		t.Fatalf("watch requiring a leader ended with %v, want %v", err, rpctypes.ErrNoLeader)
	}
	select {
	case wr, ok := <-plain:
		if !ok || wr.Err() != nil {
			t.Fatalf("watch not requiring a leader ended: %v", wr.Err())
		}
	default:
	}
}
