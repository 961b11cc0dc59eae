package api

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/lease"
	"github.com/cairn-db/cairn/internal/server"
)

// fakeLeases is the fake backend with in-memory leases: fixed TTLs and
// keys, a revision that every grant and revoke moves, and an error to
// return from every lease call when set.
type fakeLeases struct {
	*fakeBackend
	mu       sync.Mutex
	leases   map[int64]*fakeLease
	nextID   int64
	rev      int64
	err      error // returned by every call when set
	renewErr error // returned by LeaseRenew when set
	renewed  []int64
	renewing int // renewals in progress
	// renewGate, when set, is received from before each renewal.
	renewGate chan struct{}
}

type fakeLease struct {
	ttl  int64
	keys [][]byte
}

func newFakeLeases() *fakeLeases {
	return &fakeLeases{fakeBackend: newFakeBackend(), leases: map[int64]*fakeLease{}, nextID: 1000, rev: 1}
}

func (f *fakeLeases) hdrLocked() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: 7, MemberId: 9, RaftTerm: 2, Revision: f.rev}
}

func (f *fakeLeases) ResponseHeader() *pb.ResponseHeader {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hdrLocked()
}

func (f *fakeLeases) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	id := r.ID
	if id == 0 {
		f.nextID++
		id = f.nextID
	}
	if r.TTL > lease.MaxTTL {
		return nil, lease.ErrLeaseTTLTooLarge
	}
	if f.leases[id] != nil {
		return nil, lease.ErrLeaseExists
	}
	ttl := max(r.TTL, 2)
	f.leases[id] = &fakeLease{ttl: ttl}
	f.rev++
	return &pb.LeaseGrantResponse{Header: f.hdrLocked(), ID: id, TTL: ttl}, nil
}

func (f *fakeLeases) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.leases[r.ID] == nil {
		return nil, lease.ErrLeaseNotFound
	}
	delete(f.leases, r.ID)
	f.rev++
	return &pb.LeaseRevokeResponse{Header: f.hdrLocked()}, nil
}

func (f *fakeLeases) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	f.mu.Lock()
	gate := f.renewGate
	f.renewing++
	f.mu.Unlock()
	defer f.set(func(f *fakeLeases) { f.renewing-- })
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return -1, f.err
	}
	if f.renewErr != nil {
		return -1, f.renewErr
	}
	l := f.leases[id]
	if l == nil {
		return -1, lease.ErrLeaseNotFound
	}
	f.renewed = append(f.renewed, id)
	return l.ttl, nil
}

func (f *fakeLeases) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	l := f.leases[r.ID]
	if l == nil {
		return nil, lease.ErrLeaseNotFound
	}
	resp := &pb.LeaseTimeToLiveResponse{Header: f.hdrLocked(), ID: r.ID, TTL: l.ttl - 1, GrantedTTL: l.ttl}
	if r.Keys {
		resp.Keys = l.keys
	}
	return resp, nil
}

func (f *fakeLeases) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	resp := &pb.LeaseLeasesResponse{Header: f.hdrLocked()}
	for id := range f.leases {
		resp.Leases = append(resp.Leases, &pb.LeaseStatus{ID: id})
	}
	slices.SortFunc(resp.Leases, func(a, b *pb.LeaseStatus) int { return int(a.ID - b.ID) })
	return resp, nil
}

func (f *fakeLeases) set(fn func(f *fakeLeases)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// serveLeases serves the Lease service over f on a 127.0.0.1 port and
// returns a client of it.
func serveLeases(t *testing.T, f *fakeLeases) *clientv3.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	RegisterLease(gs, f)
	go gs.Serve(l)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{l.Addr().String()}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		gs.Stop()
	})
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLeaseGrant(t *testing.T) {
	f := newFakeLeases()
	c := serveLeases(t, f)
	ctx := testCtx(t)
	raw := pb.NewLeaseClient(c.ActiveConnection())

	// Server-chosen ID.
	g, err := c.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID != 1001 || g.TTL != 10 || g.Error != "" {
		t.Fatalf("Grant = %+v, want the backend's ID 1001, TTL 10", g)
	}
	if g.ResponseHeader == nil || g.ResponseHeader.ClusterId != 7 || g.ResponseHeader.Revision != 2 {
		t.Fatalf("Grant header = %v, want the backend's", g.ResponseHeader)
	}
	// Client-chosen ID (clientv3 has no call for it; the raw API has).
	r, err := raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 42, TTL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != 42 || r.TTL != 2 {
		t.Fatalf("LeaseGrant(ID 42, TTL 1) = %v, want ID 42 with the backend's minimum TTL 2", r)
	}

	for _, tc := range []struct {
		name string
		req  *pb.LeaseGrantRequest
		want error
	}{
		{"existing ID", &pb.LeaseGrantRequest{ID: 42, TTL: 10}, rpctypes.ErrLeaseExist},
		{"TTL above the maximum", &pb.LeaseGrantRequest{TTL: lease.MaxTTL + 1}, rpctypes.ErrLeaseTTLTooLarge},
		{"TTL above the maximum, existing ID", &pb.LeaseGrantRequest{ID: 42, TTL: lease.MaxTTL + 1}, rpctypes.ErrLeaseTTLTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := raw.LeaseGrant(ctx, tc.req)
			if got := rpctypes.Error(err); !errors.Is(got, tc.want) {
				t.Fatalf("LeaseGrant(%v) = %v, want %v", tc.req, err, tc.want)
			}
		})
	}
	// clientv3 maps the status to its typed error.
	if _, err := c.Grant(ctx, lease.MaxTTL+1); !errors.Is(err, rpctypes.ErrLeaseTTLTooLarge) {
		t.Fatalf("clientv3 Grant(too large) = %v, want rpctypes.ErrLeaseTTLTooLarge", err)
	}
	if _, err := c.Grant(ctx, lease.MaxTTL); err != nil {
		t.Fatalf("Grant(MaxTTL) = %v", err)
	}
}

