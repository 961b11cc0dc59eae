package api

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/watch"
	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// watchSubject is a store with a Watch service: embedded etcd, or cairn's
// service over an mvcc store.
type watchSubject struct {
	name  string
	write func(t *testing.T, op any) // *pb.PutRequest, *pb.DeleteRangeRequest, *pb.TxnRequest, *pb.CompactionRequest
	conn  *grpc.ClientConn
}

func etcdWatchSubject(t *testing.T) *watchSubject {
	t.Helper()
	conn := oracle.Start(t).Conn(t)
	kv := pb.NewKVClient(conn)
	return &watchSubject{name: "etcd", conn: conn, write: func(t *testing.T, op any) {
		t.Helper()
		ctx := ctxT(t)
		var err error
		switch r := op.(type) {
		case *pb.PutRequest:
			_, err = kv.Put(ctx, r)
		case *pb.DeleteRangeRequest:
			_, err = kv.DeleteRange(ctx, r)
		case *pb.TxnRequest:
			_, err = kv.Txn(ctx, r)
		case *pb.CompactionRequest:
			_, err = kv.Compact(ctx, &pb.CompactionRequest{Revision: r.Revision, Physical: true})
		}
		if err != nil {
			t.Fatal(err)
		}
	}}
}

func cairnWatchSubject(t *testing.T) *watchSubject {
	w := serveWatch(t, watch.Options{}, WatchOptions{})
	return &watchSubject{name: "cairn", conn: w.conn, write: func(t *testing.T, op any) {
		t.Helper()
		var done <-chan struct{}
		w.apply(func(wr *mvcc.Write) (err error) {
			switch r := op.(type) {
			case *pb.PutRequest:
				_, err = wr.Put(r)
			case *pb.DeleteRangeRequest:
				_, err = wr.DeleteRange(r)
			case *pb.TxnRequest:
				_, err = wr.Txn(r)
			case *pb.CompactionRequest:
				_, done, err = wr.Compact(r)
			}
			return err
		})
		if done != nil {
			<-done
		}
	}}
}

// watchTranscript records a stream's responses as comparable text: per
// watch id, what it got, with events flattened (etcd and cairn may cut
// responses differently), and progress notifications left out (etcd drops
// requests cairn defers).
type watchTranscript struct {
	t    *testing.T
	wc   pb.Watch_WatchClient
	resp chan *pb.WatchResponse
	byID map[int64][]string
	ids  []int64
}

func openTranscript(t *testing.T, s *watchSubject) *watchTranscript {
	t.Helper()
	wc, err := pb.NewWatchClient(s.conn).Watch(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	tr := &watchTranscript{t: t, wc: wc, resp: make(chan *pb.WatchResponse, 1024), byID: map[int64][]string{}}
	go func() {
		defer close(tr.resp)
		for {
			r, err := wc.Recv()
			if err != nil {
				t.Logf("%s: stream ended: %v", s.name, err)
				return
			}
			tr.resp <- r
		}
	}()
	return tr
}

func (tr *watchTranscript) send(r *pb.WatchRequest) {
	tr.t.Helper()
	if err := tr.wc.Send(r); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *watchTranscript) record(r *pb.WatchResponse) (progress bool) {
	if len(r.Events) == 0 && !r.Created && !r.Canceled && r.CompactRevision == 0 {
		return true
	}
	var parts []string
	if r.Created || r.Canceled || r.CompactRevision != 0 {
		parts = append(parts, fmt.Sprintf("hdr=%d created=%v canceled=%v compact=%d reason=%q", r.Header.GetRevision(), r.Created, r.Canceled, r.CompactRevision, r.CancelReason))
	}
	for _, ev := range r.Events {
		parts = append(parts, strings.Join(strings.Fields(prototext.Format(ev)), " "))
	}
	if _, ok := tr.byID[r.WatchId]; !ok {
		tr.ids = append(tr.ids, r.WatchId)
	}
	tr.byID[r.WatchId] = append(tr.byID[r.WatchId], parts...)
	return false
}

// create sends a create request and records up to its created response.
func (tr *watchTranscript) create(cr *pb.WatchCreateRequest) {
	tr.t.Helper()
	tr.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}})
	for {
		r := tr.next()
		tr.record(r)
		if r.Created {
			return
		}
	}
}

