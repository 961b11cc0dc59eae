package api

import (
	"context"
	"encoding/binary"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cairn-db/cairn/internal/mvcc"
)

// A large unary Range is answered without ever holding its KeyValues as Go
// objects: the backend writes them in wire form straight from the
// iterator (mvcc.EncodedKVs), the Range handler returns them inside an
// encodedRange instead of a *pb.RangeResponse, and the codec hands the
// chunks to gRPC as they are, between the response's header and its more
// and count fields. The client receives the very bytes proto.Marshal makes
// of the full response. A range over 1 M keys so peaks at about the
// response's size, where KeyValues plus their marshalled copy took six
// times that.
//
// The gRPC gateway and RangeStream still call kvService.Range and get a
// *pb.RangeResponse.

// The chunks come from gRPC's buffer pool and go back to it once gRPC has
// written them (it frees what the codec returns after the write): a range
// after another reuses the first one's memory instead of waiting for the
// garbage collector, which lets the heap grow to twice what is live before
// it runs.
var chunkPool = mem.DefaultBufferPool()

func allocChunk(n int) []byte { return *chunkPool.Get(n) }

// encodedRange is a RangeResponse whose KeyValues are already encoded:
// resp holds the header, more and count, and kvs the records of field 2.
type encodedRange struct {
	resp *pb.RangeResponse
	kvs  *mvcc.EncodedKVs
}

// marshal returns the response's wire form as buffers in field order,
// sharing the chunks of kvs. The header, more and count are encoded here
// as proto.Marshal encodes them (the header is the member's own, with no
// unknown fields), without its allocations; when the records fit in one chunk with
// room to spare (a range of a few keys), the header is moved in front of
// them and the whole response is that one buffer.
func (e *encodedRange) marshal() (mem.BufferSlice, error) {
	var headBuf [2 + 4*(1+binary.MaxVarintLen64)]byte
	var tailBuf [2 + 1 + binary.MaxVarintLen64]byte
	head := appendRangeHead(headBuf[:0], e.resp.Header)
	tail := appendRangeTail(tailBuf[:0], e.resp.More, e.resp.Count)
	if len(e.kvs.Chunks) == 1 {
		if c := e.kvs.Chunks[0]; cap(c)-len(c) >= len(head)+len(tail) {
			n := len(c)
			c = c[:len(head)+n]
			copy(c[len(head):], c[:n])
			copy(c, head)
			c = append(c, tail...)
			return mem.BufferSlice{mem.NewBuffer(&c, chunkPool)}, nil
		}
	}
	out := make(mem.BufferSlice, 0, len(e.kvs.Chunks)+2)
	ends := append(append(make([]byte, 0, len(head)+len(tail)), head...), tail...)
	if len(head) > 0 {
		out = append(out, mem.SliceBuffer(ends[:len(head):len(head)]))
	}
	for _, c := range e.kvs.Chunks {
		out = append(out, mem.NewBuffer(&c, chunkPool))
	}
	if len(tail) > 0 {
		out = append(out, mem.SliceBuffer(ends[len(head):]))
	}
	return out, nil
}

// appendRangeHead appends the wire form of a RangeResponse's field 1 (the
// header) as proto.Marshal writes it: nothing for a nil header, and the
// fields that are not zero in number order.
func appendRangeHead(b []byte, h *pb.ResponseHeader) []byte {
	if h == nil {
		return b
	}
	fields := [...]uint64{h.ClusterId, h.MemberId, uint64(h.Revision), h.RaftTerm}
	size := 0
	for _, v := range fields {
		if v != 0 {
			size += 1 + protowire.SizeVarint(v)
		}
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	for i, v := range fields {
		if v != 0 {
			b = protowire.AppendTag(b, protowire.Number(i+1), protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	return b
}

// appendRangeTail appends the wire form of a RangeResponse's fields 3
// (more) and 4 (count), as proto.Marshal writes them.
func appendRangeTail(b []byte, more bool, count int64) []byte {
	if more {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if count != 0 {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(count))
	}
	return b
}

// preEncodedCodec is a codec that sends an encodedRange as the bytes it
// already holds and leaves every other message to the codec it wraps.
type preEncodedCodec struct {
	encoding.CodecV2
}

// Marshal implements encoding.CodecV2.
func (c preEncodedCodec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*encodedRange); ok {
		return e.marshal()
	}
	return c.CodecV2.Marshal(v)
}

// rangeEncoded is kvService.Range answering encoded when the backend does.
func (s *kvService) rangeEncoded(ctx context.Context, r *pb.RangeRequest) (any, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	resp, kvs, err := s.b.RangeEncoded(ctx, r, allocChunk)
	if err != nil {
		return nil, toGRPCError(err)
	}
	if kvs == nil {
		return resp, nil
	}
	return &encodedRange{resp: resp, kvs: kvs}, nil
}

// registerKV registers etcd's KV service on gs with s, its Range method
// answering through rangeEncoded; the other methods are the generated
// handlers.
func registerKV(gs *grpc.Server, s *kvService) {
	s.rangeInfo = grpc.UnaryServerInfo{Server: s, FullMethod: pb.KV_Range_FullMethodName}
	s.rangeHandler = func(ctx context.Context, req any) (any, error) {
		return s.rangeEncoded(ctx, req.(*pb.RangeRequest))
	}
	desc := pb.KV_ServiceDesc
	desc.Methods = append([]grpc.MethodDesc(nil), desc.Methods...)
	for i := range desc.Methods {
		if desc.Methods[i].MethodName == "Range" {
			desc.Methods[i].Handler = kvRangeHandler
		}
	}
	gs.RegisterService(&desc, s)
}

// kvRangeHandler is the generated Range handler calling rangeEncoded: the
// interceptors see the request as always, and a response that is either a
// *pb.RangeResponse or an *encodedRange.
func kvRangeHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(pb.RangeRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(*kvService)
	if interceptor == nil {
		return s.rangeEncoded(ctx, in)
	}
	return interceptor(ctx, in, &s.rangeInfo, s.rangeHandler)
}
