package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestClientSeesTypedErrors checks what a clientv3 user notices: requests
// etcd refuses are refused with the typed errors clientv3 gives for etcd.
func TestClientSeesTypedErrors(t *testing.T) {
	s := serve(t, newFakeBackend(), Options{})
	ctx := ctxT(t)

	if _, err := s.client.Put(ctx, "", "v"); !errors.Is(err, rpctypes.ErrEmptyKey) {
		t.Errorf("put empty key: %v, want %v", err, rpctypes.ErrEmptyKey)
	}
	if _, err := s.client.Get(ctx, ""); !errors.Is(err, rpctypes.ErrEmptyKey) {
		t.Errorf("get empty key: %v, want %v", err, rpctypes.ErrEmptyKey)
	}
	if _, err := s.client.Put(ctx, "k", "v", clientv3.WithIgnoreValue()); !errors.Is(err, rpctypes.ErrValueProvided) {
		t.Errorf("put ignore value: %v, want %v", err, rpctypes.ErrValueProvided)
	}
	_, err := s.client.Txn(ctx).Then(clientv3.OpPut("a", "1"), clientv3.OpPut("a", "2")).Commit()
	if !errors.Is(err, rpctypes.ErrDuplicateKey) {
		t.Errorf("txn duplicate: %v, want %v", err, rpctypes.ErrDuplicateKey)
	}
	var many []clientv3.Op
	for i := range 129 {
		many = append(many, clientv3.OpPut(fmt.Sprint(i), "v"))
	}
	if _, err := s.client.Txn(ctx).Then(many...).Commit(); !errors.Is(err, rpctypes.ErrTooManyOps) {
		t.Errorf("txn 129 ops: %v, want %v", err, rpctypes.ErrTooManyOps)
	}

	// Requests that pass validation reach the backend and come back whole.
	if _, err := s.client.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get: %v %v", resp, err)
	}
	if resp.Header.ClusterId != 7 || resp.Header.MemberId != 9 || resp.Header.Revision != 2 {
		t.Errorf("header %v: the backend's header must reach the client", resp.Header)
	}
}

// TestMaxTxnOpsOption checks that a configured limit replaces etcd's 128.
func TestMaxTxnOpsOption(t *testing.T) {
	s := serve(t, newFakeBackend(), Options{MaxTxnOps: 2})
	ctx := ctxT(t)
	if _, err := s.client.Txn(ctx).Then(clientv3.OpPut("a", "1"), clientv3.OpPut("b", "2")).Commit(); err != nil {
		t.Fatalf("2 ops with limit 2: %v", err)
	}
	_, err := s.client.Txn(ctx).Then(clientv3.OpPut("a", "1"), clientv3.OpPut("b", "2"), clientv3.OpPut("c", "3")).Commit()
	if !errors.Is(err, rpctypes.ErrTooManyOps) {
		t.Fatalf("3 ops with limit 2: %v", err)
	}
}