func TestLeaseErrorsMapToClientErrors(t *testing.T) {
	for _, tc := range []struct {
		err     error
		want    error
		retried bool // codes.Unavailable: clientv3 retries it
	}{
		{lease.ErrLeaseNotFound, rpctypes.ErrLeaseNotFound, false},
		{lease.ErrLeaseExists, rpctypes.ErrLeaseExist, false},
		{lease.ErrLeaseTTLTooLarge, rpctypes.ErrLeaseTTLTooLarge, false},
		{lease.ErrNotPrimary, rpctypes.ErrLeaderChanged, true},
		{server.ErrTimeout, rpctypes.ErrTimeout, true},
		{server.ErrStopped, rpctypes.ErrStopped, true},
		{server.ErrNoSpace, rpctypes.ErrNoSpace, false},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			f := newFakeLeases()
			c := serveLeases(t, f)
			f.set(func(f *fakeLeases) { f.err = tc.err })
			ctx := testCtx(t)
			// The raw client, as clientv3 would retry the Unavailable ones;
			// rpctypes.Error is how clientv3 types a status.
			raw := pb.NewLeaseClient(c.ActiveConnection())
			check := func(call string, err error) {
				t.Helper()
				if got := rpctypes.Error(err); !errors.Is(got, tc.want) {
					t.Errorf("%s: %v, want %v", call, err, tc.want)
				}
			}
			_, err := raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 10})
			check("LeaseGrant", err)
			_, err = raw.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: 1})
			check("LeaseRevoke", err)
			_, err = raw.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
			check("LeaseLeases", err)
			if tc.err != lease.ErrLeaseNotFound {
				_, err = raw.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: 1})
				check("LeaseTimeToLive", err)
			}
			// And clientv3 itself, for the errors it does not retry.
			if tc.retried {
				return
			}
			if _, err := c.Revoke(ctx, 1); !errors.Is(err, tc.want) {
				t.Errorf("clientv3 Revoke: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestLeaseRevoke(t *testing.T) {
	f := newFakeLeases()
	c := serveLeases(t, f)
	ctx := testCtx(t)
	g, err := c.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Revoke(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Revision != 3 {
		t.Fatalf("Revoke header revision %d, want the backend's 3", r.Header.Revision)
	}
	if _, err := c.Revoke(ctx, g.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("second Revoke = %v, want rpctypes.ErrLeaseNotFound", err)
	}
}

func TestLeaseTimeToLive(t *testing.T) {
	f := newFakeLeases()
	c := serveLeases(t, f)
	ctx := testCtx(t)
	g, err := c.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeLeases) { f.leases[int64(g.ID)].keys = [][]byte{[]byte("a"), []byte("b")} })

	r, err := c.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != g.ID || r.TTL != 9 || r.GrantedTTL != 10 || len(r.Keys) != 2 || string(r.Keys[1]) != "b" {
		t.Fatalf("TimeToLive = %+v, want TTL 9, granted 10, keys [a b]", r)
	}
	// An unknown lease is no error: TTL -1, as etcd answers.
	r, err = c.TimeToLive(ctx, 4242)
	if err != nil {
		t.Fatalf("TimeToLive(unknown) = %v, want no error", err)
	}
	if r.ID != 4242 || r.TTL != -1 || r.GrantedTTL != 0 || r.Keys != nil {
		t.Fatalf("TimeToLive(unknown) = %+v, want ID 4242, TTL -1", r)
	}
	if r.ResponseHeader == nil || r.ResponseHeader.MemberId != 9 || r.ResponseHeader.Revision != 2 {
		t.Fatalf("TimeToLive(unknown) header = %v, want the backend's", r.ResponseHeader)
	}
}

