package api

import (
	"bytes"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/mvcc"
)

// The codec must send an encodedRange as exactly the bytes of the whole
// response, count them, and leave other messages to the proto codec.
func TestCodecSendsEncodedRanges(t *testing.T) {
	kvs := []*mvccpb.KeyValue{
		{Key: []byte("a"), Value: []byte("1"), CreateRevision: 2, ModRevision: 3, Version: 2, Lease: 5},
		{Key: []byte("b"), CreateRevision: 4, ModRevision: 4, Version: 1},
		{Key: []byte("c"), Value: bytes.Repeat([]byte("v"), 300), CreateRevision: 6, ModRevision: 6, Version: 1},
	}
	full := &pb.RangeResponse{
		Header: &pb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 9, RaftTerm: 3},
		Kvs:    kvs, More: true, Count: 7,
	}
	want, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	// Two chunks: the first two records, then the third.
	var enc mvcc.EncodedKVs
	var chunk []byte
	for i, kv := range kvs {
		b, err := proto.Marshal(kv)
		if err != nil {
			t.Fatal(err)
		}
		chunk = protowire.AppendTag(chunk, 2, protowire.BytesType)
		chunk = protowire.AppendBytes(chunk, b)
		if i >= 1 {
			enc.Chunks = append(enc.Chunks, chunk)
			chunk = nil
		}
	}
	enc.N = len(kvs)
	bc := newByteCounters()
	c := newCountingCodec(bc)
	out, err := c.Marshal(&encodedRange{resp: &pb.RangeResponse{Header: full.Header, More: true, Count: 7}, kvs: &enc})
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Materialize(); !bytes.Equal(got, want) {
		t.Fatalf("encoded range = %x\nwant %x", got, want)
	}
	if got := counterValue(t, bc.sent); got != float64(len(want)) {
		t.Fatalf("sent bytes counted %v, want %d", got, len(want))
	}

	out, err = c.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Materialize(); !bytes.Equal(got, want) {
		t.Fatal("a plain RangeResponse is not marshalled as proto.Marshal does")
	}
	if got := counterValue(t, bc.sent); got != float64(2*len(want)) {
		t.Fatalf("sent bytes counted %v, want %d", got, 2*len(want))
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Every shape of encoded range (no records, one chunk with room for the
// header or without, several chunks; zero and non-zero header fields,
// more and count) must come out as proto.Marshal's bytes.
func TestEncodedRangeMatchesProto(t *testing.T) {
	kvs := []*mvccpb.KeyValue{
		{Key: []byte("a"), Value: []byte("1"), CreateRevision: 2, ModRevision: 3, Version: 2, Lease: 5},
		{Key: []byte("key"), Value: bytes.Repeat([]byte("v"), 256), CreateRevision: 1 << 40, ModRevision: 1 << 40, Version: 1},
	}
	headers := []*pb.ResponseHeader{
		nil,
		{},
		{Revision: 1},
		{ClusterId: 1<<64 - 1, MemberId: 1 << 63, Revision: -1, RaftTerm: 300},
	}
	// chunking says how many records each chunk holds, and spare the
	// room left after the last record of each.
	chunkings := []struct {
		per   []int
		spare int
	}{
		{nil, 0},
		{[]int{1}, 0},
		{[]int{1}, 100},
		{[]int{2}, 100},
		{[]int{1, 1}, 100},
	}
	for _, h := range headers {
		for _, ch := range chunkings {
			for _, more := range []bool{false, true} {
				for _, count := range []int64{0, 2, -3} {
					n := 0
					for _, k := range ch.per {
						n += k
					}
					full := &pb.RangeResponse{Header: h, Kvs: kvs[:n], More: more, Count: count}
					want, err := proto.Marshal(full)
					if err != nil {
						t.Fatal(err)
					}
					var enc mvcc.EncodedKVs
					i := 0
					for _, k := range ch.per {
						var chunk []byte
						for range k {
							b, err := proto.Marshal(kvs[i])
							if err != nil {
								t.Fatal(err)
							}
							chunk = protowire.AppendTag(chunk, 2, protowire.BytesType)
							chunk = protowire.AppendBytes(chunk, b)
							i++
						}
						chunk = append(make([]byte, 0, len(chunk)+ch.spare), chunk...)
						enc.Chunks = append(enc.Chunks, chunk)
					}
					enc.N = n
					e := &encodedRange{resp: &pb.RangeResponse{Header: h, More: more, Count: count}, kvs: &enc}
					out, err := e.marshal()
					if err != nil {
						t.Fatal(err)
					}
					if got := out.Materialize(); !bytes.Equal(got, want) {
						t.Errorf("header %v, chunks %v (+%d), more %v, count %d:\n got %x\nwant %x", h, ch.per, ch.spare, more, count, got, want)
					}
				}
			}
		}
	}
}
