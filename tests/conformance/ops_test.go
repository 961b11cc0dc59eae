package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
)

// opTimeout bounds one request; a server that hangs fails the op instead
// of the whole test binary.
const opTimeout = 20 * time.Second

// op is one request of a sequence. Exactly one field is set.
type op struct {
	Range   *pb.RangeRequest
	Stream  *pb.RangeRequest // sent through RangeStream
	Put     *pb.PutRequest
	Delete  *pb.DeleteRangeRequest
	Txn     *pb.TxnRequest
	Compact *pb.CompactionRequest
	// Restart restarts both servers on their data directories; its
	// outcome is a read of every key afterwards.
	Restart bool
}

// kind names the RPC the op is sent through.
func (o op) kind() string {
	switch {
	case o.Range != nil:
		return "Range"
	case o.Stream != nil:
		return "RangeStream"
	case o.Put != nil:
		return "Put"
	case o.Delete != nil:
		return "DeleteRange"
	case o.Txn != nil:
		return "Txn"
	case o.Compact != nil:
		return "Compact"
	case o.Restart:
		return "Restart"
	}
	return "empty"
}

// readOnly reports whether o cannot change the store.
func (o op) readOnly() bool { return o.Range != nil || o.Stream != nil }

func (o op) request() proto.Message {
	switch {
	case o.Range != nil:
		return o.Range
	case o.Stream != nil:
		return o.Stream
	case o.Put != nil:
		return o.Put
	case o.Delete != nil:
		return o.Delete
	case o.Txn != nil:
		return o.Txn
	case o.Compact != nil:
		return o.Compact
	}
	return nil
}

// String renders the op on one line, bytes escaped, huge requests cut.
func (o op) String() string {
	if o.Restart {
		return "Restart (then a Range of every key)"
	}
	return o.kind() + " " + brief(o.request())
}

// brief renders m on one line, long byte strings shortened to their
// first bytes and length, and the whole cut after a few kilobytes, so that
// a 1.5 MiB value does not flood the log.
func brief(m proto.Message) string {
	if m == nil || !m.ProtoReflect().IsValid() {
		return "<nil>"
	}
	m = proto.Clone(m)
	shortenBytes(m.ProtoReflect())
	s := prototext.MarshalOptions{}.Format(m)
	const max = 2000
	if len(s) > max {
		s = fmt.Sprintf("%s ...[%d more bytes]", s[:max], len(s)-max)
	}
	return "{" + strings.TrimSpace(s) + "}"
}

// shortenBytes replaces every bytes field longer than 48 bytes in m, nested
// messages included, by its first 16 bytes and a note of its length.
func shortenBytes(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				shortenBytes(l.Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			shortenBytes(v.Message())
		case fd.Kind() == protoreflect.BytesKind && !fd.IsList() && len(v.Bytes()) > 48:
			b := v.Bytes()
			short := fmt.Appendf(append([]byte(nil), b[:16]...), "...(%d bytes)", len(b))
			m.Set(fd, protoreflect.ValueOfBytes(short))
		}
		return true
	})
}

// outcome is what a server answered to one op, normalized for comparison.
type outcome struct {
	// resp is the normalized response when the op succeeded.
	resp proto.Message
	// code and msg are the gRPC status when it failed.
	code codes.Code
	msg  string
	// chunks counts a RangeStream's messages; it is reported, not compared.
	chunks int
	// earlyTail is set when a RangeStream chunk before the last carried a
	// header, more or count.
	earlyTail bool
}

func (o outcome) failed() bool { return o.resp == nil }

func (o outcome) String() string {
	if o.failed() {
		return fmt.Sprintf("error code=%s desc=%q", o.code, o.msg)
	}
	s := brief(o.resp)
	if o.chunks > 0 {
		s += fmt.Sprintf(" (%d chunks", o.chunks)
		if o.earlyTail {
			s += ", header/more/count on a chunk before the last"
		}
		s += ")"
	}
	return s
}

// equal reports whether two outcomes are the same to a client.
func (o outcome) equal(p outcome) bool {
	if o.failed() || p.failed() {
		return o.failed() && p.failed() && o.code == p.code && o.msg == p.msg
	}
	return o.earlyTail == p.earlyTail && proto.Equal(o.resp, p.resp)
}

