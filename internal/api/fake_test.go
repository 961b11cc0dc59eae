package api

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/server"
)

// fakeBackend is an in-memory Backend for the API's tests: a sorted map of
// keys with a revision counter, enough of etcd's Range semantics (key,
// range_end, limit, count_only, keys_only, more, count) to exercise paging,
// and a record of every Range request it served.
type fakeBackend struct {
	mu     sync.Mutex
	kvs    map[string]*mvccpb.KeyValue
	rev    int64
	status server.Status
	err    error // returned by every call when set
	ranges []*pb.RangeRequest
	maxKvs int // most key-values one Range returned
	alarms []*pb.AlarmMember
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		kvs:    make(map[string]*mvccpb.KeyValue),
		rev:    1,
		status: server.Status{ClusterID: 7, MemberID: 9, Leader: 9, RaftTerm: 2, RaftIndex: 11, AppliedIndex: 10, DBSize: 4096, DBSizeInUse: 2048, DBSizeQuota: 2 << 30},
	}
}

func (f *fakeBackend) hdr() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: f.status.ClusterID, MemberId: f.status.MemberID, RaftTerm: f.status.RaftTerm, Revision: f.rev}
}

func (f *fakeBackend) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func inRange(key, begin, end []byte) bool {
	switch {
	case len(end) == 0:
		return bytes.Equal(key, begin)
	case bytes.Equal(end, []byte{0}):
		return bytes.Compare(key, begin) >= 0
	default:
		return bytes.Compare(key, begin) >= 0 && bytes.Compare(key, end) < 0
	}
}

func (f *fakeBackend) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ranges = append(f.ranges, proto.Clone(r).(*pb.RangeRequest))
	if f.err != nil {
		return nil, f.err
	}
	var keys []string
	for k := range f.kvs {
		if inRange([]byte(k), r.Key, r.RangeEnd) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	// Like etcd's, the header has the store's current revision whatever
	// revision was read (the fake keeps only the latest values).
	resp := &pb.RangeResponse{Header: f.hdr(), Count: int64(len(keys))}
	if r.CountOnly {
		return resp, nil
	}
	if r.Limit > 0 && int64(len(keys)) > r.Limit {
		keys = keys[:r.Limit]
		resp.More = true
	}
	for _, k := range keys {
		kv := proto.Clone(f.kvs[k]).(*mvccpb.KeyValue)
		if r.KeysOnly {
			kv.Value = nil
		}
		resp.Kvs = append(resp.Kvs, kv)
	}
	f.maxKvs = max(f.maxKvs, len(resp.Kvs))
	return resp, nil
}

func (f *fakeBackend) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.rev++
	kv := &mvccpb.KeyValue{Key: r.Key, Value: r.Value, CreateRevision: f.rev, ModRevision: f.rev, Version: 1}
	if old, ok := f.kvs[string(r.Key)]; ok {
		kv.CreateRevision, kv.Version = old.CreateRevision, old.Version+1
	}
	f.kvs[string(r.Key)] = kv
	return &pb.PutResponse{Header: f.hdr()}, nil
}

func (f *fakeBackend) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var n int64
	for k := range f.kvs {
		if inRange([]byte(k), r.Key, r.RangeEnd) {
			delete(f.kvs, k)
			n++
		}
	}
	if n > 0 {
		f.rev++
	}
	return &pb.DeleteRangeResponse{Header: f.hdr(), Deleted: n}, nil
}

func (f *fakeBackend) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &pb.TxnResponse{Header: f.hdr(), Succeeded: true}, nil
}

func (f *fakeBackend) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &pb.CompactionResponse{Header: f.hdr()}, nil
}

func (f *fakeBackend) Leader() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status.Leader
}

func (f *fakeBackend) Status() server.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status
	st.Revision = f.rev
	return st
}

func (f *fakeBackend) setStatus(fn func(*server.Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.status)
}

// alarmingBackend is a fakeBackend that also keeps alarms.
type alarmingBackend struct{ *fakeBackend }

func (a alarmingBackend) Alarms() []*pb.AlarmMember {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.alarms
}

func (a alarmingBackend) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch r.Action {
	case pb.AlarmRequest_ACTIVATE:
		a.alarms = append(a.alarms, &pb.AlarmMember{MemberID: r.MemberID, Alarm: r.Alarm})
	case pb.AlarmRequest_DEACTIVATE:
		a.alarms = nil
	}
	return &pb.AlarmResponse{Alarms: a.alarms}, nil
}

// served is an API served on a 127.0.0.1 port: gRPC and HTTP on one
// listener, as embed serves it.
type served struct {
	addr   string
	grpc   *grpc.Server
	mux    *ConnMux
	client *clientv3.Client
}

func serve(t *testing.T, b Backend, o Options) *served {
	t.Helper()
	reg := prometheus.NewRegistry()
	if o.Registerer == nil {
		o.Registerer, o.Gatherer = reg, reg
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &served{addr: l.Addr().String(), grpc: NewGRPCServer(b, o), mux: NewConnMux(l)}
	hs := &http.Server{Handler: NewHTTPHandler(b, o, HTTPOptions{EnableGateway: true})}
	go s.grpc.Serve(s.mux.GRPC())
	go hs.Serve(s.mux.HTTP())
	go s.mux.Serve()
	t.Cleanup(func() {
		if s.client != nil {
			s.client.Close()
		}
		s.grpc.Stop()
		hs.Close()
		s.mux.Close()
	})
	s.client, err = clientv3.New(clientv3.Config{Endpoints: []string{s.addr}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *served) kv() pb.KVClient { return pb.NewKVClient(s.client.ActiveConnection()) }
