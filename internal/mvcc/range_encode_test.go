package mvcc

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// assembleEncoded is what the API's codec sends for an encoded range: the
// response's header, the KeyValue records, then more and count.
func assembleEncoded(t *testing.T, resp *pb.RangeResponse, kvs *EncodedKVs) []byte {
	t.Helper()
	head, err := proto.Marshal(&pb.RangeResponse{Header: resp.Header})
	if err != nil {
		t.Fatal(err)
	}
	tail, err := proto.Marshal(&pb.RangeResponse{More: resp.More, Count: resp.Count})
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(nil), head...)
	for _, c := range kvs.Chunks {
		if len(c) == 0 {
			t.Fatal("empty chunk")
		}
		out = append(out, c...)
	}
	return append(out, tail...)
}

// RangeEncoded's bytes must be exactly proto.Marshal of Range's answer,
// for every request it encodes, and it must leave the others to Range.
func TestRangeEncodedMatchesRange(t *testing.T) {
	ts := newTestStore(t)
	big := strings.Repeat("v", 3*maxEncodedChunk/2)
	ts.mustPut("a", "1")
	ts.mustPut("b", "", func(r *pb.PutRequest) { r.Lease = 7 })
	ts.mustPut("b", "2", func(r *pb.PutRequest) { r.Lease = 7 })
	ts.mustPut("c\x00d", "3")
	ts.mustPut("d", big)
	ts.mustPut("e", "gone")
	ts.del("e", "", false)
	for i := range 2000 {
		ts.mustPut(fmt.Sprintf("k%04d", i), strings.Repeat("x", i%300))
	}
	ts.mustPut("z", "last")
	cur := ts.get("a", 0).Header.Revision

	reqs := []*pb.RangeRequest{
		{Key: []byte("a")},
		{Key: []byte("b")},
		{Key: []byte("e")},
		{Key: []byte("nope")},
		{Key: []byte("d")},
		{Key: []byte("a"), RangeEnd: []byte("e")},
		{Key: []byte{0}, RangeEnd: []byte{0}},
		{Key: []byte("k"), RangeEnd: []byte("l")},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 2000},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 1999},
		{Key: []byte("a"), RangeEnd: []byte{0}, KeysOnly: true},
		{Key: []byte("b"), KeysOnly: true},
		{Key: []byte("a"), RangeEnd: []byte{0}, Revision: 5},
		{Key: []byte("a"), RangeEnd: []byte{0}, Revision: cur - 1, Limit: 3},
		{Key: []byte("a"), RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_KEY, SortOrder: pb.RangeRequest_ASCEND, Limit: 4},
		{Key: []byte("x"), RangeEnd: []byte("y")},
		// Not encodable: left to Range.
		{Key: []byte("a"), RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_MOD, Limit: 2},
		{Key: []byte("a"), RangeEnd: []byte{0}, SortOrder: pb.RangeRequest_DESCEND},
		{Key: []byte("a"), RangeEnd: []byte{0}, MinModRevision: 4},
		{Key: []byte("a"), RangeEnd: []byte{0}, CountOnly: true},
	}
	// Chunks come from alloc when given, used from their start whatever
	// their length.
	allocs := 0
	alloc := func(n int) []byte {
		if allocs++; allocs%2 == 0 {
			return make([]byte, n)
		}
		return make([]byte, 3, n+5)
	}
	for _, r := range reqs {
		t.Run(r.String(), func(t *testing.T) {
			want, err := ts.Range(r)
			if err != nil {
				t.Fatal(err)
			}
			wantBytes, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			resp, kvs, err := ts.RangeEncoded(r, alloc)
			if err != nil {
				t.Fatal(err)
			}
			if kvs == nil {
				if encodable(r) {
					t.Fatal("an encodable request was not encoded")
				}
				if !proto.Equal(resp, want) {
					t.Fatalf("RangeEncoded = %v, Range = %v", resp, want)
				}
				return
			}
			if !encodable(r) {
				t.Fatal("a request that needs sorting or filtering was encoded")
			}
			if len(resp.Kvs) != 0 || kvs.N != len(want.Kvs) {
				t.Fatalf("response has %d kvs and %d encoded; Range has %d", len(resp.Kvs), kvs.N, len(want.Kvs))
			}
			got := assembleEncoded(t, resp, kvs)
			if !bytes.Equal(got, wantBytes) {
				var dec pb.RangeResponse
				derr := proto.Unmarshal(got, &dec)
				t.Fatalf("encoded answer differs from Range's marshalled one (%d vs %d bytes; decodes as %v, err %v)", len(got), len(wantBytes), len(dec.Kvs), derr)
			}
			if kvs.Len() != len(got)-len(mustMarshal(t, &pb.RangeResponse{Header: resp.Header, More: resp.More, Count: resp.Count})) {
				t.Fatalf("Len %d does not add up", kvs.Len())
			}
		})
	}
	for _, r := range []*pb.RangeRequest{
		{Key: []byte("a"), Revision: cur + 1},
	} {
		if _, _, err := ts.RangeEncoded(r, alloc); err != ErrFutureRev {
			t.Fatalf("RangeEncoded(%v) = %v, want ErrFutureRev", r, err)
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
