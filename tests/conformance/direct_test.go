package conformance

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/api"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/storage"
)

// startDirect serves cairn's API over its mvcc store with no raft in
// between: each write is applied at once under a mutex. With
// CAIRN_CONFORMANCE_SUBJECT=direct it is the subject, which tells a
// difference in the state machine or the API from one in the consensus
// path when the full member disagrees with etcd.
func startDirect(t testing.TB, dir string) (string, func()) {
	t.Helper()
	eng, err := storage.Open(dir, storage.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open storage: %v", err)
	}
	st, err := mvcc.Open(eng, mvcc.Options{})
	if err != nil {
		eng.Close()
		t.Fatalf("open mvcc: %v", err)
	}
	quiet := slog.New(slog.DiscardHandler)
	gs := api.NewGRPCServer(&directBackend{eng: eng, st: st}, api.Options{
		Registerer: prometheus.NewRegistry(),
		Gatherer:   prometheus.NewRegistry(),
		Logger:     quiet,
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	return l.Addr().String(), func() {
		gs.Stop()
		st.Close()
		eng.Close()
	}
}

// directBackend is api.Backend over a bare mvcc store.
type directBackend struct {
	directAuth
	mu  sync.Mutex // one Write at a time, as the apply loop would
	eng *storage.Engine
	st  *mvcc.Store
}

func (d *directBackend) Range(_ context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return d.st.Range(r)
}

// apply runs one write request in its own batch.
func apply[R any](d *directBackend, f func(*mvcc.Write) (R, <-chan struct{}, error)) (R, error) {
	d.mu.Lock()
	b := d.eng.NewBatch()
	w := d.st.Write(b)
	resp, physical, err := f(w)
	var zero R
	if err != nil && !isSentinel(err) {
		b.Discard()
		d.mu.Unlock()
		return zero, err
	}
	if cerr := b.Commit(false); cerr != nil {
		d.mu.Unlock()
		return zero, cerr
	}
	w.Done()
	d.mu.Unlock()
	if physical != nil {
		<-physical
	}
	return resp, err
}

func isSentinel(err error) bool {
	for _, s := range []error{mvcc.ErrCompacted, mvcc.ErrFutureRev, mvcc.ErrKeyNotFound, mvcc.ErrLeaseNotFound} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// tooLarge refuses what the server would: a request whose raft entry is
// over etcd's default 1.5 MiB. That check belongs to internal/server, which
// this side leaves out; doing it here keeps the size scenario comparing the
// rest.
func tooLarge(r *pb.InternalRaftRequest) error {
	r.Header = &pb.RequestHeader{ID: math.MaxUint64}
	if proto.Size(r) > api.DefaultMaxRequestBytes {
		return rpctypes.ErrGRPCRequestTooLarge
	}
	return nil
}

func (d *directBackend) Put(_ context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := tooLarge(&pb.InternalRaftRequest{Put: r}); err != nil {
		return nil, err
	}
	return apply(d, func(w *mvcc.Write) (*pb.PutResponse, <-chan struct{}, error) {
		resp, err := w.Put(r)
		return resp, nil, err
	})
}

func (d *directBackend) DeleteRange(_ context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	return apply(d, func(w *mvcc.Write) (*pb.DeleteRangeResponse, <-chan struct{}, error) {
		resp, err := w.DeleteRange(r)
		return resp, nil, err
	})
}

func (d *directBackend) Txn(_ context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := tooLarge(&pb.InternalRaftRequest{Txn: r}); err != nil {
		return nil, err
	}
	return apply(d, func(w *mvcc.Write) (*pb.TxnResponse, <-chan struct{}, error) {
		resp, err := w.Txn(r)
		return resp, nil, err
	})
}

func (d *directBackend) Compact(_ context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	return apply(d, func(w *mvcc.Write) (*pb.CompactionResponse, <-chan struct{}, error) {
		resp, ch, err := w.Compact(r)
		if !r.Physical {
			ch = nil
		}
		return resp, ch, err
	})
}

func (d *directBackend) Leader() uint64 { return 1 }

func (d *directBackend) Status() server.Status {
	return server.Status{ClusterID: 1, MemberID: 1, Leader: 1, RaftTerm: 1, Revision: d.st.Rev(), CompactRevision: d.st.CompactRev()}
}
