package api

import (
	"context"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// stoppingStream ends long-lived streams (watches, lease keep-alives) when
// the member starts to stop: their context is canceled, and the stream
// ends with etcd's "server stopped" (Unavailable), which clients answer by
// resuming on another member, rather than holding the member's graceful
// stop until its timeout.
func stoppingStream(stopping <-chan struct{}) grpc.StreamServerInterceptor {
	if stopping == nil {
		return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, ss)
		}
	}
	// One context for every stream, canceled when stopping closes: each
	// stream hangs its cancel on it instead of a goroutine of its own.
	stopCtx, stop := context.WithCancel(context.Background())
	go func() {
		<-stopping
		stop()
	}()
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if stopCtx.Err() != nil {
			return rpctypes.ErrGRPCStopped
		}
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		defer context.AfterFunc(stopCtx, cancel)()
		err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		if stopCtx.Err() != nil && ss.Context().Err() == nil {
			return rpctypes.ErrGRPCStopped
		}
		return err
	}
}

// ctxStream is a server stream with a context of its own.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

// Context is the stream's own context, canceled when the member stops.
func (s *ctxStream) Context() context.Context { return s.ctx }
