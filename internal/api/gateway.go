package api

import (
	"context"
	"net/http"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	etcdgw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/protobuf/encoding/protojson"
)

// newGateway returns etcd's gRPC gateway: the KV and Maintenance calls as
// JSON over HTTP under /v3/ (POST /v3/kv/put, /v3/kv/range, ...), with
// etcd's JSON settings (proto field names, unset fields left out, unknown
// fields ignored). The calls go straight to the same services gRPC clients
// reach, validation and error mapping included. The streaming calls
// (RangeStream, Snapshot) are gRPC only.
func newGateway(kv *kvService, m *maintenanceService) (http.Handler, error) {
	mux := gw.NewServeMux(gw.WithMarshalerOption(gw.MIMEWildcard, &gw.HTTPBodyMarshaler{
		Marshaler: &gw.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}))
	ctx := context.Background()
	if err := etcdgw.RegisterKVHandlerServer(ctx, mux, kv); err != nil {
		return nil, err
	}
	if err := etcdgw.RegisterMaintenanceHandlerServer(ctx, mux, m); err != nil {
		return nil, err
	}
	return mux, nil
}