func TestErrorTable(t *testing.T) {
	cases := []struct {
		err  error
		want error
	}{
		{mvcc.ErrCompacted, rpctypes.ErrGRPCCompacted},
		{mvcc.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
		{mvcc.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
		{mvcc.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
		{fmt.Errorf("range at 3: %w", mvcc.ErrCompacted), rpctypes.ErrGRPCCompacted},
		{rpctypes.ErrGRPCNoSpace, rpctypes.ErrGRPCNoSpace},
		{server.ErrRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
		{server.ErrNoSpace, rpctypes.ErrGRPCNoSpace},
		{server.ErrTooManyRequests, rpctypes.ErrTooManyRequests},
		{server.ErrNoLeader, rpctypes.ErrGRPCNoLeader},
		{server.ErrStopped, rpctypes.ErrGRPCStopped},
		{server.ErrTimeout, rpctypes.ErrGRPCTimeout},
		{server.ErrCanceled, rpctypes.ErrGRPCCanceled},
	}
	for _, tc := range cases {
		if got := toGRPCError(tc.err); got != tc.want {
			t.Errorf("toGRPCError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	for _, err := range []error{context.Canceled, context.DeadlineExceeded, fmt.Errorf("wait: %w", context.Canceled)} {
		if got := toGRPCError(err); got != err {
			t.Errorf("context error %v became %v; gRPC must see it as it is", err, got)
		}
	}
	got := status.Convert(toGRPCError(errors.New("disk on fire")))
	if got.Code() != codes.Unknown || got.Message() != "disk on fire" {
		t.Errorf("unknown error became %v", got)
	}
	if toGRPCError(nil) != nil {
		t.Error("nil error must stay nil")
	}
}

// TestBackendErrorsReachClientTyped checks the error table end to end: a
// store error comes out of clientv3 as the typed error etcd would give.
func TestBackendErrorsReachClientTyped(t *testing.T) {
	f := newFakeBackend()
	s := serve(t, f, Options{})
	ctx := ctxT(t)
	cases := []struct {
		err  error
		want error
	}{
		{mvcc.ErrCompacted, rpctypes.ErrCompacted},
		{mvcc.ErrFutureRev, rpctypes.ErrFutureRev},
		{mvcc.ErrLeaseNotFound, rpctypes.ErrLeaseNotFound},
		{server.ErrRequestTooLarge, rpctypes.ErrRequestTooLarge},
		{server.ErrNoSpace, rpctypes.ErrNoSpace},
		{server.ErrTooManyRequests, rpctypes.ErrTooManyRequests},
	}
	for _, tc := range cases {
		f.setErr(tc.err)
		if _, err := s.client.Get(ctx, "k", clientv3.WithRev(3)); !errors.Is(err, tc.want) {
			t.Errorf("backend %v: client got %v, want %v", tc.err, err, tc.want)
		}
	}
	f.setErr(mvcc.ErrCompacted)
	if _, err := s.client.Compact(ctx, 1); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("compact: %v", err)
	}
}

func TestRequireLeader(t *testing.T) {
	f := newFakeBackend()
	s := serve(t, f, Options{})
	ctx := ctxT(t)
	if _, err := s.client.Get(clientv3.WithRequireLeader(ctx), "k"); err != nil {
		t.Fatalf("with a leader: %v", err)
	}
	f.setStatus(func(st *server.Status) { st.Leader = 0 })
	if _, err := s.client.Get(clientv3.WithRequireLeader(ctx), "k"); !errors.Is(err, rpctypes.ErrNoLeader) {
		t.Fatalf("without a leader, requiring one: %v, want %v", err, rpctypes.ErrNoLeader)
	}
	if _, err := s.client.Get(ctx, "k"); err != nil {
		t.Fatalf("without a leader, not requiring one: %v", err)
	}
	md := metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
	stream, err := s.kv().RangeStream(metadata.NewOutgoingContext(ctx, md), &pb.RangeRequest{Key: []byte("a")})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Convert(err).Message() != status.Convert(rpctypes.ErrGRPCNoLeader).Message() {
		t.Fatalf("stream without a leader: %v", err)
	}
}

func TestUnregisteredServicesAreUnimplemented(t *testing.T) {
	s := serve(t, newFakeBackend(), Options{})
	ctx := ctxT(t)
	_, err := pb.NewLeaseClient(s.client.ActiveConnection()).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 5})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("LeaseGrant: %v, want Unimplemented", err)
	}
	_, err = pb.NewClusterClient(s.client.ActiveConnection()).MemberList(ctx, &pb.MemberListRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("MemberList: %v, want Unimplemented", err)
	}
}

// TestRequestSizeLimit checks the gRPC receive limit: a request a little
// over MaxRequestBytes still reaches the server (which judges its size
// itself, with etcd's "request is too large"), one past the 512 KiB of
// framing allowance is refused by gRPC.
func TestRequestSizeLimit(t *testing.T) {
	s := serve(t, newFakeBackend(), Options{MaxRequestBytes: 1024})
	ctx := ctxT(t)
	if _, err := s.kv().Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: make([]byte, 2048)}); err != nil {
		t.Fatalf("2 KiB put with a 1 KiB limit must reach the server: %v", err)
	}
	_, err := s.kv().Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: make([]byte, 1024+grpcOverheadBytes)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("put past the framing allowance: %v, want ResourceExhausted", err)
	}
}

