package api

import (
	"context"
	"errors"
	"io"
	"log/slog"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/watch"
)

// WatchOptions configure the Watch service. Zero fields take etcd's
// defaults.
type WatchOptions struct {
	// MaxRequestBytes is the member's --max-request-bytes. A response to a
	// watcher created with fragment=true is split once it reaches this
	// plus gRPC's 512 KiB overhead allowance, as etcd does.
	MaxRequestBytes uint
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
}

// RegisterWatch registers etcd's Watch service on gs, serving every
// stream from b's watch hub, with response headers from b. The
// interceptors gs was built with apply to it (NewGRPCServer's refuse a
// stream that requires a leader when there is none). It panics if b has
// no hub.
func RegisterWatch(gs *grpc.Server, b Backend, o WatchOptions) {
	hub := b.WatchHub()
	if hub == nil {
		panic("api: RegisterWatch: the backend has no watch hub")
	}
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	pb.RegisterWatchServer(gs, &watchService{
		hub:       hub,
		b:         b,
		fragLimit: int(o.MaxRequestBytes) + grpcOverheadBytes,
		log:       o.Logger,
	})
}

type watchService struct {
	pb.UnimplementedWatchServer
	hub       *watch.Hub
	b         Backend // fills the headers
	fragLimit int     // response size from which fragmentation splits
	log       *slog.Logger
}

// Watch serves one stream: a goroutine reads the client's requests and
// applies them to a watch.Stream, while this one sends the stream's
// responses in order. The stream ends when the client cancels it or
// breaks it (etcd's "watch canceled" for a cancellation), when a send
// fails, or when the hub stops; a client that only closes its send side
// keeps receiving, as in etcd.
//
// The reading goroutine may outlive Watch briefly: gRPC ends its Recv only
// once Watch has returned, and it then finds the stream closed and exits.
func (ws *watchService) Watch(stream pb.Watch_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	s := ws.hub.NewStream()
	defer s.Close()

	recvErr := make(chan error, 1)
	go func() {
		if err := ws.recvLoop(ctx, stream, s); err != nil {
			recvErr <- err
			cancel()
		}
	}()

	err := ws.sendLoop(ctx, stream, s)
	select {
	case rerr := <-recvErr:
		err = rerr
	default:
	}
	if cerr := stream.Context().Err(); cerr != nil {
		err = cerr
	}
	switch {
	case errors.Is(err, context.Canceled):
		return rpctypes.ErrGRPCWatchCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, watch.ErrHubClosed):
		return rpctypes.ErrGRPCStopped
	case errors.Is(err, watch.ErrStreamClosed):
		return rpctypes.ErrGRPCWatchCanceled
	}
	if _, ok := status.FromError(err); !ok {
		// A storage failure while catching up: Internal, which clientv3
		// retries, resuming the watches on a new stream.
		ws.log.Warn("watch stream failed", "error", err)
		return status.Error(codes.Internal, err.Error())
	}
	return err
}

// recvLoop applies the client's requests until it closes its side (nil:
// the stream goes on) or fails.
func (ws *watchService) recvLoop(ctx context.Context, stream pb.Watch_WatchServer, s *watch.Stream) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch u := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if u.CreateRequest == nil {
				continue
			}
			err = ws.create(ctx, s, u.CreateRequest)
		case *pb.WatchRequest_CancelRequest:
			if u.CancelRequest == nil {
				continue
			}
			// An unknown id gets no answer, as in etcd.
			if err = s.Cancel(ctx, u.CancelRequest.WatchId); errors.Is(err, watch.ErrWatcherNotExist) {
				err = nil
			}
		case *pb.WatchRequest_ProgressRequest:
			if u.ProgressRequest == nil {
				continue
			}
			err = s.RequestProgress(ctx)
		default:
			// etcd ignores a request it does not know rather than end the
			// stream.
			continue
		}
		if err != nil {
			return err
		}
	}
}

// create validates a create request as etcd does and registers the
// watcher. A refused request is answered on the stream (created and
// canceled, watch id -1, with the reason) and is no error.
func (ws *watchService) create(ctx context.Context, s *watch.Stream, cr *pb.WatchCreateRequest) error {
	if cr.StartRevision < 0 {
		return s.Reject(ctx, rpctypes.ErrCompacted.Error())
	}
	r := watch.WatchRequest{
		ID:             cr.WatchId,
		Key:            cr.Key,
		StartRev:       cr.StartRevision,
		PrevKV:         cr.PrevKv,
		ProgressNotify: cr.ProgressNotify,
		Fragment:       cr.Fragment,
	}
	if len(r.Key) == 0 {
		// The empty key is the smallest one, \x00.
		r.Key = []byte{0}
	}
	// As etcd does, a watch is checked once, at create, for its whole
	// range; a refusal is answered on the stream.
	if err := ws.b.WatchPermitted(ctx, r.Key, cr.RangeEnd); err != nil {
		return s.Reject(ctx, watchCancelReason(err))
	}
	switch {
	case len(cr.RangeEnd) == 1 && cr.RangeEnd[0] == 0:
		r.FromKey = true
	case len(cr.RangeEnd) > 0:
		r.End = cr.RangeEnd
	}
	for _, f := range cr.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			r.NoPut = true
		case pb.WatchCreateRequest_NODELETE:
			r.NoDelete = true
		}
	}
	_, err := s.Watch(ctx, r)
	switch {
	case errors.Is(err, watch.ErrEmptyWatcherRange), errors.Is(err, watch.ErrWatcherDuplicateID):
		return nil // answered on the stream
	}
	return err
}

// sendLoop sends the stream's responses until the stream ends.
func (ws *watchService) sendLoop(ctx context.Context, stream pb.Watch_WatchServer, s *watch.Stream) error {
	for {
		rs, err := s.Recv(ctx)
		if err != nil {
			return err
		}
		for i := range rs {
			if err := ws.send(stream, &rs[i]); err != nil {
				return err
			}
		}
	}
}

func (ws *watchService) send(stream pb.Watch_WatchServer, r *watch.Response) error {
	wr := &pb.WatchResponse{
		Header: &pb.ResponseHeader{
			ClusterId: ws.b.ClusterID(),
			MemberId:  ws.b.MemberID(),
			Revision:  r.Revision,
			RaftTerm:  ws.b.Term(),
		},
		WatchId:         r.WatchID,
		Created:         r.Created,
		Canceled:        r.Canceled,
		CompactRevision: r.CompactRevision,
		CancelReason:    r.CancelReason,
		Events:          r.Events,
	}
	if r.Fragment && len(r.Events) > 1 {
		return sendFragments(stream, wr, ws.fragLimit)
	}
	return stream.Send(wr)
}
