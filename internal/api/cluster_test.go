package api

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
)

// fakeCluster is the fake backend with an in-memory member list, changed
// the way membership.Validate allows, and an error to return from every
// membership call when set.
type fakeCluster struct {
	*fakeBackend
	mu           sync.Mutex
	members      []membership.Member
	removed      map[uint64]bool
	nextID       uint64
	err          error
	linearizable []bool // the flag of every MemberList call
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{
		fakeBackend: newFakeBackend(),
		members:     []membership.Member{{ID: 9, Name: "m1", PeerURLs: []string{"http://10.0.0.1:2380"}, ClientURLs: []string{"http://10.0.0.1:2379"}}},
		removed:     map[uint64]bool{},
		nextID:      100,
	}
}

func (f *fakeCluster) ClusterID() uint64 { return 7 }
func (f *fakeCluster) MemberID() uint64  { return 9 }
func (f *fakeCluster) Term() uint64      { return 2 }

func (f *fakeCluster) MemberList(ctx context.Context, linearizable bool) ([]membership.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.linearizable = append(f.linearizable, linearizable)
	return slices.Clone(f.members), f.err
}

// change applies ch as a server would: validated against the list, then
// applied.
func (f *fakeCluster) change(ch membership.Change) ([]membership.Member, error) {
	if f.err != nil {
		return nil, f.err
	}
	if err := membership.Validate(f.members, f.removed, ch, 1); err != nil {
		return nil, err
	}
	i := slices.IndexFunc(f.members, func(m membership.Member) bool { return m.ID == ch.Member.ID })
	switch ch.Kind {
	case membership.KindAdd:
		f.members = append(f.members, ch.Member)
	case membership.KindRemove:
		f.members = slices.Delete(f.members, i, i+1)
		f.removed[ch.Member.ID] = true
	case membership.KindUpdate:
		f.members[i].PeerURLs = ch.Member.PeerURLs
	case membership.KindPromote:
		f.members[i].IsLearner = false
	}
	return slices.Clone(f.members), nil
}

func (f *fakeCluster) MemberAdd(ctx context.Context, peerURLs []string, isLearner bool) (membership.Member, []membership.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := membership.Member{ID: f.nextID, PeerURLs: peerURLs, IsLearner: isLearner}
	f.nextID++
	ms, err := f.change(membership.Change{Kind: membership.KindAdd, Member: m})
	return m, ms, err
}

func (f *fakeCluster) MemberRemove(ctx context.Context, id uint64) ([]membership.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.change(membership.Change{Kind: membership.KindRemove, Member: membership.Member{ID: id}})
}

func (f *fakeCluster) MemberUpdate(ctx context.Context, id uint64, peerURLs []string) ([]membership.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.change(membership.Change{Kind: membership.KindUpdate, Member: membership.Member{ID: id, PeerURLs: peerURLs}})
}

func (f *fakeCluster) MemberPromote(ctx context.Context, id uint64) ([]membership.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.change(membership.Change{Kind: membership.KindPromote, Member: membership.Member{ID: id}})
}

// serveCluster serves the Cluster service over f on a 127.0.0.1 port and
// returns a client of it.
func serveCluster(t *testing.T, f *fakeCluster) *clientv3.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	RegisterCluster(gs, f)
	go gs.Serve(l)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{l.Addr().String()}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		gs.Stop()
	})
	return c
}