// collectStream reads a RangeStream to its end.
func collectStream(t *testing.T, s *served, r *pb.RangeRequest) ([]*pb.RangeResponse, error) {
	t.Helper()
	stream, err := s.kv().RangeStream(ctxT(t), r)
	if err != nil {
		return nil, err
	}
	var chunks []*pb.RangeResponse
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			return chunks, nil
		}
		if err != nil {
			return chunks, err
		}
		chunks = append(chunks, c.RangeResponse)
	}
}

func fill(t *testing.T, f *fakeBackend, n, valueSize int) {
	t.Helper()
	for i := range n {
		if _, err := f.Put(context.Background(), &pb.PutRequest{Key: fmt.Appendf(nil, "k%05d", i), Value: []byte(strings.Repeat("v", valueSize))}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRangeStream(t *testing.T) {
	f := newFakeBackend()
	fill(t, f, 1000, 100)
	s := serve(t, f, Options{MaxRequestBytes: 4096})
	startRev := f.Status().Revision

	cases := []struct {
		name      string
		req       *pb.RangeRequest
		wantKeys  int
		wantCount int64
		wantMore  bool
	}{
		{"all", &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}, 1000, 1000, false},
		{"from key", &pb.RangeRequest{Key: []byte("k00500"), RangeEnd: []byte{0}}, 500, 500, false},
		{"limit", &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 333}, 333, 1000, true},
		{"limit exact", &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 1000}, 1000, 1000, false},
		{"limit above", &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 5000}, 1000, 1000, false},
		{"negative limit", &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: -1}, 1000, 1000, false},
		{"one key", &pb.RangeRequest{Key: []byte("k00007")}, 1, 1, false},
		{"no key", &pb.RangeRequest{Key: []byte("nope")}, 0, 0, false},
		{"keys only", &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), KeysOnly: true}, 1000, 1000, false},
		{"count only", &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true}, 0, 1000, false},
		{"explicit sort by key", &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), SortTarget: pb.RangeRequest_KEY, SortOrder: pb.RangeRequest_ASCEND}, 1000, 1000, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.mu.Lock()
			f.ranges, f.maxKvs = nil, 0
			f.mu.Unlock()
			chunks, err := collectStream(t, s, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(chunks) == 0 {
				t.Fatal("no chunk")
			}
			var keys []string
			for i, c := range chunks {
				last := i == len(chunks)-1
				if !last && (c.Header != nil || c.More || c.Count != 0) {
					t.Fatalf("chunk %d of %d carries header/more/count: %v", i, len(chunks), c)
				}
				for _, kv := range c.Kvs {
					keys = append(keys, string(kv.Key))
					if tc.req.KeysOnly && len(kv.Value) != 0 {
						t.Fatalf("keys only returned a value for %q", kv.Key)
					}
				}
			}
			end := chunks[len(chunks)-1]
			if len(keys) != tc.wantKeys || end.Count != tc.wantCount || end.More != tc.wantMore {
				t.Fatalf("got %d keys, count %d, more %v; want %d, %d, %v", len(keys), end.Count, end.More, tc.wantKeys, tc.wantCount, tc.wantMore)
			}
			for i := 1; i < len(keys); i++ {
				if keys[i-1] >= keys[i] {
					t.Fatalf("keys out of order or repeated at %d: %q, %q", i, keys[i-1], keys[i])
				}
			}
			if end.Header == nil || end.Header.Revision != startRev || end.Header.ClusterId != 7 || end.Header.MemberId != 9 {
				t.Fatalf("final header %v, want revision %d and the member's ids", end.Header, startRev)
			}
			if tc.wantKeys > 100 && len(chunks) < 3 {
				t.Errorf("%d keys of ~110 bytes with a 4 KiB target came in %d chunks", tc.wantKeys, len(chunks))
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			// Every page after the first reads the pinned revision
			// serializably, and no page held more than a chunk's worth.
			for i, r := range f.ranges[1:] {
				if r.Revision != startRev || !r.Serializable {
					t.Fatalf("page %d read revision %d serializable=%v; want pinned %d, serializable", i+1, r.Revision, r.Serializable, startRev)
				}
			}
			if f.maxKvs > 160 {
				t.Errorf("one page held %d key-values; with a 4 KiB target pages must stay near 40", f.maxKvs)
			}
		})
	}
}

