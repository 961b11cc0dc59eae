package api

import (
	"bytes"
	"context"
	"errors"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/watch"
)

// fakeBackend is an in-memory Backend for the API's tests: a sorted map of
// keys with a revision counter, enough of etcd's Range semantics (key,
// range_end, limit, count_only, keys_only, more, count) to exercise paging,
// and a record of every Range request it served.
//
// It implements the whole Backend. What it does not model answers with
// errFakeUnsupported (codes.Unimplemented, which the API passes through to
// the client): leases, membership, hashes, backups, leader moves, and
// changing alarms. The tests that need one of those wrap the fake and
// override the methods (alarmingBackend, memberBackend, fakeCluster,
// fakeLeases). WatchHub is the hub a test gives the fake (serveWatch does);
// RegisterWatch refuses a fake without one.
type fakeBackend struct {
	// fakeAuth: auth disabled, the Auth service unimplemented.
	fakeAuth
	mu     sync.Mutex
	kvs    map[string]*mvccpb.KeyValue
	rev    int64
	status server.Status
	err    error // returned by every call when set
	ranges []*pb.RangeRequest
	maxKvs int // most key-values one Range returned
	alarms []*pb.AlarmMember
	hub    *watch.Hub
}

// errFakeUnsupported is what the fake answers for what it does not model.
func errFakeUnsupported(what string) error {
	return status.Errorf(codes.Unimplemented, "fake backend: %s is not supported", what)
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

// RangeEncoded is Range: the fake never encodes (the contract allows it);
// the encoding is tested in mvcc and, end to end, in tests/conformance.
func (f *fakeBackend) RangeEncoded(ctx context.Context, r *pb.RangeRequest, _ func(int) []byte) (*pb.RangeResponse, *mvcc.EncodedKVs, error) {
	resp, err := f.Range(ctx, r)
	return resp, nil, err
}

// RangePage is Range: the fake counts every page in full, which RangeStream
// must not rely on.
func (f *fakeBackend) RangePage(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return f.Range(ctx, r)
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

func (f *fakeBackend) ClusterID() uint64 { return f.Status().ClusterID }
func (f *fakeBackend) MemberID() uint64  { return f.Status().MemberID }
func (f *fakeBackend) Term() uint64      { return f.Status().RaftTerm }
func (f *fakeBackend) IsLearner() bool   { return f.Status().IsLearner }

func (f *fakeBackend) ResponseHeader() *pb.ResponseHeader {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hdr()
}

func (f *fakeBackend) WatchHub() *watch.Hub { return f.hub }

// Alarms lists the alarms a test set in f.alarms.
func (f *fakeBackend) Alarms() []*pb.AlarmMember {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.alarms
}

// Alarm lists the alarms; the fake cannot change them (alarmingBackend can).
func (f *fakeBackend) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if r.Action != pb.AlarmRequest_GET {
		return nil, errFakeUnsupported("changing alarms")
	}
	return &pb.AlarmResponse{Alarms: f.Alarms()}, nil
}

func (f *fakeBackend) LeaseGrant(context.Context, *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return nil, errFakeUnsupported("LeaseGrant")
}

func (f *fakeBackend) LeaseRevoke(context.Context, *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return nil, errFakeUnsupported("LeaseRevoke")
}

func (f *fakeBackend) LeaseRenew(context.Context, int64) (int64, error) {
	return -1, errFakeUnsupported("LeaseRenew")
}

func (f *fakeBackend) LeaseTimeToLive(context.Context, *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	return nil, errFakeUnsupported("LeaseTimeToLive")
}

func (f *fakeBackend) LeaseLeases(context.Context, *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	return nil, errFakeUnsupported("LeaseLeases")
}

func (f *fakeBackend) MemberList(context.Context, bool) ([]membership.Member, error) {
	return nil, errFakeUnsupported("MemberList")
}

func (f *fakeBackend) MemberAdd(context.Context, []string, bool) (membership.Member, []membership.Member, error) {
	return membership.Member{}, nil, errFakeUnsupported("MemberAdd")
}

func (f *fakeBackend) MemberRemove(context.Context, uint64) ([]membership.Member, error) {
	return nil, errFakeUnsupported("MemberRemove")
}

func (f *fakeBackend) MemberUpdate(context.Context, uint64, []string) ([]membership.Member, error) {
	return nil, errFakeUnsupported("MemberUpdate")
}

func (f *fakeBackend) MemberPromote(context.Context, uint64) ([]membership.Member, error) {
	return nil, errFakeUnsupported("MemberPromote")
}

func (f *fakeBackend) Hash(context.Context) (*pb.HashResponse, error) {
	return nil, errFakeUnsupported("Hash")
}

func (f *fakeBackend) HashKV(context.Context, int64) (*pb.HashKVResponse, error) {
	return nil, errFakeUnsupported("HashKV")
}

func (f *fakeBackend) Snapshot(context.Context) (*server.SnapshotStream, error) {
	return nil, errFakeUnsupported("Snapshot")
}

func (f *fakeBackend) MoveLeader(context.Context, uint64) error {
	return errFakeUnsupported("MoveLeader")
}

// The fake is a whole Backend.
var _ Backend = (*fakeBackend)(nil)

func (f *fakeBackend) setStatus(fn func(*server.Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.status)
}

// alarmingBackend is a fakeBackend that can also activate and deactivate
// alarms.
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

// Defragment has nothing to give back: the fake keeps its keys in memory.
func (f *fakeBackend) Defragment(context.Context) error { return nil }

// The fake's versions: a cluster whose version is decided, no downgrade.
func (f *fakeBackend) ClusterVersion() string              { return "3.7.0" }
func (f *fakeBackend) StorageVersion() string              { return "3.7.0" }
func (f *fakeBackend) DowngradeInfo() membership.Downgrade { return membership.Downgrade{} }
func (f *fakeBackend) Downgrade(context.Context, pb.DowngradeRequest_DowngradeAction, string) (*pb.DowngradeResponse, error) {
	return nil, errors.New("fake: no downgrades")
}
