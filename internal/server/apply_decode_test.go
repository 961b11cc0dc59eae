package server

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// checkDecode decodes data with an entryDecoder (twice, the second time
// after another request, as the apply loop reuses it) and with
// proto.Unmarshal, and fails unless both give the same request or both
// fail.
func checkDecode(t *testing.T, data []byte) {
	t.Helper()
	want := &pb.InternalRaftRequest{}
	wantErr := proto.Unmarshal(data, want)
	var d entryDecoder
	for round := range 2 {
		got, err := d.decode(data)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("round %d: decode error %v, proto.Unmarshal's %v (data %x)", round, err, wantErr, data)
		}
		if err == nil {
			if !proto.Equal(got, want) {
				t.Fatalf("round %d: decoded %v, proto.Unmarshal %v (data %x)", round, got, want, data)
			}
			if p, wp := got.GetPut(), want.GetPut(); p != nil && ((p.Key == nil) != (wp.Key == nil) || (p.Value == nil) != (wp.Value == nil)) {
				t.Fatalf("round %d: nil key or value differs: %q/%q, proto.Unmarshal %q/%q", round, p.Key, p.Value, wp.Key, wp.Value)
			}
		}
		other, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 99, Username: "u"}, Put: &pb.PutRequest{Key: []byte("other"), Value: []byte("v"), Lease: 5, PrevKv: true, IgnoreValue: true, IgnoreLease: true}})
		if _, err := d.decode(other); err != nil {
			t.Fatal(err)
		}
	}
}