// TestRangeStreamPinsRevision checks that writes made while a stream is in
// flight do not show in it: every page reads the first page's revision.
func TestRangeStreamPinsRevision(t *testing.T) {
	f := newFakeBackend()
	fill(t, f, 200, 10)
	s := serve(t, f, Options{MaxRequestBytes: 1024})
	rev := f.Status().Revision
	stream, err := s.kv().RangeStream(ctxT(t), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.RangeResponse.Header != nil {
		t.Fatal("first of several chunks carries the header")
	}
	fill(t, f, 1, 10) // a write after the stream started
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h := c.RangeResponse.Header; h != nil && h.Revision != rev {
			t.Fatalf("final header at revision %d, want the pinned %d", h.Revision, rev)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.ranges[1:] {
		if r.Revision != rev {
			t.Fatalf("a page read revision %d, want %d", r.Revision, rev)
		}
	}
}

// TestRangeStreamRevisions checks the revision rules: a stream that names
// an older revision reads it on every page but reports the store's current
// revision in its header, as Range does; a negative revision reads the
// current one, pinned like 0.
func TestRangeStreamRevisions(t *testing.T) {
	f := newFakeBackend()
	fill(t, f, 50, 10)
	s := serve(t, f, Options{MaxRequestBytes: 256})
	cur := f.Status().Revision
	for _, tc := range []struct{ asked, read int64 }{{7, 7}, {-1, cur}, {0, cur}} {
		f.mu.Lock()
		f.ranges = nil
		f.mu.Unlock()
		chunks, err := collectStream(t, s, &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: tc.asked})
		if err != nil {
			t.Fatal(err)
		}
		if h := chunks[len(chunks)-1].Header; h.Revision != cur {
			t.Errorf("revision %d: header revision %d, want the current %d", tc.asked, h.Revision, cur)
		}
		f.mu.Lock()
		if len(f.ranges) < 3 {
			t.Errorf("revision %d: %d pages; the test wants several", tc.asked, len(f.ranges))
		}
		for i, r := range f.ranges[1:] {
			if r.Revision != tc.read {
				t.Errorf("revision %d: page %d read revision %d, want %d", tc.asked, i+1, r.Revision, tc.read)
			}
		}
		f.mu.Unlock()
	}
}

func TestRangeStreamRefusals(t *testing.T) {
	f := newFakeBackend()
	s := serve(t, f, Options{})
	cases := []struct {
		req  *pb.RangeRequest
		want error
	}{
		{&pb.RangeRequest{}, rpctypes.ErrGRPCEmptyKey},
		{&pb.RangeRequest{Key: []byte("a"), SortOrder: 9}, rpctypes.ErrGRPCInvalidSortOption},
		{&pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND}, errStreamSort},
		{&pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_VALUE}, errStreamSort},
		{&pb.RangeRequest{Key: []byte("a"), MinModRevision: 2}, errStreamRevFilter},
		{&pb.RangeRequest{Key: []byte("a"), MaxCreateRevision: 2}, errStreamRevFilter},
	}
	for _, tc := range cases {
		_, err := collectStream(t, s, tc.req)
		if status.Code(err) != status.Code(tc.want) || status.Convert(err).Message() != status.Convert(tc.want).Message() {
			t.Errorf("%v: got %v, want %v", tc.req, err, tc.want)
		}
	}
	f.setErr(mvcc.ErrCompacted)
	if _, err := collectStream(t, s, &pb.RangeRequest{Key: []byte("a"), Revision: 1}); status.Convert(err).Message() != status.Convert(rpctypes.ErrGRPCCompacted).Message() {
		t.Errorf("compacted revision: %v", err)
	}
}

func TestNextChunkLimit(t *testing.T) {
	cases := []struct {
		last         int64
		size, target int
		want         int64
	}{
		{10, 100, 1000, 20},  // well under: double
		{10, 600, 1000, 10},  // near: keep
		{10, 1900, 1000, 10}, // near: keep
		{10, 2100, 1000, 5},  // well over: halve
		{1, 5000, 1000, 1},   // never below one
	}
	for _, tc := range cases {
		if got := nextChunkLimit(tc.last, tc.size, tc.target); got != tc.want {
			t.Errorf("nextChunkLimit(%d, %d, %d) = %d, want %d", tc.last, tc.size, tc.target, got, tc.want)
		}
	}
}
