package watch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/storage"
)

// waitFor bounds every wait of these tests; passing it fails the test.
const waitFor = 30 * time.Second

// env is a hub over a real mvcc store on a fresh engine, with writes
// applied the way the apply loop does: one Write, commit, Done, Notify.
type env struct {
	t     testing.TB
	eng   *storage.Engine
	store *mvcc.Store
	hub   *Hub
	clock *clocktest.Fake
}

func newEnv(t testing.TB, opts Options) *env {
	t.Helper()
	eng, err := storage.Open(t.TempDir(), storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mvcc.Open(eng, mvcc.Options{})
	if err != nil {
		eng.Close()
		t.Fatal(err)
	}
	e := &env{t: t, eng: eng, store: st, clock: clocktest.NewFake()}
	if opts.Clock == nil {
		opts.Clock = e.clock
	}
	e.hub = New(st, opts)
	t.Cleanup(func() {
		e.hub.Close()
		st.Close()
		eng.Close()
	})
	return e
}

// apply runs fn in one Write, commits it and notifies the hub.
func (e *env) apply(fn func(w *mvcc.Write) error) error {
	e.t.Helper()
	b := e.eng.NewBatch()
	w := e.store.Write(b)
	ferr := fn(w)
	if ferr != nil && !errors.Is(ferr, mvcc.ErrCompacted) && !errors.Is(ferr, mvcc.ErrFutureRev) {
		b.Discard()
		e.t.Fatalf("apply: %v", ferr)
	}
	if err := b.Commit(false); err != nil {
		e.t.Fatal(err)
	}
	w.Done()
	e.hub.Notify(w.Rev(), w.Events())
	return ferr
}

func (e *env) put(key, val string) int64 {
	e.t.Helper()
	var rev int64
	e.apply(func(w *mvcc.Write) error {
		r, err := w.Put(&pb.PutRequest{Key: []byte(key), Value: []byte(val)})
		if err == nil {
			rev = r.Header.Revision
		}
		return err
	})
	return rev
}

func (e *env) del(key, end string) {
	e.t.Helper()
	e.apply(func(w *mvcc.Write) error {
		r := &pb.DeleteRangeRequest{Key: []byte(key)}
		if end != "" {
			r.RangeEnd = []byte(end)
		}
		_, err := w.DeleteRange(r)
		return err
	})
}

// txn puts every kv ("k=v") and deletes every "-k" in one revision.
func (e *env) txn(ops ...string) {
	e.t.Helper()
	var reqs []*pb.RequestOp
	for _, op := range ops {
		if k, ok := strings.CutPrefix(op, "-"); ok {
			reqs = append(reqs, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k)}}})
			continue
		}
		k, v, _ := strings.Cut(op, "=")
		reqs = append(reqs, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}})
	}
	e.apply(func(w *mvcc.Write) error {
		_, err := w.Txn(&pb.TxnRequest{Success: reqs})
		return err
	})
}

func (e *env) compact(rev int64) {
	e.t.Helper()
	var done <-chan struct{}
	e.apply(func(w *mvcc.Write) (err error) {
		_, done, err = w.Compact(&pb.CompactionRequest{Revision: rev})
		return err
	})
	if done != nil {
		select {
		case <-done:
		case <-time.After(waitFor):
			e.t.Fatal("compaction did not finish")
		}
	}
}

// consumer reads a stream's responses on its own goroutine, the way the
// API's send loop does; hold pauses it.
type consumer struct {
	t    testing.TB
	s    *Stream
	out  chan Response
	errc chan error

	mu      sync.Mutex
	cancel  context.CancelFunc // of the current Recv
	holding chan struct{}      // closed to resume; nil when not held
	held    chan struct{}      // the goroutine is parked
}

func (e *env) stream() *consumer {
	e.t.Helper()
	c := &consumer{t: e.t, s: e.hub.NewStream(), out: make(chan Response, 1<<16), errc: make(chan error, 1), cancel: func() {}}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ctx, cancel := context.WithCancel(context.Background())
			c.mu.Lock()
			c.cancel = cancel
			holding, held := c.holding, c.held
			c.mu.Unlock()
			if holding != nil {
				cancel()
				close(held)
				select {
				case <-holding:
				case <-stop:
					return
				}
				continue
			}
			rs, err := c.s.Recv(ctx)
			cancel()
			if errors.Is(err, context.Canceled) {
				continue
			}
			if err != nil {
				c.errc <- err
				return
			}
			for _, r := range rs {
				c.out <- r
			}
		}
	}()
	e.t.Cleanup(func() {
		close(stop)
		c.s.Close()
		<-done
	})
	return c
}

