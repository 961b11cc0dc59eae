package watch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/mvcc"
)

// recorder keeps everything a stream delivered, in order.
type recorder struct {
	mu  sync.Mutex
	log []Response
}

func (r *recorder) snapshot() []Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Response(nil), r.log...)
}

// spec is a watcher the checker created.
type spec struct {
	req     WatchRequest
	revCall int64 // the store's revision before Watch was called
	revDone int64 // and after it returned
}

// history is every event written, by revision, as the writer saw it.
type history struct {
	mu         sync.Mutex
	byRev      map[int64][]*mvccpb.Event
	revs       []int64
	maxCompact int64
}

// TestGuarantees writes at random (puts, deletes, txns, group applies,
// compactions) while watchers come and go on several streams at random
// revisions, consumers pause at random, progress_notify intervals elapse
// and the hub is sometimes told of a revision without its events (as
// after a snapshot restore); then it checks everything
// each stream delivered against the write history: ordered, unique,
// complete, atomic per revision, correct prev_kv and filters, compaction
// reported rather than events lost, and every progress notification and
// header revision a correct bookmark (resuming from it would neither skip
// nor repeat an event).
func TestGuarantees(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { runGuarantees(t, seed) })
	}
}

func runGuarantees(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	e := newEnv(t, Options{MaxStreamBytes: 1500, CatchUpBytes: 2000, MaxResponseBytes: 800})
	hist := &history{byRev: map[int64][]*mvccpb.Event{}}
	write := func(fn func(w *mvcc.Write) error) {
		b := e.eng.NewBatch()
		w := e.store.Write(b)
		if err := fn(w); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		w.Done()
		hist.mu.Lock()
		for _, ev := range w.Events() {
			r := ev.Kv.ModRevision
			if len(hist.revs) == 0 || hist.revs[len(hist.revs)-1] != r {
				hist.revs = append(hist.revs, r)
			}
			hist.byRev[r] = append(hist.byRev[r], ev)
		}
		hist.mu.Unlock()
		if rng.IntN(100) == 0 {
			// As after restoring a snapshot: the hub learns only the new
			// revision, and everyone reads the rest from storage.
			e.hub.Notify(w.Rev(), nil)
		} else {
			e.hub.Notify(w.Rev(), w.Events())
		}
	}
	key := func() []byte { return []byte(fmt.Sprintf("k%02d", rng.IntN(20))) }
	randomOp := func(w *mvcc.Write) error {
		switch p := rng.IntN(100); {
		case p < 50:
			_, err := w.Put(&pb.PutRequest{Key: key(), Value: []byte(fmt.Sprint(rng.IntN(1000)))})
			return err
		case p < 65:
			_, err := w.DeleteRange(&pb.DeleteRangeRequest{Key: key()})
			return err
		case p < 75:
			a, b := key(), key()
			if string(a) > string(b) {
				a, b = b, a
			}
			_, err := w.DeleteRange(&pb.DeleteRangeRequest{Key: a, RangeEnd: append(b, 0)})
			return err
		default:
			seen := map[string]bool{}
			var ops []*pb.RequestOp
			for range 1 + rng.IntN(4) {
				k := key()
				if seen[string(k)] {
					continue
				}
				seen[string(k)] = true
				if rng.IntN(3) == 0 {
					ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: k}}})
				} else {
					ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: []byte(fmt.Sprint(rng.IntN(1000)))}}})
				}
			}
			_, err := w.Txn(&pb.TxnRequest{Success: ops})
			return err
		}
	}

	const nStreams = 6
	streams := make([]*consumer, nStreams)
	recs := make([]*recorder, nStreams)
	specs := make([]map[int64]*spec, nStreams)
	nextID := make([]int64, nStreams)
	held := make([]func(), nStreams)
	for i := range streams {
		streams[i] = e.stream()
		recs[i] = &recorder{}
		specs[i] = map[int64]*spec{}
		go func(c *consumer, r *recorder) {
			for resp := range c.out {
				r.mu.Lock()
				r.log = append(r.log, resp)
				r.mu.Unlock()
			}
		}(streams[i], recs[i])
	}
	ctx := context.Background()
	addWatch := func(i int, r WatchRequest) {
		nextID[i]++
		r.ID = nextID[i]
		sp := &spec{req: r, revCall: e.store.Rev()}
		if _, err := streams[i].s.Watch(ctx, r); err != nil {
			t.Fatalf("watch: %v", err)
		}
		sp.revDone = e.store.Rev()
		specs[i][r.ID] = sp
	}
	for i := range streams {
		addWatch(i, WatchRequest{Key: []byte{0}, FromKey: true, PrevKV: i%2 == 0})
	}

	const writes = 2500
	for n := range writes {
		switch p := rng.IntN(100); {
		case p < 4:
			cur := e.store.Rev()
			r := WatchRequest{Key: key(), PrevKV: rng.IntN(2) == 0, NoPut: rng.IntN(8) == 0, NoDelete: rng.IntN(8) == 0, ProgressNotify: rng.IntN(2) == 0}
			switch rng.IntN(4) {
			case 1:
				r.End = key()
				if string(r.End) <= string(r.Key) {
					r.End = append(r.Key, 0xff)
				}
			case 2:
				r.End = append(r.Key[:2:2], r.Key[2]+1)
				r.Key = r.Key[:2]
			case 3:
				r.FromKey = true
			}
			switch rng.IntN(4) {
			case 1:
				r.StartRev = 1 + rng.Int64N(cur+3) // often compacted
			case 2, 3:
				r.StartRev = max(1, cur-100+rng.Int64N(104)) // recent
			}
			addWatch(rng.IntN(nStreams), r)
		case p < 5:
			i := rng.IntN(nStreams)
			for id := range specs[i] {
				if id > 1 {
					streams[i].s.Cancel(ctx, id)
					break
				}
			}
		case p < 7:
			streams[rng.IntN(nStreams)].s.RequestProgress(ctx)
		case p < 9:
			if i := rng.IntN(nStreams); held[i] == nil {
				held[i] = streams[i].hold()
			}
		case p < 13:
			// A progress_notify interval elapses.
			streams[rng.IntN(nStreams)].s.progressTick()
		case p < 14:
			cur, comp := e.store.Rev(), e.store.CompactRev()
			if cur-comp > 300 {
				c := comp + 1 + rng.Int64N(cur-comp-200)
				write(func(w *mvcc.Write) error { _, _, err := w.Compact(&pb.CompactionRequest{Revision: c}); return err })
				hist.mu.Lock()
				hist.maxCompact = c
				hist.mu.Unlock()
			}
		}
		for i := range held {
			if held[i] != nil && rng.IntN(30) == 0 {
				held[i]()
				held[i] = nil
			}
		}
		if rng.IntN(10) == 0 {
			write(func(w *mvcc.Write) error {
				for range 2 + rng.IntN(3) {
					if err := randomOp(w); err != nil && err != mvcc.ErrKeyNotFound {
						return err
					}
				}
				return nil
			})
		} else {
			write(randomOp)
		}
		_ = n
	}
	for i := range held {
		if held[i] != nil {
			held[i]()
		}
	}
	// Future watchers start at most 3 past the revision they were made at.
	for range 5 {
		write(func(w *mvcc.Write) error {
			_, err := w.Put(&pb.PutRequest{Key: []byte("k00"), Value: []byte("end")})
			return err
		})
	}
	// Every stream gets a live watcher, so that it gets a notification even
	// if compaction ended all the others.
	for i := range streams {
		addWatch(i, WatchRequest{Key: []byte("k00")})
	}
	final := e.store.Rev()
	for i := range streams {
		if err := streams[i].s.RequestProgress(ctx); err != nil {
			t.Fatal(err)
		}
		if !waitProgress(recs[i], final) {
			s := streams[i].s
			e.hub.mu.Lock()
			s.mu.Lock()
			t.Logf("hub at %d; stream %d: floor %d wanted %v target %d unsynced %d queue %d", e.hub.Rev(), i, s.mu.floor, s.mu.progressWanted, s.mu.progressTarget, s.mu.unsynced.len(), len(s.mu.queue))
			for id, w := range s.mu.watchers {
				t.Logf("  watch %d: state %d next %d start %d announced %v", id, w.state, w.next, w.startRev, w.announced)
			}
			s.mu.Unlock()
			e.hub.mu.Unlock()
			t.Fatalf("stream %d: no progress notification at %d or later", i, final)
		}
	}
	var progress, compacted, responses int
	for i := range streams {
		log := recs[i].snapshot()
		checkStream(t, i, log, specs[i], hist, final)
		for _, r := range log {
			responses++
			if isProgress(r) && r.WatchID != InvalidWatchID {
				progress++
			}
			if r.CompactRevision != 0 {
				compacted++
			}
		}
	}
	t.Logf("%d responses checked: %d watcher progress notifications, %d compacted watchers", responses, progress, compacted)
}

