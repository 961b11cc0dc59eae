package server

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/raftnode"
)

// TestTooManyRequestsWhenApplyLags holds the apply loop while more than
// 5000 entries commit: new requests are refused with etcd's "too many
// requests" until applying catches up.
func TestTooManyRequestsWhenApplyLags(t *testing.T) {
	gate := make(chan struct{})
	var hold atomic.Bool
	s := startServerWith(t, t.TempDir(), testingKnobs{
		beforeApply: func() {
			if hold.Load() {
				<-gate
			}
		},
	}, nil)
	put(t, s, "k", "before")
	hold.Store(true)
	data, err := proto.Marshal(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	for range maxApplyLag + 100 {
		s.node.Propose(raftnode.Proposal{Data: data})
	}
	waitUntil(t, "commit to run more than 5000 entries ahead of apply", func() bool {
		return s.node.CommitIndex()-s.applied.Load() > maxApplyLag
	})
	_, err = s.Put(context.Background(), &pb.PutRequest{Key: []byte("k"), Value: []byte("refused")})
	if !errors.Is(err, ErrTooManyRequests) || err.Error() != "etcdserver: too many requests" {
		t.Fatalf("put while apply lags: %v, want ErrTooManyRequests", err)
	}
	if _, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k"), Serializable: true}); err != nil {
		t.Fatalf("a serializable read is not a proposal: %v", err)
	}
	hold.Store(false)
	close(gate)
	waitUntil(t, "apply to catch up", func() bool { return s.applied.Load() == s.node.CommitIndex() })
	if r := put(t, s, "k", "after"); r.Header.Revision != int64(maxApplyLag+100+3) {
		t.Fatalf("put after catching up at revision %d", r.Header.Revision)
	}
}

// TestReadOnlyTxnSkipsTheLog serves read-only txns from the store after a
// read-index round, as etcd does: they answer while proposals are lost.
func TestReadOnlyTxnSkipsTheLog(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	put(t, s, "a", "1")
	s.knobs.skipPropose = true // every proposal from here on is lost
	txn := &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_Value{Value: []byte("1")}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a")}}}},
	}
	for _, serializable := range []bool{false, true} {
		txn.Success[0].GetRequestRange().Serializable = serializable
		r, err := s.Txn(context.Background(), txn)
		if err != nil || !r.Succeeded || r.Header.Revision != 2 || r.Header.MemberId != s.MemberID() ||
			string(r.Responses[0].GetResponseRange().Kvs[0].Value) != "1" {
			t.Fatalf("read-only txn (serializable %v) = %v, %v", serializable, r, err)
		}
	}
}