// describe renders a mismatch: both outcomes and, when both are
// responses, a field-level diff in which equal fields are elided.
func describe(o op, oracle, subject *side, want, got outcome) string {
	s := fmt.Sprintf("  request: %v\n  %s: %v\n  %s: %v", o, oracle.name, want, subject.name, got)
	if !want.failed() && !got.failed() {
		// Diff shortened copies: equal megabyte values cost time to
		// compare and say nothing.
		a, b := proto.Clone(want.resp), proto.Clone(got.resp)
		shortenBytes(a.ProtoReflect())
		shortenBytes(b.ProtoReflect())
		d := cmp.Diff(a, b, protocmp.Transform())
		if len(d) > 4000 {
			d = d[:4000] + "\n...(diff cut)"
		}
		s += fmt.Sprintf("\n  diff (-%s +%s):\n%s", oracle.name, subject.name, d)
		if want.earlyTail != got.earlyTail {
			s += "\n  (the two differ in whether a chunk before the last carried the header, more or count)"
		}
	}
	return s
}

// revision is the header revision of a successful outcome, or 0.
func (o outcome) revision() int64 {
	type headered interface{ GetHeader() *pb.ResponseHeader }
	if h, ok := o.resp.(headered); ok {
		return h.GetHeader().GetRevision()
	}
	return 0
}

// do sends o to kv and returns the normalized outcome.
func do(kv pb.KVClient, o op) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var resp proto.Message
	var err error
	switch {
	case o.Range != nil:
		resp, err = kv.Range(ctx, o.Range)
	case o.Stream != nil:
		return doStream(ctx, kv, o.Stream)
	case o.Put != nil:
		resp, err = kv.Put(ctx, o.Put)
	case o.Delete != nil:
		resp, err = kv.DeleteRange(ctx, o.Delete)
	case o.Txn != nil:
		resp, err = kv.Txn(ctx, o.Txn)
	case o.Compact != nil:
		resp, err = kv.Compact(ctx, o.Compact)
	default:
		panic("empty op")
	}
	if err != nil {
		return failure(err)
	}
	normalize(resp)
	return outcome{resp: resp}
}

// doStream runs a RangeStream and assembles the chunks the way clientv3's
// GetStreamToGetResponse does: kvs appended, scalars from the chunks that
// set them.
func doStream(ctx context.Context, kv pb.KVClient, req *pb.RangeRequest) outcome {
	stream, err := kv.RangeStream(ctx, req)
	if err != nil {
		return failure(err)
	}
	merged := &pb.RangeResponse{}
	var out outcome
	var prevHadTail bool
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// A stream that fails after some chunks fails as a whole
			// to a client; the partial kvs are not compared.
			return failure(err)
		}
		out.chunks++
		if prevHadTail {
			out.earlyTail = true
		}
		rr := chunk.GetRangeResponse()
		prevHadTail = rr.GetHeader() != nil || rr.GetMore() || rr.GetCount() != 0
		if rr != nil {
			proto.Merge(merged, rr)
		}
	}
	normalize(merged)
	out.resp = merged
	return out
}

func failure(err error) outcome {
	st, ok := status.FromError(err)
	if !ok {
		return outcome{code: codes.Unknown, msg: "not a gRPC status: " + err.Error()}
	}
	return outcome{code: st.Code(), msg: st.Message()}
}

// normalize cuts every ResponseHeader in resp, nested txn responses
// included, down to its revision.
func normalize(resp proto.Message) {
	if resp == nil || !resp.ProtoReflect().IsValid() {
		return
	}
	switch r := resp.(type) {
	case *pb.RangeResponse:
		r.Header = revOnly(r.Header)
	case *pb.PutResponse:
		r.Header = revOnly(r.Header)
	case *pb.DeleteRangeResponse:
		r.Header = revOnly(r.Header)
	case *pb.CompactionResponse:
		r.Header = revOnly(r.Header)
	case *pb.TxnResponse:
		r.Header = revOnly(r.Header)
		for _, ro := range r.Responses {
			switch v := ro.GetResponse().(type) {
			case *pb.ResponseOp_ResponseRange:
				normalize(v.ResponseRange)
			case *pb.ResponseOp_ResponsePut:
				normalize(v.ResponsePut)
			case *pb.ResponseOp_ResponseDeleteRange:
				normalize(v.ResponseDeleteRange)
			case *pb.ResponseOp_ResponseTxn:
				normalize(v.ResponseTxn)
			}
		}
	}
}

func revOnly(h *pb.ResponseHeader) *pb.ResponseHeader {
	if h == nil {
		return nil
	}
	return &pb.ResponseHeader{Revision: h.Revision}
}
