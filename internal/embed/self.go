package embed

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	etcdgw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cairn-db/cairn/internal/lockelect"
)

// selfBufferBytes is the in-process connection's buffer in each direction:
// big enough that gRPC's framing rarely waits on the reader.
const selfBufferBytes = 1 << 20

// selfEndpoint names the in-process listener for clientv3 and gRPC; the
// dialer ignores it.
const selfEndpoint = "in-process"

// self is the member's connection to itself, which the Lock and Election
// services (internal/lockelect) make their KV, Watch and Lease calls
// through. The first client listener's gRPC server also serves an
// in-process listener that needs no TLS, so the self-client works whatever
// the client URLs' TLS and client-certificate settings are, and it reaches
// exactly the services a client reaches, interceptors included.
type self struct {
	l *bufconn.Listener
	// client backs the services; gateway carries the JSON gateway's calls
	// to them. Both dial l and are closed after the servers stop.
	client  *clientv3.Client
	gateway *grpc.ClientConn
}

// startSelf creates the member's self-client and returns handler with etcd's
// JSON gateway for Lock, Election, Watch, Lease and Cluster (/v3/lock/...,
// /v3/election/..., /v3/watch, /v3/lease/..., /v3/kv/lease/...,
// /v3/cluster/...) in front of it when the gateway is enabled. Nothing dials until the
// in-process listener is served (serveSelf).
func (m *Member) startSelf(handler http.Handler) (http.Handler, error) {
	l := bufconn.Listen(selfBufferBytes)
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return l.DialContext(ctx)
	})
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{selfEndpoint},
		DialOptions: []grpc.DialOption{dial},
		// The server enforces --max-request-bytes with etcd's error;
		// the client should not refuse first with another.
		MaxCallSendMsgSize: math.MaxInt32,
		MaxCallRecvMsgSize: math.MaxInt32,
		Logger:             zap.NewNop(),
	})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("embed: member %q self-client: %w", m.cfg.Name, err)
	}
	m.self = &self{l: l, client: c}
	if !m.cfg.EnableGRPCGateway {
		return handler, nil
	}
	// A connection of its own rather than the self-client's: clientv3's
	// interceptors (retries) must not act on the gateway's calls.
	conn, err := grpc.NewClient("passthrough:///"+selfEndpoint, dial,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		m.self.close()
		return nil, fmt.Errorf("embed: member %q gateway connection: %w", m.cfg.Name, err)
	}
	m.self.gateway = conn
	gwmux := gw.NewServeMux(gw.WithMarshalerOption(gw.MIMEWildcard, &gw.HTTPBodyMarshaler{
		Marshaler: &gw.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}))
	ctx := context.Background()
	for _, register := range []func(context.Context, *gw.ServeMux, *grpc.ClientConn) error{
		lockelect.RegisterGateway,
		etcdgw.RegisterWatchHandler,
		etcdgw.RegisterLeaseHandler,
		etcdgw.RegisterClusterHandler,
	} {
		if err := register(ctx, gwmux, conn); err != nil {
			m.self.close()
			return nil, fmt.Errorf("embed: member %q JSON gateway: %w", m.cfg.Name, err)
		}
	}
	// The streaming calls (Watch, LeaseKeepAlive, Observe) need a real
	// connection, so these paths go through it; KV and Maintenance are
	// served by the api handler directly.
	mux := http.NewServeMux()
	for _, path := range []string{"/v3/lock/", "/v3/election/", "/v3/watch", "/v3/lease/", "/v3/kv/lease/", "/v3/cluster/"} {
		mux.Handle(path, gwmux)
	}
	mux.Handle("/", handler)
	return mux, nil
}

// registerSelf serves the Lock and Election services on gs, backed by the
// self-client. Call it on every client listener's server before it serves.
func (m *Member) registerSelf(gs *grpc.Server) {
	lockelect.Register(gs, m.self.client)
}

// serveSelf serves the in-process listener with gs, a client listener's
// server on which every service is registered.
func (m *Member) serveSelf(gs *grpc.Server) {
	m.run(func() error { return ignoreClosed(gs.Serve(m.self.l)) })
}

// close closes the self-client, the gateway's connection and the
// in-process listener; call it once the servers have stopped.
func (s *self) close() {
	if s == nil {
		return
	}
	if s.gateway != nil {
		s.gateway.Close()
	}
	s.client.Close()
	s.l.Close()
}
