package api

import (
	"context"
	"net/http"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	etcdgw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/protobuf/encoding/protojson"
)

// newGateway returns etcd's gRPC gateway: the KV, Maintenance and Auth
// calls as JSON over HTTP under /v3/ (POST /v3/kv/put, /v3/kv/range,
// /v3/auth/authenticate, ...; the token goes in the Authorization header,
// see gatewayAuth), with
// etcd's JSON settings (proto field names, unset fields left out, unknown
// fields ignored). The calls go straight to the same services gRPC clients
// reach, validation and error mapping included. The streaming calls
// (RangeStream, Snapshot) are gRPC only.
func newGateway(b Backend, kv *kvService, m *maintenanceService) (http.Handler, error) {
	var mux *gw.ServeMux
	mux = gw.NewServeMux(gw.WithMarshalerOption(gw.MIMEWildcard, &gw.HTTPBodyMarshaler{
		Marshaler: &gw.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}), gw.WithMiddlewares(gatewayAuth(b, &mux)))
	ctx := context.Background()
	if err := etcdgw.RegisterAuthHandlerServer(ctx, mux, &authService{b: b}); err != nil {
		return nil, err
	}
	if err := etcdgw.RegisterKVHandlerServer(ctx, mux, kv); err != nil {
		return nil, err
	}
	if err := etcdgw.RegisterMaintenanceHandlerServer(ctx, mux, m); err != nil {
		return nil, err
	}
	return mux, nil
}
