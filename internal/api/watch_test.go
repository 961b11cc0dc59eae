package api

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/internal/watch"
)

// watchServed is the Watch service on 127.0.0.1 over a real mvcc store,
// written to the way the apply loop writes (Write, commit, Done, Notify).
type watchServed struct {
	t      *testing.T
	eng    *storage.Engine
	store  *mvcc.Store
	hub    *watch.Hub
	client *clientv3.Client
	conn   *grpc.ClientConn
}

func serveWatch(t *testing.T, wo watch.Options, o WatchOptions) *watchServed {
	t.Helper()
	eng, err := storage.Open(t.TempDir(), storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mvcc.Open(eng, mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hub := watch.New(st, wo)
	// The cleanup closes the store after Stop: handlers must be done.
	gs := grpc.NewServer(grpc.WaitForHandlers(true))
	// The fake backend serves the hub, with headers of its own.
	b := newFakeBackend()
	b.hub = hub
	b.setStatus(func(st *server.Status) { st.ClusterID, st.MemberID, st.RaftTerm = 11, 22, 3 })
	RegisterWatch(gs, b, o)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	w := &watchServed{t: t, eng: eng, store: st, hub: hub}
	w.client, err = clientv3.New(clientv3.Config{Endpoints: []string{l.Addr().String()}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.conn = w.client.ActiveConnection()
	t.Cleanup(func() {
		w.client.Close()
		gs.Stop()
		hub.Close()
		st.Close()
		eng.Close()
	})
	return w
}

func (w *watchServed) apply(fn func(wr *mvcc.Write) error) {
	w.t.Helper()
	b := w.eng.NewBatch()
	wr := w.store.Write(b)
	if err := fn(wr); err != nil {
		w.t.Fatal(err)
	}
	if err := b.Commit(false); err != nil {
		w.t.Fatal(err)
	}
	wr.Done()
	w.hub.Notify(wr.Rev(), wr.Events())
}

func (w *watchServed) put(k, v string) {
	w.t.Helper()
	w.apply(func(wr *mvcc.Write) error {
		_, err := wr.Put(&pb.PutRequest{Key: []byte(k), Value: []byte(v)})
		return err
	})
}

func (w *watchServed) del(k string) {
	w.t.Helper()
	w.apply(func(wr *mvcc.Write) error {
		_, err := wr.DeleteRange(&pb.DeleteRangeRequest{Key: []byte(k)})
		return err
	})
}

// nextWatch returns the next response on ch, failing if none comes.
func nextWatch(t *testing.T, ch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no watch response")
	}
	return clientv3.WatchResponse{}
}

func evString(evs []*clientv3.Event) string {
	var parts []string
	for _, ev := range evs {
		s := fmt.Sprintf("%s %s=%s@%d", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
		if ev.PrevKv != nil {
			s += fmt.Sprintf(" prev=%s", ev.PrevKv.Value)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func TestWatchThroughClient(t *testing.T) {
	w := serveWatch(t, watch.Options{}, WatchOptions{})
	ctx := ctxT(t)
	w.put("a/1", "x") // 2

	pfx := w.client.Watch(ctx, "a/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	if r := nextWatch(t, pfx); !r.Created || r.Header.Revision != 2 || r.Header.ClusterId != 11 || r.Header.MemberId != 22 || r.Header.RaftTerm != 3 {
		t.Fatalf("created: %+v", r)
	}
	noput := w.client.Watch(ctx, "a/1", clientv3.WithFilterPut())
	hist := w.client.Watch(ctx, "a/", clientv3.WithPrefix(), clientv3.WithRev(1))
	from := w.client.Watch(ctx, "b", clientv3.WithFromKey())

	w.put("a/1", "y") // 3
	w.put("b", "z")   // 4
	w.del("a/1")      // 5
	if got := evString(nextWatch(t, pfx).Events); got != "PUT a/1=y@3 prev=x" {
		t.Errorf("prefix: %s", got)
	}
	if got := evString(nextWatch(t, pfx).Events); got != "DELETE a/1=@5 prev=y" {
		t.Errorf("prefix: %s", got)
	}
	if got := evString(nextWatch(t, noput).Events); got != "DELETE a/1=@5" {
		t.Errorf("noput: %s", got)
	}
	var hs []string
	for len(hs) < 3 {
		r := nextWatch(t, hist)
		for _, ev := range r.Events {
			hs = append(hs, evString([]*clientv3.Event{ev}))
		}
	}
	if got := strings.Join(hs, ", "); got != "PUT a/1=x@2, PUT a/1=y@3, DELETE a/1=@5" {
		t.Errorf("history: %s", got)
	}
	if got := evString(nextWatch(t, from).Events); got != "PUT b=z@4" {
		t.Errorf("from key: %s", got)
	}
}

func TestWatchCompactedThroughClient(t *testing.T) {
	w := serveWatch(t, watch.Options{}, WatchOptions{})
	for i := range 5 {
		w.put("k", fmt.Sprint(i)) // 2..6
	}
	w.apply(func(wr *mvcc.Write) error {
		_, _, err := wr.Compact(&pb.CompactionRequest{Revision: 5})
		return err
	})
	ch := w.client.Watch(ctxT(t), "k", clientv3.WithRev(3))
	r := nextWatch(t, ch)
	if r.CompactRevision != 5 || r.Err() != rpctypes.ErrCompacted || !r.Canceled {
		t.Fatalf("got %+v (err %v), want compaction at 5", r, r.Err())
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel not closed after compaction")
	}
}

func TestWatchProgressThroughClient(t *testing.T) {
	w := serveWatch(t, watch.Options{ProgressNotifyInterval: watch.MinProgressNotifyInterval}, WatchOptions{})
	ctx := ctxT(t)
	w.put("x", "1") // 2
	ch := w.client.Watch(ctx, "k", clientv3.WithProgressNotify())
	// An idle watcher gets a notification per interval.
	if r := nextWatch(t, ch); !r.IsProgressNotify() || r.Header.Revision != 2 {
		t.Fatalf("got %+v, want a progress notification at 2", r)
	}
	// And one on request, at the revision of the request.
	other := w.client.Watch(ctx, "k")
	w.put("y", "1") // 3
	if err := w.client.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		r := nextWatch(t, other)
		if r.IsProgressNotify() && r.Header.Revision == 3 {
			break
		}
		if !r.IsProgressNotify() {
			t.Fatalf("got %+v", r)
		}
	}
}

func TestWatchManyStreamsAndWatchers(t *testing.T) {
	w := serveWatch(t, watch.Options{}, WatchOptions{})
	var chans []clientv3.WatchChan
	for s := range 10 {
		// clientv3 opens one stream per distinct context.
		ctx := context.WithValue(ctxT(t), struct{ int }{s}, s)
		for range 20 {
			chans = append(chans, w.client.Watch(ctx, "k", clientv3.WithCreatedNotify()))
		}
	}
	for _, ch := range chans {
		if r := nextWatch(t, ch); !r.Created {
			t.Fatalf("got %+v", r)
		}
	}
	w.put("k", "v")
	for _, ch := range chans {
		if got := evString(nextWatch(t, ch).Events); got != "PUT k=v@2" {
			t.Fatal(got)
		}
	}
}

// rawWatch opens a Watch stream without clientv3, to see responses as
// sent.
func rawWatch(t *testing.T, w *watchServed) pb.Watch_WatchClient {
	t.Helper()
	wc, err := pb.NewWatchClient(w.conn).Watch(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return wc
}

func rawCreate(t *testing.T, wc pb.Watch_WatchClient, cr *pb.WatchCreateRequest) *pb.WatchResponse {
	t.Helper()
	if err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}); err != nil {
		t.Fatal(err)
	}
	return rawRecv(t, wc)
}

func rawRecv(t *testing.T, wc pb.Watch_WatchClient) *pb.WatchResponse {
	t.Helper()
	r, err := wc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestWatchRawResponses(t *testing.T) {
	w := serveWatch(t, watch.Options{}, WatchOptions{})
	wc := rawWatch(t, w)
	if r := rawCreate(t, wc, &pb.WatchCreateRequest{Key: []byte("a")}); !r.Created || r.WatchId != 0 || r.Canceled {
		t.Fatalf("auto id: %v", r)
	}
	if r := rawCreate(t, wc, &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7}); !r.Created || r.WatchId != 7 {
		t.Fatalf("chosen id: %v", r)
	}
	r := rawCreate(t, wc, &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7})
	if !r.Created || !r.Canceled || r.WatchId != -1 || r.CancelReason != "mvcc: duplicate watch ID provided on the WatchStream" {
		t.Fatalf("duplicate id: %v", r)
	}
	r = rawCreate(t, wc, &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1})
	if !r.Created || !r.Canceled || r.WatchId != -1 || r.CancelReason != rpctypes.ErrCompacted.Error() {
		t.Fatalf("negative revision: %v", r)
	}
	r = rawCreate(t, wc, &pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})
	if !r.Created || !r.Canceled || r.WatchId != -1 || r.CancelReason != "mvcc: watcher range is empty" {
		t.Fatalf("empty range: %v", r)
	}
	// The empty key is \x00; with range end \x00 it watches everything.
	if r := rawCreate(t, wc, &pb.WatchCreateRequest{RangeEnd: []byte{0}}); !r.Created || r.WatchId != 1 {
		t.Fatalf("all keys: %v", r)
	}
	w.put("zzz", "1")
	if r := rawRecv(t, wc); r.WatchId != 1 || len(r.Events) != 1 || r.Header.Revision != 2 {
		t.Fatalf("event: %v", r)
	}
	if err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 1}}}); err != nil {
		t.Fatal(err)
	}
	if r := rawRecv(t, wc); r.WatchId != 1 || !r.Canceled || r.Created {
		t.Fatalf("cancel: %v", r)
	}
	// The client closing its side does not end the stream.
	if err := wc.CloseSend(); err != nil {
		t.Fatal(err)
	}
	w.put("a", "1")
	got := map[int64]bool{}
	for range 2 {
		r := rawRecv(t, wc)
		got[r.WatchId] = len(r.Events) == 1
	}
	if !got[0] || !got[7] {
		t.Fatalf("after CloseSend: %v", got)
	}
}