func (tr *watchTranscript) next() *pb.WatchResponse {
	tr.t.Helper()
	select {
	case r, ok := <-tr.resp:
		if !ok {
			tr.t.Fatal("stream ended")
		}
		return r
	case <-time.After(30 * time.Second):
		tr.t.Fatal("no watch response")
	}
	return nil
}

// settle records everything up to a progress notification of the whole
// stream at rev or later, asking again while none comes (etcd drops a
// request while a watcher is catching up).
func (tr *watchTranscript) settle(rev int64) {
	tr.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		tr.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
		again := time.After(200 * time.Millisecond)
		for waiting := true; waiting; {
			select {
			case r, ok := <-tr.resp:
				if !ok {
					tr.t.Fatal("stream ended")
				}
				if tr.record(r) && r.WatchId == -1 && r.Header.Revision >= rev {
					return
				}
			case <-again:
				waiting = false
			}
		}
	}
	tr.t.Fatal("no progress notification")
}

func (tr *watchTranscript) String() string {
	var b strings.Builder
	ids := slices.Clone(tr.ids)
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "watch %d:\n", id)
		for _, p := range tr.byID[id] {
			fmt.Fprintf(&b, "  %s\n", p)
		}
	}
	return b.String()
}

func putOp(k, v string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func delOp(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k)}}}
}

// TestWatchAgainstEtcd runs one script of writes and watch requests
// against embedded etcd and against cairn and compares what each watcher
// got: creations and refusals (with their header revision and reason),
// every event field by field, cancellations and compaction responses.
func TestWatchAgainstEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts embedded etcd")
	}
	run := func(s *watchSubject) string {
		w := func(op any) { s.write(t, op) }
		w(&pb.PutRequest{Key: []byte("a"), Value: []byte("1")})                                   // 2
		w(&pb.PutRequest{Key: []byte("b"), Value: []byte("1"), PrevKv: true})                     // 3
		w(&pb.PutRequest{Key: []byte("a"), Value: []byte("2")})                                   // 4
		w(&pb.DeleteRangeRequest{Key: []byte("a")})                                               // 5
		w(&pb.TxnRequest{Success: []*pb.RequestOp{putOp("c", "1"), putOp("d", "1"), delOp("b")}}) // 6
		tr := openTranscript(t, s)
		tr.create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 2, PrevKv: true})
		tr.create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1})
		tr.create(&pb.WatchCreateRequest{Key: []byte("c"), WatchId: 10})
		tr.create(&pb.WatchCreateRequest{Key: []byte("c"), WatchId: 10})
		tr.create(&pb.WatchCreateRequest{Key: []byte("c"), StartRevision: -1})
		tr.create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})
		tr.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("z"), StartRevision: 2,
			Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}})
		tr.create(&pb.WatchCreateRequest{RangeEnd: []byte{0}, PrevKv: true,
			Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}})
		tr.settle(6)
		// A watcher of a future revision holds progress back until then.
		tr.create(&pb.WatchCreateRequest{Key: []byte("d"), StartRevision: 9})
		w(&pb.PutRequest{Key: []byte("a"), Value: []byte("3")})                                        // 7
		w(&pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), PrevKv: true})               // 8
		w(&pb.TxnRequest{Success: []*pb.RequestOp{putOp("c", "2"), putOp("d", "2"), putOp("e", "2")}}) // 9
		w(&pb.PutRequest{Key: []byte("c"), Value: []byte("3"), Lease: 0})                              // 10
		tr.settle(10)
		tr.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 10}}})
		tr.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 99}}})
		w(&pb.CompactionRequest{Revision: 8})
		tr.create(&pb.WatchCreateRequest{Key: []byte("c"), StartRevision: 7})
		// A compacted watcher keeps its id (and holds progress back, in
		// etcd) until canceled.
		for r := tr.next(); ; r = tr.next() {
			tr.record(r)
			if r.CompactRevision != 0 {
				tr.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: r.WatchId}}})
				break
			}
		}
		tr.create(&pb.WatchCreateRequest{Key: []byte("c"), StartRevision: 8, PrevKv: true})
		w(&pb.PutRequest{Key: []byte("c"), Value: []byte("4")}) // 11
		tr.settle(11)
		return tr.String()
	}
	cairn := run(cairnWatchSubject(t))
	etcd := run(etcdWatchSubject(t))
	if cairn != etcd {
		t.Errorf("transcripts differ\n--- etcd\n%s--- cairn\n%s", etcd, cairn)
	}
}
