package mvcc

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/storage"
)

var randomSeeds = flag.Int("mvcc.seeds", 3, "number of seeds TestRandomAgainstModel runs")

// gen makes random requests that pass the api's validation, over a small
// keyspace full of the bytes the key encoding has to escape.
type gen struct {
	r *rand.Rand
	m *model
}

var genKeys = []string{"\x00", "\x00\x00", "\x00\x01", "a", "a\x00", "a\x00b", "a\x01", "a\xff", "ab", "abc", "b", "c", "c\xff\xff", "\xff", "\xff\x00", "\xff\xff"}

func (g *gen) key() []byte { return []byte(genKeys[g.r.IntN(len(genKeys))]) }

func prefixEnd(key []byte) []byte {
	end := append([]byte(nil), key...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// span returns a key and a range end: none, a key above it, "\x00" (from
// key) or the prefix end.
func (g *gen) span() (key, end []byte) {
	key = g.key()
	switch g.r.IntN(5) {
	case 0, 1:
		return key, nil
	case 2:
		return key, g.key() // may be below key: an empty range
	case 3:
		return key, []byte{0}
	default:
		return key, prefixEnd(key)
	}
}

func (g *gen) rev() int64 {
	if g.r.IntN(3) == 0 {
		return 0
	}
	lo := max(g.m.compactRev-1, 1)
	return lo + g.r.Int64N(g.m.rev-lo+2)
}

func (g *gen) smallRev() int64 {
	if g.r.IntN(3) > 0 {
		return 0
	}
	return g.r.Int64N(g.m.rev + 2)
}

func (g *gen) rangeReq() *pb.RangeRequest {
	key, end := g.span()
	r := &pb.RangeRequest{Key: key, RangeEnd: end, Revision: g.rev()}
	if g.r.IntN(3) == 0 {
		r.Limit = g.r.Int64N(4)
	}
	if g.r.IntN(2) == 0 {
		r.SortOrder = pb.RangeRequest_SortOrder(g.r.IntN(3))
		r.SortTarget = pb.RangeRequest_SortTarget(g.r.IntN(5))
	}
	r.KeysOnly = g.r.IntN(6) == 0
	r.CountOnly = g.r.IntN(8) == 0
	if g.r.IntN(4) == 0 {
		r.MinModRevision, r.MaxModRevision = g.smallRev(), g.smallRev()
		r.MinCreateRevision, r.MaxCreateRevision = g.smallRev(), g.smallRev()
	}
	return r
}

func (g *gen) putReq() *pb.PutRequest {
	r := &pb.PutRequest{Key: g.key(), Value: []byte(fmt.Sprintf("v%d", g.r.IntN(5)))}
	if g.r.IntN(4) == 0 {
		r.Value = nil
	}
	switch g.r.IntN(8) {
	case 0:
		r.Lease = 1 + g.r.Int64N(3)
	case 1:
		r.Lease = 100 // does not exist
	}
	r.PrevKv = g.r.IntN(3) == 0
	if g.r.IntN(8) == 0 {
		r.IgnoreValue, r.Value = true, nil
	}
	if g.r.IntN(8) == 0 {
		r.IgnoreLease, r.Lease = true, 0
	}
	return r
}

func (g *gen) deleteReq() *pb.DeleteRangeRequest {
	key, end := g.span()
	return &pb.DeleteRangeRequest{Key: key, RangeEnd: end, PrevKv: g.r.IntN(2) == 0}
}

func (g *gen) compare() *pb.Compare {
	key, end := g.span()
	c := &pb.Compare{Key: key, RangeEnd: end, Result: pb.Compare_CompareResult(g.r.IntN(4)), Target: pb.Compare_CompareTarget(g.r.IntN(5))}
	switch c.Target {
	case pb.Compare_VALUE:
		c.TargetUnion = &pb.Compare_Value{Value: []byte(fmt.Sprintf("v%d", g.r.IntN(5)))}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: g.smallRev()}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: g.smallRev()}
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: g.r.Int64N(4)}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: g.r.Int64N(3)}
	}
	return c
}

func (g *gen) ops(depth int) []*pb.RequestOp {
	var ops []*pb.RequestOp
	for range g.r.IntN(4) {
		switch n := g.r.IntN(10); {
		case n < 3:
			ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: g.rangeReq()}})
		case n < 6:
			ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: g.putReq()}})
		case n < 8:
			ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: g.deleteReq()}})
		default:
			if depth < 2 {
				ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: g.txnReq(depth + 1)}})
			}
		}
	}
	return ops
}

// readTxnReq makes a txn whose every op is a range.
func (g *gen) readTxnReq() *pb.TxnRequest {
	r := &pb.TxnRequest{}
	for range g.r.IntN(3) {
		r.Compare = append(r.Compare, g.compare())
	}
	for range g.r.IntN(3) {
		r.Success = append(r.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: g.rangeReq()}})
	}
	for range g.r.IntN(3) {
		r.Failure = append(r.Failure, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: g.rangeReq()}})
	}
	return r
}

