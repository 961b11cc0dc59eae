package mvcc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	etcdtxn "go.etcd.io/etcd/server/v3/etcdserver/txn"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	etcdmvcc "go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// etcdOracle is etcd 3.7's own mvcc store and request functions, run in
// process: the reference every answer of ours is compared with.
type etcdOracle struct {
	lg *zap.Logger
	be backend.Backend
	le lease.Lessor
	kv etcdmvcc.WatchableKV
	ws etcdmvcc.WatchStream
}

func newEtcdOracle(t *testing.T) *etcdOracle {
	o := &etcdOracle{lg: zap.NewNop()}
	o.be = backend.NewDefaultBackend(o.lg, filepath.Join(t.TempDir(), "etcd.db"))
	o.le = lease.NewLessor(o.lg, o.be, nil, lease.LessorConfig{MinLeaseTTL: 60})
	for id := int64(1); id < 100; id++ {
		if _, err := o.le.Grant(lease.LeaseID(id), 3600); err != nil {
			t.Fatal(err)
		}
	}
	o.kv = etcdmvcc.New(o.lg, o.be, o.le, etcdmvcc.StoreConfig{})
	o.ws = o.kv.NewWatchStream()
	if _, err := o.ws.Watch(context.Background(), 0, []byte{0}, []byte{}, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		o.ws.Close()
		o.kv.Close()
		o.le.Stop()
		o.be.Close()
	})
	return o
}

// events waits for n events from etcd's watcher on every key.
func (o *etcdOracle) events(t *testing.T, n int) []*mvccpb.Event {
	var evs []*mvccpb.Event
	deadline := time.After(10 * time.Second)
	for len(evs) < n {
		select {
		case wr := <-o.ws.Chan():
			evs = append(evs, wr.Events...)
		case <-deadline:
			t.Fatalf("etcd delivered %d events, want %d", len(evs), n)
		}
	}
	select {
	case wr := <-o.ws.Chan():
		t.Fatalf("etcd delivered %d more events than we did", len(wr.Events))
	default:
	}
	return evs
}

// addPrevKV fills in each event's PrevKv as etcd's watch server does for a
// watcher with prev_kv (etcd's mvcc watchers carry none): the key read at
// mod_revision - 1, for every event but a create.
func (o *etcdOracle) addPrevKV(evs []*mvccpb.Event) {
	for _, ev := range evs {
		if ev.Type == mvccpb.Event_PUT && ev.Kv.Version == 1 {
			continue
		}
		r, err := o.kv.Range(context.Background(), ev.Kv.Key, nil, etcdmvcc.RangeOptions{Rev: ev.Kv.ModRevision - 1})
		if err == nil && len(r.KVs) != 0 {
			ev.PrevKv = r.KVs[0]
		}
	}
}

func checkEventsVsEtcd(t *testing.T, step int, what string, got, want []*mvccpb.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("step %d: %d %s events, etcd has %d", step, len(got), what, len(want))
	}
	for i, ev := range got {
		if !proto.Equal(ev, want[i]) {
			t.Fatalf("step %d: %s event %d\n got %v\netcd %v", step, what, i, prototext.Format(ev), prototext.Format(want[i]))
		}
	}
}

func sameErrText(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Error() == b.Error()
}

func checkVsEtcd(t *testing.T, step int, what string, req proto.Message, got, want proto.Message, gotErr, wantErr error) {
	t.Helper()
	if !sameErrText(gotErr, wantErr) {
		t.Fatalf("step %d %s %v: err = %v, etcd says %v", step, what, prototext.Format(req), gotErr, wantErr)
	}
	if gotErr == nil && !proto.Equal(got, want) {
		t.Fatalf("step %d %s %v:\n got %v\netcd %v", step, what, prototext.Format(req), prototext.Format(got), prototext.Format(want))
	}
}

// TestRandomAgainstEtcd runs random requests against our store and etcd's
// and compares every response, error and event. Requests that share a Write
// here are applied one by one on etcd, which has the same effect.
func TestRandomAgainstEtcd(t *testing.T) {
	seeds, steps := *randomSeeds, 2000
	if testing.Short() {
		seeds, steps = 1, 500
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { runVsEtcd(t, seed, steps) })
	}
}