func TestLeaseLeases(t *testing.T) {
	f := newFakeLeases()
	c := serveLeases(t, f)
	ctx := testCtx(t)
	r, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Leases) != 0 {
		t.Fatalf("Leases with none granted = %v", r.Leases)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.Grant(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	r, err = c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []clientv3.LeaseID
	for _, l := range r.Leases {
		ids = append(ids, l.ID)
	}
	if !slices.Equal(ids, []clientv3.LeaseID{1001, 1002, 1003}) {
		t.Fatalf("Leases = %v, want [1001 1002 1003]", ids)
	}
}

func TestLeaseKeepAliveStream(t *testing.T) {
	f := newFakeLeases()
	c := serveLeases(t, f)
	ctx := testCtx(t)
	g, err := c.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pb.NewLeaseClient(c.ActiveConnection()).LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id      int64
		wantTTL int64
	}{
		{int64(g.ID), 10},
		{4242, 0}, // unknown: TTL 0, and the stream stays open
		{int64(g.ID), 10},
	} {
		if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: tc.id}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("keep-alive of %d: %v", tc.id, err)
		}
		if resp.ID != tc.id || resp.TTL != tc.wantTTL {
			t.Fatalf("keep-alive of %d = %v, want TTL %d", tc.id, resp, tc.wantTTL)
		}
		if resp.Header == nil || resp.Header.ClusterId != 7 || resp.Header.Revision != 2 {
			t.Fatalf("keep-alive header = %v, want the backend's", resp.Header)
		}
	}
	// Closing the sending side ends the stream cleanly.
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend = %v, want io.EOF", err)
	}
	f.mu.Lock()
	renewed := slices.Clone(f.renewed)
	f.mu.Unlock()
	if !slices.Equal(renewed, []int64{int64(g.ID), int64(g.ID)}) {
		t.Fatalf("backend renewed %v, want lease %d twice", renewed, g.ID)
	}
}

func TestLeaseKeepAliveError(t *testing.T) {
	f := newFakeLeases()
	c := serveLeases(t, f)
	ctx := testCtx(t)
	g, err := c.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeLeases) { f.renewErr = lease.ErrNotPrimary })
	stream, err := pb.NewLeaseClient(c.ActiveConnection()).LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(g.ID)}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if s, _ := status.FromError(err); s.Code() != codes.Unavailable || !errors.Is(rpctypes.Error(err), rpctypes.ErrLeaderChanged) {
		t.Fatalf("keep-alive on a member that lost leadership = %v, want %v", err, rpctypes.ErrGRPCLeaderChanged)
	}
}

func TestLeaseKeepAliveClient(t *testing.T) {
	f := newFakeLeases()
	c := serveLeases(t, f)
	ctx := testCtx(t)
	g, err := c.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	once, err := c.KeepAliveOnce(ctx, g.ID)
	if err != nil || once.TTL != 10 || once.ID != g.ID {
		t.Fatalf("KeepAliveOnce = %+v, %v; want TTL 10", once, err)
	}
	// A short lease, so clientv3 sends its keep-alives every second.
	if g, err = c.Grant(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KeepAliveOnce(ctx, 4242); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("KeepAliveOnce(unknown) = %v, want rpctypes.ErrLeaseNotFound", err)
	}
	ch, err := c.KeepAlive(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-ch:
		if resp == nil || resp.TTL != 3 {
			t.Fatalf("KeepAlive's first response = %+v, want TTL 3", resp)
		}
	case <-ctx.Done():
		t.Fatal("no keep-alive response")
	}
	// Once the lease is gone the server answers TTL 0, and clientv3 closes
	// the channel.
	if _, err := c.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				return
			}
			_ = resp // responses sent before the revoke
		case <-ctx.Done():
			t.Fatal("keep-alive channel still open after the lease was revoked")
		}
	}
}

// TestLeaseKeepAliveEndsWithClient checks that a renewal blocked in the
// backend is abandoned once the client goes: the backend sees the
// stream's context end.
func TestLeaseKeepAliveEndsWithClient(t *testing.T) {
	f := newFakeLeases()
	f.set(func(f *fakeLeases) { f.renewGate = make(chan struct{}) })
	c := serveLeases(t, f)
	ctx, cancel := context.WithCancel(testCtx(t))
	stream, err := pb.NewLeaseClient(c.ActiveConnection()).LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: 1}); err != nil {
		t.Fatal(err)
	}
	renewing := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.renewing
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("the renewal to start", func() bool { return renewing() == 1 })
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after cancel = %v, want Canceled", err)
	}
	waitFor("the blocked renewal to be abandoned", func() bool { return renewing() == 0 })
}
