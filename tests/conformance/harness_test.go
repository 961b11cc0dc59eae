package conformance

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// TestOutcomeEqual checks the comparison itself: what it must ignore
// (cluster identity in headers) and what it must catch.
func TestOutcomeEqual(t *testing.T) {
	hdr := func(rev int64, member uint64) *pb.ResponseHeader {
		return &pb.ResponseHeader{ClusterId: 7, MemberId: member, Revision: rev, RaftTerm: member}
	}
	txnWith := func(innerRev int64) *pb.TxnResponse {
		return &pb.TxnResponse{Header: hdr(5, 1), Succeeded: true, Responses: []*pb.ResponseOp{
			{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Header: hdr(innerRev, 1)}}},
		}}
	}
	ok := func(m proto.Message) outcome {
		m = proto.Clone(m)
		normalize(m)
		return outcome{resp: m}
	}
	kv := &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), CreateRevision: 2, ModRevision: 2, Version: 1}
	tests := []struct {
		name  string
		a, b  outcome
		equal bool
	}{
		{"other member and term", ok(&pb.PutResponse{Header: hdr(3, 1)}), ok(&pb.PutResponse{Header: hdr(3, 2)}), true},
		{"other revision", ok(&pb.PutResponse{Header: hdr(3, 1)}), ok(&pb.PutResponse{Header: hdr(4, 1)}), false},
		{"missing header", ok(&pb.PutResponse{Header: hdr(3, 1)}), ok(&pb.PutResponse{}), false},
		{"nested revision", ok(txnWith(5)), ok(txnWith(4)), false},
		{"nested member", ok(txnWith(5)), ok(func() proto.Message { r := txnWith(5); r.Responses[0].GetResponseRange().Header.MemberId = 9; return r }()), true},
		{"kv field", ok(&pb.RangeResponse{Header: hdr(3, 1), Kvs: []*mvccpb.KeyValue{kv}, Count: 1}),
			ok(&pb.RangeResponse{Header: hdr(3, 1), Kvs: []*mvccpb.KeyValue{{Key: kv.Key, Value: kv.Value, CreateRevision: 2, ModRevision: 2, Version: 2}}, Count: 1}), false},
		{"count", ok(&pb.RangeResponse{Header: hdr(3, 1), Count: 1}), ok(&pb.RangeResponse{Header: hdr(3, 1), Count: 2}), false},
		{"same error", outcome{code: codes.OutOfRange, msg: "x"}, outcome{code: codes.OutOfRange, msg: "x"}, true},
		{"other code", outcome{code: codes.OutOfRange, msg: "x"}, outcome{code: codes.InvalidArgument, msg: "x"}, false},
		{"other message", outcome{code: codes.OutOfRange, msg: "x"}, outcome{code: codes.OutOfRange, msg: "y"}, false},
		{"error and response", outcome{code: codes.OutOfRange, msg: "x"}, ok(&pb.PutResponse{}), false},
		{"stream tail early", outcome{resp: &pb.RangeResponse{}, chunks: 2}, outcome{resp: &pb.RangeResponse{}, chunks: 2, earlyTail: true}, false},
		{"stream chunking", outcome{resp: &pb.RangeResponse{}, chunks: 2}, outcome{resp: &pb.RangeResponse{}, chunks: 3}, true},
	}
	for _, tt := range tests {
		if got := tt.a.equal(tt.b); got != tt.equal {
			t.Errorf("%s: equal = %v, want %v\n  a: %v\n  b: %v", tt.name, got, tt.equal, tt.a, tt.b)
		}
		if got := tt.b.equal(tt.a); got != tt.equal {
			t.Errorf("%s (swapped): equal = %v, want %v", tt.name, got, tt.equal)
		}
	}
}

// TestPrefixEnd pins the range end clientv3.WithPrefix would send.
func TestPrefixEnd(t *testing.T) {
	for in, want := range map[string]string{"a": "b", "a\xff": "b", "\xff\xff": "\x00", "x\xff\xff": "y", "\x00": "\x01"} {
		if got := string(prefixEnd([]byte(in))); got != want {
			t.Errorf("prefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}