func marshal(t testing.TB, m proto.Message) []byte {
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestEntryDecoderMatchesUnmarshal(t *testing.T) {
	put := &pb.PutRequest{Key: []byte("key"), Value: bytes.Repeat([]byte{7}, 256), Lease: 42, PrevKv: true}
	hdr := &pb.RequestHeader{ID: 1<<63 + 5, Username: "root", AuthRevision: 9}
	plain := marshal(t, &pb.InternalRaftRequest{Header: hdr, Put: put})
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	field := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(tag(num, protowire.BytesType), v)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(num, protowire.VarintType), v)
	}
	hdrBytes := marshal(t, hdr)
	putBytes := marshal(t, put)
	cases := map[string][]byte{
		"put":                 plain,
		"put, every field":    marshal(t, &pb.InternalRaftRequest{Header: hdr, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: -1, PrevKv: true, IgnoreValue: true, IgnoreLease: true}}),
		"empty value":         marshal(t, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1}, Put: &pb.PutRequest{Key: []byte("k")}}),
		"empty put":           marshal(t, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1}, Put: &pb.PutRequest{}}),
		"empty header":        marshal(t, &pb.InternalRaftRequest{Header: &pb.RequestHeader{}, Put: put}),
		"no header":           marshal(t, &pb.InternalRaftRequest{Put: put}),
		"no put":              marshal(t, &pb.InternalRaftRequest{Header: hdr}),
		"delete range":        marshal(t, &pb.InternalRaftRequest{Header: hdr, DeleteRange: &pb.DeleteRangeRequest{Key: []byte("a")}}),
		"txn":                 marshal(t, &pb.InternalRaftRequest{Header: hdr, Txn: &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: put}}}}}),
		"put and delete":      marshal(t, &pb.InternalRaftRequest{Header: hdr, Put: put, DeleteRange: &pb.DeleteRangeRequest{Key: []byte("a")}}),
		"explicit empty key":  cat(field(100, hdrBytes), field(4, cat(field(1, nil), field(2, []byte("v"))))),
		"explicit zeros":      cat(field(100, cat(varint(1, 0), field(2, nil))), field(4, cat(varint(3, 0), varint(4, 0)))),
		"put first":           cat(field(4, putBytes), field(100, hdrBytes)),
		"header twice":        cat(field(100, hdrBytes), field(100, marshal(t, &pb.RequestHeader{Username: "x"})), field(4, putBytes)),
		"put twice":           cat(field(100, hdrBytes), field(4, putBytes), field(4, marshal(t, &pb.PutRequest{Value: []byte("x")}))),
		"key twice":           cat(field(100, hdrBytes), field(4, cat(field(1, []byte("a")), field(1, []byte("b"))))),
		"id twice":            cat(field(100, cat(varint(1, 1), varint(1, 2))), field(4, putBytes)),
		"bool not 0 or 1":     cat(field(100, hdrBytes), field(4, cat(field(1, []byte("a")), varint(4, 300), varint(6, 1<<40)))),
		"unknown put field":   cat(field(100, hdrBytes), field(4, cat(putBytes, varint(9, 1)))),
		"unknown hdr field":   cat(field(100, cat(hdrBytes, field(7, []byte("z")))), field(4, putBytes)),
		"unknown top field":   cat(plain, varint(200, 1)),
		"top-level ID":        cat(varint(1, 5), plain),
		"key as varint":       cat(field(100, hdrBytes), field(4, varint(1, 3))),
		"lease as bytes":      cat(field(100, hdrBytes), field(4, field(3, []byte("x")))),
		"id as bytes":         cat(field(100, field(1, []byte("x"))), field(4, putBytes)),
		"put as varint":       cat(field(100, hdrBytes), varint(4, 1)),
		"packed lease":        cat(field(100, hdrBytes), field(4, cat(tag(3, protowire.Fixed64Type), make([]byte, 8)))),
		"invalid utf-8 user":  cat(field(100, field(2, []byte{0xff, 0xfe})), field(4, putBytes)),
		"truncated":           plain[:len(plain)-3],
		"truncated varint":    cat(field(100, hdrBytes), field(4, []byte{3 << 3, 0x80})),
		"overlong varint":     cat(field(100, cat(tag(1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 11))), field(4, putBytes)),
		"field number zero":   cat([]byte{0x02, 0x00}, plain),
		"bad length":          cat(tag(4, protowire.BytesType), []byte{0x7f, 1}),
		"empty":               nil,
		"negative lease":      marshal(t, &pb.InternalRaftRequest{Header: hdr, Put: &pb.PutRequest{Key: []byte("k"), Lease: -7}}),
		"max auth revision":   marshal(t, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: ^uint64(0), AuthRevision: ^uint64(0)}, Put: put}),
		"lease grant":         marshal(t, &pb.InternalRaftRequest{Header: hdr, LeaseGrant: &pb.LeaseGrantRequest{TTL: 5, ID: 7}}),
		"compaction":          marshal(t, &pb.InternalRaftRequest{Header: hdr, Compaction: &pb.CompactionRequest{Revision: 3}}),
		"authenticate":        marshal(t, &pb.InternalRaftRequest{Header: hdr, Authenticate: &pb.InternalAuthenticateRequest{Name: "a"}}),
		"header, put, header": cat(field(100, hdrBytes), field(4, putBytes), field(100, hdrBytes)),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) { checkDecode(t, data) })
	}
}

// TestEntryDecoderAliasesCapped checks that a decoded key and value alias
// the entry without letting an append reach the bytes after them.
func TestEntryDecoderAliasesCapped(t *testing.T) {
	data := marshal(t, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 3}})
	before := bytes.Clone(data)
	var d entryDecoder
	req, err := d.decode(data)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(req.Put.Key, 'x')
	_ = append(req.Put.Value, 'x')
	if !bytes.Equal(data, before) {
		t.Fatalf("an append to the key or value changed the entry: %x, was %x", data, before)
	}
}

func FuzzEntryDecoder(f *testing.F) {
	f.Add(marshal(f, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1, Username: "u", AuthRevision: 2}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 3, PrevKv: true}}))
	f.Add(marshal(f, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1}, DeleteRange: &pb.DeleteRangeRequest{Key: []byte("a")}}))
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data) })
}

// BenchmarkDecodeEntry is the decoding of a put's entry in the apply loop:
// proto.Unmarshal into a reused request, against the entryDecoder.
func BenchmarkDecodeEntry(b *testing.B) {
	data := marshal(b, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1 << 60}, Put: &pb.PutRequest{Key: []byte("00012345"), Value: bytes.Repeat([]byte{1}, 256)}})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		var req pb.InternalRaftRequest
		for b.Loop() {
			if err := proto.Unmarshal(data, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoder", func(b *testing.B) {
		b.ReportAllocs()
		var d entryDecoder
		for b.Loop() {
			if _, err := d.decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