func TestMemberAddPromoteRemove(t *testing.T) {
	f := newFakeCluster()
	c := serveCluster(t, f)
	ctx := testCtx(t)

	add, err := c.MemberAddAsLearner(ctx, []string{"http://10.0.0.2:2380"})
	if err != nil {
		t.Fatal(err)
	}
	if add.Header.ClusterId != 7 || add.Header.MemberId != 9 || add.Header.RaftTerm != 2 || add.Header.Revision != 0 {
		t.Errorf("header %+v; want cluster 7, member 9, term 2 and no revision, as etcd", add.Header)
	}
	if add.Member.ID != 100 || !add.Member.IsLearner || !slices.Equal(add.Member.PeerURLs, []string{"http://10.0.0.2:2380"}) ||
		add.Member.Name != "" || len(add.Members) != 2 {
		t.Errorf("MemberAddAsLearner: member %+v, members %v", add.Member, add.Members)
	}
	// etcd's membership rules, through etcd's statuses and clientv3's
	// typed errors.
	if _, err := c.MemberAdd(ctx, []string{"http://10.0.0.2:2380"}); !errors.Is(err, rpctypes.ErrPeerURLExist) {
		t.Errorf("adding a taken peer URL: %v", err)
	}
	if _, err := c.MemberAddAsLearner(ctx, []string{"http://10.0.0.3:2380"}); !errors.Is(err, rpctypes.ErrTooManyLearners) {
		t.Errorf("a second learner: %v", err)
	}
	if _, err := c.MemberPromote(ctx, 9); !errors.Is(err, rpctypes.ErrMemberNotLearner) {
		t.Errorf("promoting a voter: %v", err)
	}
	prom, err := c.MemberPromote(ctx, 100)
	if err != nil || len(prom.Members) != 2 || prom.Members[1].IsLearner {
		t.Fatalf("MemberPromote: %v %v", prom, err)
	}

	upd, err := c.MemberUpdate(ctx, 100, []string{"http://10.0.0.22:2380"})
	if err != nil || !slices.Equal(upd.Members[1].PeerURLs, []string{"http://10.0.0.22:2380"}) {
		t.Fatalf("MemberUpdate: %v %v", upd, err)
	}
	if _, err := c.MemberUpdate(ctx, 100, []string{"http://10.0.0.1:2380"}); !errors.Is(err, rpctypes.ErrPeerURLExist) {
		t.Errorf("updating to another member's peer URL: %v", err)
	}

	rm, err := c.MemberRemove(ctx, 100)
	if err != nil || len(rm.Members) != 1 || rm.Members[0].ID != 9 {
		t.Fatalf("MemberRemove: %v %v", rm, err)
	}
	for what, err := range map[string]error{
		"remove again":    second(c.MemberRemove(ctx, 100)),
		"remove unknown":  second(c.MemberRemove(ctx, 12345)),
		"update unknown":  second(c.MemberUpdate(ctx, 12345, []string{"http://10.0.0.9:2380"})),
		"promote unknown": second(c.MemberPromote(ctx, 12345)),
		"promote removed": second(c.MemberPromote(ctx, 100)),
		"update removed":  second(c.MemberUpdate(ctx, 100, []string{"http://10.0.0.9:2380"})),
	} {
		if !errors.Is(err, rpctypes.ErrMemberNotFound) {
			t.Errorf("%s: %v, want %v", what, err, rpctypes.ErrMemberNotFound)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// TestMemberAddBadURLs sends malformed peer URLs with the raw gRPC client:
// clientv3 checks them before sending, other clients (and etcdctl's older
// versions) do not.
func TestMemberAddBadURLs(t *testing.T) {
	c := serveCluster(t, newFakeCluster())
	raw := pb.NewClusterClient(c.ActiveConnection())
	ctx := testCtx(t)
	for _, urls := range [][]string{
		nil,
		{"10.0.0.2:2380"},
		{"http://10.0.0.2"},
		{"http://10.0.0.2:2380/path"},
		{"tcp://10.0.0.2:2380"},
		{"http://10.0.0.2:2380", "::"},
	} {
		if _, err := raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: urls}); !errors.Is(err, rpctypes.ErrGRPCMemberBadURLs) {
			t.Errorf("MemberAdd(%q): %v, want %v", urls, err, rpctypes.ErrGRPCMemberBadURLs)
		}
		if _, err := raw.MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: 9, PeerURLs: urls}); !errors.Is(err, rpctypes.ErrGRPCMemberBadURLs) {
			t.Errorf("MemberUpdate(%q): %v, want %v", urls, err, rpctypes.ErrGRPCMemberBadURLs)
		}
	}
	// URLs are answered in etcd's normal form: sorted.
	add, err := raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"http://10.0.0.3:2380", " http://10.0.0.2:2380"}})
	if err != nil || !slices.Equal(add.Member.PeerURLs, []string{"http://10.0.0.2:2380", "http://10.0.0.3:2380"}) {
		t.Errorf("MemberAdd with two URLs: %+v %v", add, err)
	}
}