// waitProgress waits for a progress notification of the whole stream at
// rev or later.
func waitProgress(r *recorder, rev int64) bool {
	deadline := time.Now().Add(waitFor)
	for {
		r.mu.Lock()
		for _, resp := range r.log {
			if isProgress(resp) && resp.WatchID == InvalidWatchID && resp.Revision >= rev {
				r.mu.Unlock()
				return true
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// watchCheck is the checker's view of one watcher while replaying a log.
type watchCheck struct {
	sp       *spec
	expected []*mvccpb.Event
	got      int
	lastRev  int64
	start    int64
	done     bool
	compact  bool
	nextRev  int64 // where clientv3 would resume
}

func (w *watchCheck) countUpTo(rev int64) int {
	n := 0
	for _, ev := range w.expected {
		if ev.Kv.ModRevision <= rev {
			n++
		}
	}
	return n
}

func checkStream(t *testing.T, si int, log []Response, specs map[int64]*spec, hist *history, final int64) {
	t.Helper()
	fail := func(pos int, format string, args ...any) {
		t.Helper()
		lo := max(pos-3, 0)
		t.Fatalf("stream %d, response %d: %s\ncontext: %s", si, pos, fmt.Sprintf(format, args...), showEvents(log[lo:min(pos+2, len(log))]))
	}
	ws := map[int64]*watchCheck{}
	bookmark := func(pos int, w *watchCheck, rev int64) {
		if want := w.countUpTo(rev); w.got != want {
			later := ""
			if w.got < len(w.expected) {
				later = "; next expected " + showEvent(w.expected[w.got])
				for p2 := pos + 1; p2 < len(log); p2++ {
					if log[p2].WatchID == w.sp.req.ID {
						later += fmt.Sprintf("; next for it at %d: %s", p2, show(log[p2]))
						break
					}
				}
			}
			fail(pos, "watch %d (%+v): revision %d claims %d events delivered, %d were%s", w.sp.req.ID, w.sp.req, rev, want, w.got, later)
		}
	}
	for pos, r := range log {
		switch {
		case r.Created:
			sp := specs[r.WatchID]
			if r.Canceled || sp == nil || ws[r.WatchID] != nil {
				fail(pos, "unexpected creation")
			}
			if r.Revision < sp.revCall || r.Revision > sp.revDone {
				fail(pos, "created at %d, store was at %d..%d", r.Revision, sp.revCall, sp.revDone)
			}
			w := &watchCheck{sp: sp, start: sp.req.StartRev}
			if w.start == 0 {
				w.start = r.Revision + 1
				w.nextRev = r.Revision
			} else {
				w.nextRev = w.start
			}
			w.expected = expectedEvents(hist, sp.req, w.start)
			ws[r.WatchID] = w
		case r.WatchID == InvalidWatchID:
			if !isProgress(r) {
				fail(pos, "unexpected response")
			}
			for _, w := range ws {
				if !w.done {
					bookmark(pos, w, r.Revision)
					w.nextRev = r.Revision + 1
				}
			}
		default:
			w := ws[r.WatchID]
			if w == nil || (w.done && !(w.compact && r.Canceled && r.CompactRevision == 0)) {
				fail(pos, "response for a watcher not live")
			}
			switch {
			case r.CompactRevision != 0:
				if !r.Canceled || len(r.Events) > 0 {
					fail(pos, "compaction response must be canceled with no events")
				}
				if need := max(w.start, w.lastRev+1); need >= r.CompactRevision {
					fail(pos, "compacted at %d but needed revision %d is not compacted", r.CompactRevision, need)
				}
				w.done, w.compact = true, true
			case r.Canceled:
				w.done = true
			case len(r.Events) == 0:
				bookmark(pos, w, r.Revision)
				w.nextRev = r.Revision + 1
			default:
				for _, ev := range r.Events {
					if w.got >= len(w.expected) {
						fail(pos, "watch %d: unexpected event %s", r.WatchID, showEvent(ev))
					}
					want := w.expected[w.got]
					if !proto.Equal(ev.Kv, want.Kv) || ev.Type != want.Type {
						fail(pos, "watch %d: event %s, want %s", r.WatchID, showEvent(ev), showEvent(want))
					}
					switch {
					case !w.sp.req.PrevKV && ev.PrevKv != nil:
						fail(pos, "watch %d: prev_kv not asked for", r.WatchID)
					case w.sp.req.PrevKV && ev.PrevKv != nil && !proto.Equal(ev.PrevKv, want.PrevKv):
						fail(pos, "watch %d: prev_kv %v, want %v", r.WatchID, ev.PrevKv, want.PrevKv)
					case w.sp.req.PrevKV && ev.PrevKv == nil && want.PrevKv != nil && want.Kv.ModRevision > hist.maxCompact:
						fail(pos, "watch %d: prev_kv missing", r.WatchID)
					}
					w.got++
					w.lastRev = ev.Kv.ModRevision
				}
				if w.got < len(w.expected) && w.expected[w.got].Kv.ModRevision == w.lastRev {
					fail(pos, "watch %d: revision %d split across responses", r.WatchID, w.lastRev)
				}
				if r.Revision < w.lastRev {
					fail(pos, "header %d below last event %d", r.Revision, w.lastRev)
				}
				bookmark(pos, w, r.Revision)
				w.nextRev = w.lastRev + 1
			}
		}
		// Where clientv3 would resume must neither repeat nor skip.
		for _, w := range ws {
			if w.done {
				continue
			}
			if w.nextRev <= w.lastRev {
				fail(pos, "watch %d would resume at %d after receiving %d", w.sp.req.ID, w.nextRev, w.lastRev)
			}
			if w.got < len(w.expected) && w.nextRev > w.expected[w.got].Kv.ModRevision {
				fail(pos, "watch %d would resume at %d, skipping %d", w.sp.req.ID, w.nextRev, w.expected[w.got].Kv.ModRevision)
			}
		}
	}
	for id, w := range ws {
		if !w.done && w.got != len(w.expected) {
			t.Fatalf("stream %d watch %d: got %d of %d events up to %d", si, id, w.got, len(w.expected), final)
		}
	}
	for id := range specs {
		if ws[id] == nil {
			t.Fatalf("stream %d watch %d: never created", si, id)
		}
	}
}

func expectedEvents(hist *history, r WatchRequest, start int64) []*mvccpb.Event {
	w := &watcher{key: r.Key, fromKey: r.FromKey, noPut: r.NoPut, noDelete: r.NoDelete}
	if len(r.End) > 0 {
		w.end = r.End
	}
	hist.mu.Lock()
	defer hist.mu.Unlock()
	var out []*mvccpb.Event
	for _, rev := range hist.revs {
		if rev < start {
			continue
		}
		for _, ev := range hist.byRev[rev] {
			if w.contains(ev.Kv.Key) && w.wants(ev) {
				out = append(out, ev)
			}
		}
	}
	return out
}