func runVsEtcd(t *testing.T, seed uint64, steps int) {
	ctx := context.Background()
	ts := newTestStore(t)
	o := newEtcdOracle(t)
	m := newModel(ts.opts.LeaseExists)
	g := &gen{r: rand.New(rand.NewPCG(seed, 7)), m: m}
	for step := 0; step < steps; step++ {
		switch n := g.r.IntN(100); {
		case n < 30:
			r := g.rangeReq()
			want, _, werr := etcdtxn.Range(ctx, o.lg, o.kv, r, true)
			got, gerr := ts.Range(r)
			checkVsEtcd(t, step, "range", r, got, want, gerr, werr)
		case n < 35:
			r := g.readTxnReq()
			want, _, werr := etcdtxn.Txn(ctx, o.lg, r, false, o.kv, o.le, false)
			got, gerr := ts.ReadTxn(r)
			checkVsEtcd(t, step, "read txn", r, got, want, gerr, werr)
		case n < 37:
			ts.reopen()
		case n < 40:
			rev := g.r.Int64N(m.rev+2) - 1
			m.compact(rev)
			_, werr := o.kv.Compact(traceutil.TODO(), rev)
			_, gerr := ts.compact(rev)
			if !sameErrText(gerr, werr) {
				t.Fatalf("step %d compact %d: err %v, etcd says %v", step, rev, gerr, werr)
			}
		default:
			nreq := 1
			if g.r.IntN(4) == 0 {
				nreq = 2 + g.r.IntN(2)
			}
			w, _ := ts.apply(func(w *Write) error {
				for range nreq {
					switch k := g.r.IntN(10); {
					case k < 5:
						r := g.putReq()
						m.put(r)
						want, _, werr := etcdtxn.Put(ctx, o.lg, o.le, o.kv, r)
						got, gerr := w.Put(r)
						checkVsEtcd(t, step, "put", r, got, want, gerr, werr)
					case k < 7:
						r := g.deleteReq()
						m.deleteRange(r)
						want, _, werr := etcdtxn.DeleteRange(ctx, o.lg, o.kv, r)
						got, gerr := w.DeleteRange(r)
						checkVsEtcd(t, step, "delete", r, got, want, gerr, werr)
					default:
						r := g.validTxnReq()
						m.txn(r)
						want, _, werr := etcdtxn.Txn(ctx, o.lg, r, false, o.kv, o.le, false)
						got, gerr := w.Txn(r)
						checkVsEtcd(t, step, "txn", r, got, want, gerr, werr)
					}
				}
				return nil
			})
			want := o.events(t, len(w.Events()))
			o.addPrevKV(want)
			checkEventsVsEtcd(t, step, "live", w.Events(), want)
			// Catch-up reads the same events back from the event log.
			caught, _, _, err := ts.Events(w.startRev+1, 0)
			if err != nil {
				t.Fatalf("step %d: Events(%d): %v", step, w.startRev+1, err)
			}
			checkEventsVsEtcd(t, step, "catch-up", caught, want)
		}
	}
}

// TestTxnChangingAKeyTwiceVsEtcd: a txn may put a key in one nested txn and
// delete it in a later one (the api allows it). Every event of the txn
// carries, as prev_kv, the key as it was before the txn, as etcd's watch
// gives it, both live and read back for catch-up.
func TestTxnChangingAKeyTwiceVsEtcd(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t)
	o := newEtcdOracle(t)
	put := func(k, v string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
	}
	del := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k)}}}
	}
	nested := func(ops ...*pb.RequestOp) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: ops}}}
	}
	reqs := []*pb.TxnRequest{
		{Success: []*pb.RequestOp{put("a", "1"), put("b", "1")}},
		// a existed: both events' prev_kv is a=1.
		{Success: []*pb.RequestOp{nested(put("a", "2")), nested(del("a"))}},
		// c did not: neither event has a prev_kv.
		{Success: []*pb.RequestOp{nested(put("c", "1")), nested(del("c"))}},
		// b is put in a nested txn, then deleted with a range at the outer
		// level's next nested txn.
		{Success: []*pb.RequestOp{nested(put("b", "2")), nested(&pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{
			RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("z")}}})}},
	}
	for step, r := range reqs {
		if !validTxn(r) {
			t.Fatalf("step %d: the api would refuse %v", step, prototext.Format(r))
		}
		w, _ := ts.apply(func(w *Write) error {
			want, _, werr := etcdtxn.Txn(ctx, o.lg, r, false, o.kv, o.le, false)
			got, gerr := w.Txn(r)
			checkVsEtcd(t, step, "txn", r, got, want, gerr, werr)
			return nil
		})
		want := o.events(t, len(w.Events()))
		o.addPrevKV(want)
		checkEventsVsEtcd(t, step, "live", w.Events(), want)
		caught, _, _, err := ts.Events(w.startRev+1, 0)
		if err != nil {
			t.Fatal(err)
		}
		checkEventsVsEtcd(t, step, "catch-up", caught, want)
	}
}