func TestMemberList(t *testing.T) {
	f := newFakeCluster()
	c := serveCluster(t, f)
	ctx := testCtx(t)
	resp, err := c.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"http://10.0.0.1:2379"}
	if len(resp.Members) != 1 || resp.Members[0].Name != "m1" || resp.Members[0].ID != 9 || !slices.Equal(resp.Members[0].ClientURLs, want) {
		t.Errorf("MemberList: %v", resp.Members)
	}
	if _, err := c.MemberList(ctx, clientv3.WithSerializable()); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	got := slices.Clone(f.linearizable)
	f.mu.Unlock()
	if !slices.Equal(got, []bool{true, false}) {
		t.Errorf("linearizable flags passed on: %v, want [true false] (clientv3's default, then WithSerializable)", got)
	}

	// A failure that clientv3 does not retry reaches the caller typed.
	f.mu.Lock()
	f.err = membership.ErrIDNotFound
	f.mu.Unlock()
	if _, err := c.MemberList(ctx); !errors.Is(err, rpctypes.ErrMemberNotFound) {
		t.Errorf("MemberList failing: %v", err)
	}
}

// TestClusterErrorsMapToClientErrors checks each membership and server
// error a change can fail with against the typed error clientv3 gives for
// etcd's status.
func TestClusterErrorsMapToClientErrors(t *testing.T) {
	f := newFakeCluster()
	c := serveCluster(t, f)
	ctx := testCtx(t)
	for _, tc := range []struct {
		err, want error
	}{
		{membership.ErrIDRemoved, rpctypes.ErrMemberNotFound},
		{membership.ErrIDNotFound, rpctypes.ErrMemberNotFound},
		{membership.ErrIDExists, rpctypes.ErrMemberExist},
		{membership.ErrPeerURLExists, rpctypes.ErrPeerURLExist},
		{membership.ErrMemberNotLearner, rpctypes.ErrMemberNotLearner},
		{membership.ErrTooManyLearners, rpctypes.ErrTooManyLearners},
		{membership.ErrLastVoter, rpctypes.ErrMemberNotEnoughStarted},
		{server.ErrLearnerNotReady, rpctypes.ErrMemberLearnerNotReady},
		{server.ErrNotEnoughStartedMembers, rpctypes.ErrMemberNotEnoughStarted},
		{server.ErrUnhealthy, rpctypes.ErrUnhealthy},
		{server.ErrTimeout, rpctypes.ErrTimeout},
		{server.ErrStopped, rpctypes.ErrStopped},
	} {
		f.mu.Lock()
		f.err = tc.err
		f.mu.Unlock()
		if _, err := c.MemberRemove(ctx, 9); !errors.Is(err, tc.want) {
			t.Errorf("%v: client got %v, want %v", tc.err, err, tc.want)
		}
	}
}

// memberBackend is the fake KV backend with the member-level extras: a
// learner flag, HashKV and MoveLeader.
type memberBackend struct {
	*fakeBackend
	learner  atomic.Bool
	moveErr  error
	movedTo  atomic.Uint64
	hashRevs []int64
	mu       sync.Mutex
}

func (m *memberBackend) IsLearner() bool { return m.learner.Load() }

func (m *memberBackend) HashKV(ctx context.Context, rev int64) (*pb.HashKVResponse, error) {
	m.mu.Lock()
	m.hashRevs = append(m.hashRevs, rev)
	m.mu.Unlock()
	if rev > 100 {
		return nil, mvcc.ErrFutureRev
	}
	return &pb.HashKVResponse{Header: &pb.ResponseHeader{ClusterId: 7, MemberId: 9, Revision: 100, RaftTerm: 2},
		Hash: 0xdeadbeef, CompactRevision: 3, HashRevision: rev}, nil
}

