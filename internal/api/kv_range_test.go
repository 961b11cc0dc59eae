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