// hold stops the consumer from reading (responses then pile up in the
// stream) until the returned function is called.
func (c *consumer) hold() func() {
	c.t.Helper()
	c.mu.Lock()
	resume, held := make(chan struct{}), make(chan struct{})
	c.holding, c.held = resume, held
	c.cancel()
	c.mu.Unlock()
	select {
	case <-held:
	case <-time.After(waitFor):
		c.t.Fatal("consumer did not stop")
	}
	return func() {
		c.mu.Lock()
		c.holding, c.held = nil, nil
		c.mu.Unlock()
		close(resume)
	}
}

func (c *consumer) watch(r WatchRequest) int64 {
	c.t.Helper()
	id, err := c.s.Watch(context.Background(), r)
	if err != nil {
		c.t.Fatalf("watch %+v: %v", r, err)
	}
	return id
}

// next returns the next response, failing the test if none comes.
func (c *consumer) next() Response {
	c.t.Helper()
	select {
	case r := <-c.out:
		return r
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(waitFor):
		c.t.Fatalf("no response within %v", waitFor)
	}
	return Response{}
}

// expect reads the next response and compares its rendering.
func (c *consumer) expect(want string) {
	c.t.Helper()
	if got := show(c.next()); got != want {
		c.t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// expectEach reads len(want) responses and compares them with want in
// order per watch id: responses of different watchers may interleave in
// any way.
func (c *consumer) expectEach(want ...string) {
	c.t.Helper()
	byID := func(rs []string) map[string][]string {
		m := map[string][]string{}
		for _, r := range rs {
			id, _, _ := strings.Cut(r, " ")
			m[id] = append(m[id], r)
		}
		return m
	}
	var got []string
	for range want {
		got = append(got, show(c.next()))
	}
	if g, w := fmt.Sprint(byID(got)), fmt.Sprint(byID(want)); g != w {
		c.t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), strings.Join(want, " "))
	}
}

// created reads the next response and checks it is watch id's creation.
func (c *consumer) created(id int64) Response {
	c.t.Helper()
	r := c.next()
	if !r.Created || r.Canceled || r.WatchID != id {
		c.t.Fatalf("got %s, want created %d", show(r), id)
	}
	return r
}

// quiet checks that nothing is waiting to be read after a progress
// request answers: everything before it has arrived.
func (c *consumer) drainUntilProgress() []Response {
	c.t.Helper()
	if err := c.s.RequestProgress(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	var got []Response
	for {
		r := c.next()
		if isProgress(r) && r.WatchID == InvalidWatchID {
			return got
		}
		got = append(got, r)
	}
}

func isProgress(r Response) bool {
	return len(r.Events) == 0 && !r.Created && !r.Canceled && r.CompactRevision == 0
}

// show renders a response compactly: id, flags, header revision, events.
func show(r Response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{id=%d rev=%d", r.WatchID, r.Revision)
	if r.Created {
		b.WriteString(" created")
	}
	if r.Canceled {
		b.WriteString(" canceled")
	}
	if r.CompactRevision != 0 {
		fmt.Fprintf(&b, " compact=%d", r.CompactRevision)
	}
	if r.CancelReason != "" {
		fmt.Fprintf(&b, " reason=%q", r.CancelReason)
	}
	for _, ev := range r.Events {
		b.WriteString(" " + showEvent(ev))
	}
	b.WriteString("}")
	return b.String()
}

func showEvent(ev *mvccpb.Event) string {
	s := fmt.Sprintf("%s@%d", ev.Kv.Key, ev.Kv.ModRevision)
	if ev.Type == mvccpb.Event_PUT {
		s = fmt.Sprintf("put:%s=%s@%d", ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
	} else {
		s = "del:" + s
	}
	if ev.PrevKv != nil {
		s += fmt.Sprintf("(prev=%s)", ev.PrevKv.Value)
	}
	return s
}

func showEvents(rs []Response) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, show(r))
	}
	return strings.Join(parts, " ")
}

// ticker waits for the next ticker a stream starts on the env's clock.
func (e *env) ticker() *clocktest.FakeTicker {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	tk, err := e.clock.NextTicker(ctx)
	if err != nil {
		e.t.Fatalf("no ticker started: %v", err)
	}
	return tk
}

// tick fires tk once, waiting until its stream takes the tick.
func tick(t testing.TB, tk *clocktest.FakeTicker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := tk.Tick(ctx); err != nil {
		t.Fatalf("tick not taken: %v", err)
	}
}

// settle waits until the hub has dispatched everything written.
func (e *env) settle() {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	for e.hub.Rev() < e.store.Rev() {
		if time.Now().After(deadline) {
			e.t.Fatalf("hub at %d, store at %d", e.hub.Rev(), e.store.Rev())
		}
		time.Sleep(time.Millisecond)
	}
}

func putReq(k, v string) *pb.PutRequest { return &pb.PutRequest{Key: []byte(k), Value: []byte(v)} }