func (m *memberBackend) MoveLeader(ctx context.Context, target uint64) error {
	if m.moveErr != nil {
		return m.moveErr
	}
	m.movedTo.Store(target)
	return nil
}

func TestLearnerRefusesWhatEtcdsLearnersRefuse(t *testing.T) {
	b := &memberBackend{fakeBackend: newFakeBackend()}
	s := serve(t, b, Options{})
	ctx := testCtx(t)
	if _, err := s.client.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	b.learner.Store(true)

	// What a learner serves.
	if _, err := s.client.Status(ctx, s.addr); err != nil {
		t.Errorf("Status on a learner: %v", err)
	}
	if _, err := s.client.Get(ctx, "k", clientv3.WithSerializable()); err != nil {
		t.Errorf("serializable Get on a learner: %v", err)
	}
	// What it refuses.
	kv := pb.NewKVClient(s.client.ActiveConnection())
	for what, err := range map[string]error{
		"linearizable Range": second(kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")})),
		"Put":                second(kv.Put(ctx, &pb.PutRequest{Key: []byte("k")})),
		"Txn":                second(kv.Txn(ctx, &pb.TxnRequest{})),
		"HashKV":             second(pb.NewMaintenanceClient(s.client.ActiveConnection()).HashKV(ctx, &pb.HashKVRequest{})),
	} {
		if !errors.Is(err, rpctypes.ErrGRPCNotSupportedForLearner) {
			t.Errorf("%s on a learner: %v, want %v", what, err, rpctypes.ErrGRPCNotSupportedForLearner)
		}
	}
	stream, err := pb.NewKVClient(s.client.ActiveConnection()).RangeStream(ctx, &pb.RangeRequest{Key: []byte("k"), Serializable: true})
	if err == nil {
		_, err = stream.Recv()
	}
	if !errors.Is(err, rpctypes.ErrGRPCNotSupportedForLearner) {
		t.Errorf("RangeStream on a learner: %v, want %v", err, rpctypes.ErrGRPCNotSupportedForLearner)
	}

	b.learner.Store(false)
	if _, err := s.client.Get(ctx, "k"); err != nil {
		t.Errorf("linearizable Get once promoted: %v", err)
	}
}

func TestHashKVAndMoveLeader(t *testing.T) {
	b := &memberBackend{fakeBackend: newFakeBackend()}
	s := serve(t, b, Options{})
	ctx := testCtx(t)

	h, err := s.client.HashKV(ctx, s.addr, 42)
	if err != nil {
		t.Fatal(err)
	}
	if h.Hash != 0xdeadbeef || h.CompactRevision != 3 || h.HashRevision != 42 || h.Header.Revision != 100 {
		t.Errorf("HashKV: %+v", h)
	}
	if _, err := s.client.HashKV(ctx, s.addr, 101); !errors.Is(err, rpctypes.ErrFutureRev) {
		t.Errorf("HashKV of a future revision: %v", err)
	}

	if resp, err := s.client.MoveLeader(ctx, 5); err != nil || resp.Header != nil || b.movedTo.Load() != 5 {
		t.Errorf("MoveLeader: %+v %v, moved to %d", resp, err, b.movedTo.Load())
	}
	for _, tc := range []struct{ err, want error }{
		{server.ErrNotLeader, rpctypes.ErrNotLeader},
		{server.ErrBadLeaderTransferee, rpctypes.ErrBadLeaderTransferee},
	} {
		b.moveErr = tc.err
		if _, err := s.client.MoveLeader(ctx, 5); !errors.Is(err, tc.want) {
			t.Errorf("MoveLeader failing with %v: %v, want %v", tc.err, err, tc.want)
		}
	}
	b.moveErr = server.ErrTimeoutLeaderTransfer
	if _, err := s.client.MoveLeader(ctx, 5); err == nil || status.Code(err) != codes.Unknown || status.Convert(err).Message() != server.ErrTimeoutLeaderTransfer.Error() {
		t.Errorf("MoveLeader timing out: %v, want etcd's plain %q", err, server.ErrTimeoutLeaderTransfer)
	}
}
