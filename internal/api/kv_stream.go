package api

import (
	"bytes"
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// firstStreamChunk is the number of keys RangeStream asks for in its first
// page; later pages grow or shrink to land near the target chunk size.
const firstStreamChunk = 10

// RangeStream serves a range as a stream of chunks, with etcd 3.7's
// semantics:
//
//   - The whole stream reads one revision. The first page is read as the
//     request asks (linearizable unless serializable); its header revision
//     pins the rest, unless the request named a revision itself.
//   - Each chunk carries only key-values. The last chunk also carries the
//     header (that of the first page: the store's revision when the stream
//     started), more and count, so merging all chunks gives the
//     RangeResponse a Range would have given.
//   - Chunks aim at the request size limit: after each page the next page's
//     key limit doubles while pages come out under half the target and
//     halves while they come out over twice of it.
//
// It pages through the backend's RangePage at the pinned revision (which,
// unlike Range, does not count the rest of the range on every page: that
// would make streaming n keys cost O(n²/chunk) key visits instead of O(n)),
// starting each page just after the last key of the previous one, so at most
// one page of a range is held in memory however large the range is. Pages
// after the first are read serializably: the first read already established
// that the pinned revision is committed and applied on this member.
func (s *kvService) RangeStream(r *pb.RangeRequest, stream grpc.ServerStreamingServer[pb.RangeStreamResponse]) error {
	if err := checkRangeStream(r); err != nil {
		return err
	}
	ctx := stream.Context()
	req := proto.Clone(r).(*pb.RangeRequest)

	if req.CountOnly {
		resp, err := s.b.Range(ctx, req)
		if err != nil {
			return toGRPCError(err)
		}
		out := &pb.RangeResponse{Header: resp.Header, Count: resp.Count}
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: out})
	}

	// A negative limit asks etcd's stream for the whole range in one Range.
	// Paging gives the same result in key order; but sort_order NONE with
	// a target other than KEY sorts ascending by that target (the only
	// custom order checkRangeStream lets through), and then etcd sorts the
	// whole range, not page by page: so does this, in one chunk.
	if req.Limit < 0 && req.SortTarget != pb.RangeRequest_KEY {
		resp, err := s.b.Range(ctx, req)
		if err != nil {
			return toGRPCError(err)
		}
		out := &pb.RangeResponse{Header: resp.Header, Kvs: resp.Kvs, More: resp.More, Count: resp.Count}
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: out})
	}

	// A limit of zero means no limit. So does any other negative one to
	// Range, which would then return everything in one response; here it
	// is paged too.
	total := req.Limit
	if total <= 0 {
		total = math.MaxInt64
	}
	req.Limit = min(firstStreamChunk, total)

	var (
		header *pb.ResponseHeader
		count  int64
	)
	for {
		resp, err := s.b.RangePage(ctx, req)
		if err != nil {
			return toGRPCError(err)
		}
		if header == nil {
			// The header reports the store's revision when the stream
			// started, as Range's does, even when the request reads an
			// older one. A request for the current revision (0, or
			// negative, which Range reads the same way) is pinned to it.
			header = &pb.ResponseHeader{}
			if resp.Header != nil {
				header = proto.Clone(resp.Header).(*pb.ResponseHeader)
			}
			if req.Revision <= 0 {
				req.Revision = header.Revision
			}
			req.Serializable = true
		}
		count += int64(len(resp.Kvs))

		// A page that says "more" but holds nothing could not be continued
		// from; it cannot happen with a positive limit, and is treated as
		// the end rather than looped on.
		more := resp.More && len(resp.Kvs) > 0
		var next []byte
		if more {
			last := resp.Kvs[len(resp.Kvs)-1].Key
			next = append(bytes.Clone(last), 0)
		}
		out := &pb.RangeResponse{Kvs: resp.Kvs}
		done := !more || count >= total
		if done {
			out.Header = header
			out.More = more
			out.Count = count
			if more {
				rest, err := s.b.Range(ctx, &pb.RangeRequest{
					Key:          next,
					RangeEnd:     req.RangeEnd,
					Revision:     req.Revision,
					CountOnly:    true,
					Serializable: true,
				})
				if err != nil {
					return toGRPCError(err)
				}
				out.Count += rest.Count
			}
		}
		if err := stream.Send(&pb.RangeStreamResponse{RangeResponse: out}); err != nil {
			return err
		}
		if done {
			return nil
		}
		req.Key = next
		req.Limit = min(nextChunkLimit(req.Limit, proto.Size(resp), s.streamChunkBytes), total-count)
	}
}

// nextChunkLimit picks the key limit of the next page from the last one and
// the size it came out at, so that pages settle near target bytes. It only
// moves when the last page was off by more than a factor of two, so sizes
// that hover around the target do not make it flap, and it never returns
// less than 1 (a limit of 0 would mean "everything").
func nextChunkLimit(last int64, lastBytes, target int) int64 {
	switch {
	case lastBytes < target/2:
		last *= 2
	case lastBytes > target*2:
		last /= 2
	}
	return max(last, 1)
}
