package watch

import (
	"context"
	"testing"
)

func TestRequestProgress(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	c := e.stream()
	// No watchers: no notification, as in etcd.
	if err := c.s.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	c.watch(WatchRequest{Key: []byte("a")})
	c.created(0)
	e.put("b", "1") // 2
	e.put("a", "1") // 3
	e.put("b", "2") // 4
	c.expect("{id=0 rev=3 put:a=1@3}")
	if err := c.s.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	c.expect("{id=-1 rev=4}")

	// While a watcher catches up, the answer waits, and then comes after
	// every event up to its revision.
	resume := c.hold()
	c.watch(WatchRequest{Key: []byte("b"), StartRev: 1})
	if err := c.s.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.s.RequestProgress(ctx); err != nil { // coalesced with the first
		t.Fatal(err)
	}
	e.put("b", "3") // 5
	resume()
	c.created(1)
	c.expect("{id=1 rev=5 put:b=1@2 put:b=2@4 put:b=3@5}")
	c.expect("{id=-1 rev=5}")
	e.put("a", "2") // 6
	c.expect("{id=0 rev=6 put:a=2@6}")
}

func TestProgressNotify(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.stream()
	c.watch(WatchRequest{Key: []byte("a"), ProgressNotify: true})
	c.watch(WatchRequest{Key: []byte("b"), ProgressNotify: true})
	c.watch(WatchRequest{Key: []byte("c")})
	c.created(0)
	c.created(1)
	c.created(2)
	tk := e.ticker()
	e.put("x", "1") // 2
	e.settle()
	tick(t, tk)
	c.expectEach("{id=0 rev=2}", "{id=1 rev=2}")
	e.put("a", "1") // 3
	c.expect("{id=0 rev=3 put:a=1@3}")
	// A watcher that got events since the last tick gets no notification.
	tick(t, tk)
	c.expect("{id=1 rev=3}")
	tick(t, tk)
	c.expectEach("{id=0 rev=3}", "{id=1 rev=3}")

	// A watcher waiting for a future revision gets none until the store
	// reaches it (as in etcd).
	f := e.stream()
	f.watch(WatchRequest{Key: []byte("a"), StartRev: 5, ProgressNotify: true})
	f.created(0)
	ftk := e.ticker()
	tick(t, ftk)
	e.put("x", "2") // 4
	e.settle()
	tick(t, ftk)
	if err := f.s.Cancel(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	f.expect("{id=0 rev=4 canceled}")

	g := e.stream()
	g.watch(WatchRequest{Key: []byte("a"), StartRev: 5, ProgressNotify: true})
	g.created(0)
	gtk := e.ticker()
	e.put("x", "3") // 5
	e.settle()
	tick(t, gtk)
	g.expect("{id=0 rev=5}")
}

// TestRequestProgressFutureWatcher: a watcher waiting for a future
// revision holds the stream's notification back (etcd would drop it)
// until the store gets there or the watcher goes.
func TestRequestProgressFutureWatcher(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	c := e.stream()
	c.watch(WatchRequest{Key: []byte("a")})
	c.watch(WatchRequest{Key: []byte("a"), StartRev: 4})
	c.watch(WatchRequest{Key: []byte("a"), StartRev: 100})
	c.created(0)
	c.created(1)
	c.created(2)
	if err := c.s.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	e.put("x", "1") // 2
	e.put("x", "2") // 3
	e.put("x", "3") // 4
	e.settle()
	if err := c.s.Cancel(ctx, 2); err != nil {
		t.Fatal(err)
	}
	c.expect("{id=2 rev=4 canceled}")
	c.expect("{id=-1 rev=4}")
}