func (g *gen) txnReq(depth int) *pb.TxnRequest {
	r := &pb.TxnRequest{Success: g.ops(depth), Failure: g.ops(depth)}
	for range g.r.IntN(3) {
		r.Compare = append(r.Compare, g.compare())
	}
	return r
}

// validTxn applies the api's rule, etcd's checkIntervals, to each branch
// of r: no key is put twice, and no put falls in a delete of the same level
// or of a nested txn before it. A key may be put in one nested txn and
// deleted in a later sibling, so one txn can change a key twice.
func validTxn(r *pb.TxnRequest) bool {
	_, _, ok := opIntervals(r.Success)
	if ok {
		_, _, ok = opIntervals(r.Failure)
	}
	return ok
}

// opIntervals is etcd's checkIntervals over one list of ops: it returns the
// keys put and the ranges deleted in them and the txns they nest.
func opIntervals(ops []*pb.RequestOp) (puts map[string]bool, dels [][2][]byte, ok bool) {
	for _, op := range ops {
		if d := op.GetRequestDeleteRange(); d != nil {
			dels = append(dels, [2][]byte{d.Key, d.RangeEnd})
		}
	}
	deleted := func(k string) bool {
		for _, d := range dels {
			if inRange(k, d[0], d[1]) {
				return true
			}
		}
		return false
	}
	puts = map[string]bool{}
	for _, op := range ops {
		t := op.GetRequestTxn()
		if t == nil {
			continue
		}
		putsThen, delsThen, ok := opIntervals(t.Success)
		if !ok {
			return nil, nil, false
		}
		putsElse, delsElse, ok := opIntervals(t.Failure)
		if !ok {
			return nil, nil, false
		}
		for _, branch := range []map[string]bool{putsThen, putsElse} {
			for k := range branch {
				if puts[k] || deleted(k) {
					return nil, nil, false
				}
				puts[k] = true
			}
		}
		dels = append(append(dels, delsThen...), delsElse...)
	}
	for _, op := range ops {
		if p := op.GetRequestPut(); p != nil {
			if puts[string(p.Key)] || deleted(string(p.Key)) {
				return nil, nil, false
			}
			puts[string(p.Key)] = true
		}
	}
	return puts, dels, true
}

func (g *gen) validTxnReq() *pb.TxnRequest {
	for {
		if r := g.txnReq(0); validTxn(r) {
			return r
		}
	}
}

func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return errors.Is(a, b)
}

func checkSame(t *testing.T, step int, what string, req proto.Message, got, want proto.Message, gotErr, wantErr error) {
	t.Helper()
	if !sameErr(gotErr, wantErr) {
		t.Fatalf("step %d %s %v: err = %v, want %v", step, what, prototext.Format(req), gotErr, wantErr)
	}
	if gotErr == nil && !proto.Equal(got, want) {
		t.Fatalf("step %d %s %v:\n got %v\nwant %v", step, what, prototext.Format(req), prototext.Format(got), prototext.Format(want))
	}
}

// TestRandomAgainstModel runs thousands of random requests against the store
// and the naive model, in single and grouped Writes, across reopens of the
// engine and compactions, and compares every answer and every event.
func TestRandomAgainstModel(t *testing.T) {
	seeds, steps := *randomSeeds, 3000
	if testing.Short() {
		seeds, steps = 1, 1000
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			runRandom(t, seed, steps)
		})
	}
}

