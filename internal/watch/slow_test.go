package watch

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// collectPuts reads responses until it has seen want events, checking
// that each response holds whole revisions in order and no revision
// twice, and returns the values in order.
func (c *consumer) collectPuts(id int64, want int) []string {
	c.t.Helper()
	var vals []string
	last := int64(0)
	for len(vals) < want {
		r := c.next()
		if r.WatchID != id || len(r.Events) == 0 {
			c.t.Fatalf("unexpected %s", show(r))
		}
		for _, ev := range r.Events {
			if ev.Kv.ModRevision <= last {
				c.t.Fatalf("revision %d after %d", ev.Kv.ModRevision, last)
			}
			last = ev.Kv.ModRevision
			vals = append(vals, string(ev.Kv.Value))
		}
		if r.Revision < last {
			c.t.Fatalf("header revision %d below its last event %d", r.Revision, last)
		}
	}
	return vals
}

func (c *consumer) state(id int64) watcherState {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.mu.watchers[id].state
}

func seq(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%d,", i)
	}
	return b.String()
}

// TestSlowStreamCatchesUpFromStorage pauses one stream while another keeps
// reading: the paused one's queue stays bounded, its watcher moves to
// catch-up, and once resumed it gets every event in order and rejoins.
func TestSlowStreamCatchesUpFromStorage(t *testing.T) {
	e := newEnv(t, Options{MaxStreamBytes: 2048, CatchUpBytes: 4096, MaxResponseBytes: 1024})
	slow, fast := e.stream(), e.stream()
	slow.watch(WatchRequest{Key: []byte("k"), End: []byte("l"), PrevKV: true})
	fast.watch(WatchRequest{Key: []byte("k"), End: []byte("l")})
	slow.created(0)
	fast.created(0)
	resume := slow.hold()
	const n = 2000
	for i := range n {
		e.put(fmt.Sprintf("k%d", i%7), fmt.Sprint(i))
	}
	// The other stream is not held up.
	if got := strings.Join(fast.collectPuts(0, n), ",") + ","; got != seq(n) {
		t.Fatalf("fast stream got %s", got)
	}
	slow.s.mu.Lock()
	queued := slow.s.mu.bytes
	slow.s.mu.Unlock()
	if queued > 2048+1024 {
		t.Fatalf("held stream queues %d bytes, bound 2048", queued)
	}
	if st := slow.state(0); st != stateUnsynced {
		t.Fatalf("held stream's watcher is %d, want unsynced", st)
	}
	if st := e.hub.Stats(); st != (Stats{Streams: 2, Watchers: 2, Slow: 1}) {
		t.Fatalf("stats %+v", st)
	}
	resume()
	if got := strings.Join(slow.collectPuts(0, n), ",") + ","; got != seq(n) {
		t.Fatalf("slow stream got %s", got)
	}
	// Caught up: back in the synced set, fed by the dispatcher again.
	e.put("k1", "last")
	if vals := slow.collectPuts(0, 1); vals[0] != "last" {
		t.Fatal(vals)
	}
	if st := slow.state(0); st != stateSynced {
		t.Fatalf("watcher is %d after catching up, want synced", st)
	}
	if st := e.hub.Stats(); st != (Stats{Streams: 2, Watchers: 2, Slow: 0}) {
		t.Fatalf("stats %+v", st)
	}
}

// TestNotifyGap: revisions the hub was not given the events of (a store
// restored from a snapshot, or a dispatcher so far behind that Notify
// stopped keeping events) are read back from storage by every watcher.
func TestNotifyGap(t *testing.T) {
	t.Run("restored", func(t *testing.T) {
		e := newEnv(t, Options{})
		c := e.stream()
		c.watch(WatchRequest{Key: []byte("k"), FromKey: true})
		c.created(0)
		e.put("k", "0")
		c.collectPuts(0, 1)
		b := e.eng.NewBatch()
		w := e.store.Write(b)
		for i := 1; i <= 5; i++ {
			if _, err := w.Put(putReq("k", fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		w.Done()
		e.hub.Notify(w.Rev(), nil)
		e.put("k", "6")
		if got := strings.Join(c.collectPuts(0, 6), ","); got != "1,2,3,4,5,6" {
			t.Fatal(got)
		}
	})
	t.Run("overflow", func(t *testing.T) {
		e := newEnv(t, Options{MaxPendingBytes: 200})
		c := e.stream()
		c.watch(WatchRequest{Key: []byte("k"), FromKey: true})
		c.created(0)
		// Stall the dispatcher while writes keep coming: it takes the
		// first put's entry and then waits for the hub's lock, so every
		// later entry stays pending. (Without waiting for it to take the
		// first, a dispatcher slow to be scheduled could take the merged
		// gap along with everything else.)
		e.hub.mu.Lock()
		e.put("k", "0")
		for {
			e.hub.nmu.Lock()
			taken := len(e.hub.nmu.pending) == 0
			e.hub.nmu.Unlock()
			if taken {
				break
			}
			time.Sleep(time.Millisecond)
		}
		for i := 1; i < 100; i++ {
			e.put("k", fmt.Sprint(i))
		}
		e.hub.nmu.Lock()
		gaps := 0
		for _, en := range e.hub.nmu.pending {
			if en.gap {
				gaps++
			}
		}
		e.hub.nmu.Unlock()
		e.hub.mu.Unlock()
		if gaps != 1 {
			t.Fatalf("%d gaps pending, want the overflow merged into 1", gaps)
		}
		if got := strings.Join(c.collectPuts(0, 100), ",") + ","; got != seq(100) {
			t.Fatal(got)
		}
	})
}

func TestProgressWaitsForDispatch(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.stream()
	c.watch(WatchRequest{Key: []byte("k")})
	c.created(0)
	e.hub.mu.Lock()
	e.put("k", "1") // 2: written and notified, not dispatched
	// Asked after the write, the notification covers it, however the
	// request and the dispatch interleave.
	errc := make(chan error, 1)
	go func() { errc <- c.s.RequestProgress(t.Context()) }()
	e.hub.mu.Unlock()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c.expect("{id=0 rev=2 put:k=1@2}")
	c.expect("{id=-1 rev=2}")
}