func TestWatchFragment(t *testing.T) {
	w := serveWatch(t, watch.Options{}, WatchOptions{MaxRequestBytes: 1024})
	big := strings.Repeat("v", 200<<10)
	puts := func() {
		w.apply(func(wr *mvcc.Write) error {
			var ops []*pb.RequestOp
			for i := range 6 {
				ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(fmt.Sprint("k", i)), Value: []byte(big)}}})
			}
			_, err := wr.Txn(&pb.TxnRequest{Success: ops})
			return err
		})
	}
	wc := rawWatch(t, w)
	rawCreate(t, wc, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l"), Fragment: true})
	rawCreate(t, wc, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	puts() // 1.2 MB in one revision, over 1 KiB + 512 KiB
	var frag, whole []*pb.WatchResponse
	for len(whole) == 0 || len(frag) == 0 || frag[len(frag)-1].Fragment {
		r := rawRecv(t, wc)
		if r.WatchId == 0 {
			frag = append(frag, r)
		} else {
			whole = append(whole, r)
		}
	}
	n := 0
	for i, r := range frag {
		n += len(r.Events)
		if r.Fragment != (i < len(frag)-1) {
			t.Fatalf("fragment %d of %d has fragment=%v", i, len(frag), r.Fragment)
		}
	}
	if len(frag) < 2 || n != 6 || len(whole) != 1 || len(whole[0].Events) != 6 || whole[0].Fragment {
		t.Fatalf("%d fragments with %d events; unfragmented: %d responses", len(frag), n, len(whole))
	}
	// clientv3 puts the fragments back together.
	ch := w.client.Watch(ctxT(t), "k", clientv3.WithPrefix(), clientv3.WithFragment())
	puts()
	if r := nextWatch(t, ch); len(r.Events) != 6 {
		t.Fatalf("client got %d events", len(r.Events))
	}
}