func runRandom(t *testing.T, seed uint64, steps int) {
	ts := newTestStore(t)
	m := newModel(ts.opts.LeaseExists)
	g := &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), m: m}
	var pending <-chan struct{}
	var history []*mvccpb.Event
	for step := 0; step < steps; step++ {
		switch n := g.r.IntN(100); {
		case n < 30:
			r := g.rangeReq()
			want, werr := m.rangeAt(r, m.rev)
			got, gerr := ts.Range(r)
			checkSame(t, step, "range", r, got, want, gerr, werr)
		case n < 35:
			r := g.readTxnReq()
			want, werr := m.txn(r)
			got, gerr := ts.ReadTxn(r)
			checkSame(t, step, "read txn", r, got, want, gerr, werr)
		case n < 37:
			ts.reopen()
			if ts.Rev() != m.rev || ts.CompactRev() != m.compactRev {
				t.Fatalf("step %d: after reopen rev %d compact %d, want %d %d", step, ts.Rev(), ts.CompactRev(), m.rev, m.compactRev)
			}
			pending = nil
		case n < 40:
			rev := g.r.Int64N(m.rev+2) - 1
			werr := m.compact(rev)
			ch, gerr := ts.compact(rev)
			if !sameErr(gerr, werr) {
				t.Fatalf("step %d compact %d: err %v, want %v", step, rev, gerr, werr)
			}
			if gerr == nil {
				pending = ch
			}
		case n < 42 && pending != nil:
			waitClosed(t, pending)
			pending = nil
			if len(ts.Store.comp.pendingWaiters()) == 0 {
				checkPhysical(t, step, ts, m)
			}
		default:
			// One Write with one to three write requests.
			nreq := 1
			if g.r.IntN(4) == 0 {
				nreq = 2 + g.r.IntN(2)
			}
			m.events = nil
			w, _ := ts.apply(func(w *Write) error {
				for range nreq {
					switch k := g.r.IntN(10); {
					case k < 5:
						r := g.putReq()
						want, werr := m.put(r)
						got, gerr := w.Put(r)
						checkSame(t, step, "put", r, got, want, gerr, werr)
					case k < 7:
						r := g.deleteReq()
						want := m.deleteRange(r)
						got, gerr := w.DeleteRange(r)
						checkSame(t, step, "delete", r, got, want, gerr, nil)
					default:
						r := g.validTxnReq()
						want, werr := m.txn(r)
						got, gerr := w.Txn(r)
						checkSame(t, step, "txn", r, got, want, gerr, werr)
					}
				}
				return nil
			})
			checkEvents(t, step, w.Events(), m.events)
			history = append(history, m.events...)
			if len(w.Events()) > 0 {
				// The event log gives back the same events.
				evs, next, _, err := ts.Events(w.Events()[0].Kv.ModRevision, 0)
				if err != nil || next != ts.Rev()+1 {
					t.Fatalf("step %d: Events: next %d, err %v; want %d", step, next, err, ts.Rev()+1)
				}
				checkEvents(t, step, evs, m.events)
			}
			if ts.Rev() != m.rev {
				t.Fatalf("step %d: rev %d, want %d", step, ts.Rev(), m.rev)
			}
		}
	}
	t.Logf("%d steps, revision %d, compacted at %d", steps, m.rev, m.compactRev)
	checkHistory(t, ts, m, history)
	// Every revision still reachable reads the same in both.
	for rev := max(m.compactRev, 1); rev <= m.rev; rev++ {
		r := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev}
		want, _ := m.rangeAt(r, m.rev)
		got, err := ts.Range(r)
		checkSame(t, -1, "final range", r, got, want, err, nil)
	}
}

// checkHistory reads the whole event log still reachable, in pieces, and
// compares it with every event the model produced since the compaction.
func checkHistory(t *testing.T, ts *testStore, m *model, history []*mvccpb.Event) {
	t.Helper()
	var want []*mvccpb.Event
	for _, ev := range history {
		if ev.Kv.ModRevision < m.compactRev {
			continue
		}
		if ev.Kv.ModRevision-1 < m.compactRev {
			ev = proto.CloneOf(ev)
			ev.PrevKv = nil
		}
		want = append(want, ev)
	}
	if _, _, _, err := ts.Events(m.compactRev-1, 0); m.compactRev > 0 && !errors.Is(err, ErrCompacted) {
		t.Fatalf("Events below the compaction revision: err %v, want ErrCompacted", err)
	}
	var got []*mvccpb.Event
	for from := max(m.compactRev, 0); from <= m.rev; {
		evs, next, _, err := ts.Events(from, 3)
		if err != nil {
			t.Fatal(err)
		}
		if next <= from {
			t.Fatalf("Events(%d, 3): next %d does not advance", from, next)
		}
		if len(evs) > 0 && len(got) > 0 && evs[0].Kv.ModRevision == got[len(got)-1].Kv.ModRevision {
			t.Fatalf("Events(%d, 3) split revision %d", from, evs[0].Kv.ModRevision)
		}
		got = append(got, evs...)
		from = next
	}
	checkEvents(t, -1, got, want)
}

func checkEvents(t *testing.T, step int, got, want []*mvccpb.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("step %d: %d events, want %d", step, len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("step %d: event %d\n got %v\nwant %v", step, i, prototext.Format(got[i]), prototext.Format(want[i]))
		}
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("physical compaction did not finish within 30s")
	}
}

// checkPhysical checks that a finished compaction left exactly the versions
// and events that reads at or above the compaction revision need.
func checkPhysical(t *testing.T, step int, ts *testStore, m *model) {
	t.Helper()
	wantV, wantE := m.kept()
	gotV := countPrefix(t, ts.eng, storage.PrefixKeys)
	gotE := countPrefix(t, ts.eng, storage.PrefixEvents)
	if gotV != wantV || gotE != wantE {
		dumpKeys(t, ts, m)
		t.Fatalf("step %d: after compaction at %d: %d versions and %d events stored, want %d and %d",
			step, m.compactRev, gotV, gotE, wantV, wantE)
	}
}

func countPrefix(t *testing.T, eng *storage.Engine, prefix byte) int {
	it, err := eng.DB().NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		n++
	}
	return n
}
