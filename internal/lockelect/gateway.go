package lockelect

import (
	"context"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	v3electiongw "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb/gw"
	v3lockgw "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb/gw"
	"google.golang.org/grpc"
)

// RegisterGateway adds etcd's JSON paths for the two services to mux:
// POST /v3/lock/lock and /v3/lock/unlock, and /v3/election/campaign,
// proclaim, leader, observe (a stream of {"result": ...} objects) and
// resign. Each request is sent over conn to a gRPC server on which Register
// was called; going through a connection rather than calling the services
// directly is what lets Observe stream, and it passes the caller's
// Authorization header on as the token. mux should have etcd's JSON
// settings (proto field names, unset fields left out, unknown fields
// ignored). ctx bounds nothing after registration returns.
func RegisterGateway(ctx context.Context, mux *gw.ServeMux, conn *grpc.ClientConn) error {
	if err := v3lockgw.RegisterLockHandler(ctx, mux, conn); err != nil {
		return err
	}
	return v3electiongw.RegisterElectionHandler(ctx, mux, conn)
}
