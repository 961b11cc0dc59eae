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
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if stopping == nil {
			return handler(srv, ss)
		}
		select {
		case <-stopping:
			return rpctypes.ErrGRPCStopped
		default:
		}
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		go func() {
			select {
			case <-stopping:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		select {
		case <-stopping:
			if ss.Context().Err() == nil {
				return rpctypes.ErrGRPCStopped
			}
		default:
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
