package embed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	etcdgw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cairn-db/cairn/internal/api"
	"github.com/cairn-db/cairn/internal/lockelect"
)

// selfEndpoint is the self-client's endpoint as clientv3 and gRPC see it:
// only a name, which the dialer ignores to dial the socket.
const selfEndpoint = "in-process"

// selfSocketName is the self-client's unix socket in the data directory.
const selfSocketName = "self.sock"

// maxSocketPath is the longest unix socket path used: sun_path holds 108
// bytes on Linux and 104 on the BSDs and macOS, the terminating NUL
// included on some of them.
const maxSocketPath = 103

// self is the member's connection to itself, which the Lock and Election
// services (internal/lockelect) make their KV, Watch and Lease calls
// through. The first client listener's gRPC server also serves a unix
// socket that needs no TLS, so the self-client works whatever the client
// URLs' TLS and client-certificate settings are, and it reaches exactly the
// services a client reaches, interceptors included.
//
// The socket lives in the data directory (self.sock) and only the member's
// user may connect to it (mode 0600): since the socket skips TLS and
// client certificates, a place other local users can reach (127.0.0.1, an
// abstract socket) would let them around both. Where the data directory's
// path is too long for a socket, it lives in a private temporary directory
// instead, removed on close.
type self struct {
	l net.Listener
	// tmpDir is the temporary directory holding the socket, if any.
	tmpDir string
	// client backs the services; gateway carries the JSON gateway's calls
	// to them. Both dial l and are closed after the servers stop.
	client  *clientv3.Client
	gateway *grpc.ClientConn
}

// listenSelf binds the self-client's socket in dataDir, or in a private
// temporary directory when that path is too long. A socket file left by a
// member that crashed is replaced: the caller holds the data directory's
// lock, so no running member owns it.
func listenSelf(dataDir string) (l net.Listener, tmpDir string, err error) {
	path := filepath.Join(dataDir, selfSocketName)
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if len(path) > maxSocketPath {
		for _, parent := range []string{"", "/tmp"} {
			if tmpDir, err = os.MkdirTemp(parent, "cairn-"); err != nil {
				return nil, "", fmt.Errorf("embed: self-client socket directory: %w", err)
			}
			if path = filepath.Join(tmpDir, selfSocketName); len(path) <= maxSocketPath {
				break
			}
			os.RemoveAll(tmpDir)
			tmpDir = ""
		}
		if tmpDir == "" {
			return nil, "", fmt.Errorf("embed: no directory with a path short enough for the self-client socket")
		}
	} else if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("embed: remove stale self-client socket: %w", err)
	}
	l, err = net.Listen("unix", path)
	if err != nil {
		if tmpDir != "" {
			os.RemoveAll(tmpDir)
		}
		return nil, "", fmt.Errorf("embed: self-client socket: %w", err)
	}
	// Connecting takes write permission on the socket: the member's user
	// only, whatever the umask and the directory's mode.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		if tmpDir != "" {
			os.RemoveAll(tmpDir)
		}
		return nil, "", fmt.Errorf("embed: self-client socket: %w", err)
	}
	return l, tmpDir, nil
}

// startSelf creates the member's self-client and returns handler with etcd's
// JSON gateway for Lock, Election, Watch, Lease and Cluster (/v3/lock/...,
// /v3/election/..., /v3/watch, /v3/lease/..., /v3/kv/lease/...,
// /v3/cluster/...) in front of it when the gateway is enabled. Nothing
// dials until the self-client's socket is served (serveSelf).
func (m *Member) startSelf(handler http.Handler) (http.Handler, error) {
	l, tmpDir, err := listenSelf(m.cfg.dataDir())
	if err != nil {
		return nil, fmt.Errorf("embed: member %q: %w", m.cfg.Name, err)
	}
	m.self = &self{l: l, tmpDir: tmpDir}
	addr := l.Addr().String()
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	})
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{selfEndpoint},
		// Its calls are not counted in the member's gRPC metrics.
		DialOptions: []grpc.DialOption{dial, grpc.WithUserAgent(api.SelfUserAgent)},
		// The server enforces --max-request-bytes with etcd's error;
		// the client should not refuse first with another.
		MaxCallSendMsgSize: math.MaxInt32,
		MaxCallRecvMsgSize: math.MaxInt32,
		Logger:             zap.NewNop(),
	})
	if err != nil {
		m.self.close()
		return nil, fmt.Errorf("embed: member %q self-client: %w", m.cfg.Name, err)
	}
	m.self.client = c
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
	}), gw.WithIncomingHeaderMatcher(gatewayHeader))
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

// gatewayHeader is gRPC-gateway's default choice of the HTTP headers
// passed on as metadata (permanent headers as grpcgateway-*, and
// Grpc-Metadata-* ones), except the caller CN key (lockelect.CallerCNKey):
// a name an HTTP client puts there must never reach the socket on which
// that key is trusted. The API layer ignores it on the gateway's calls
// anyway; this keeps it from travelling at all.
func gatewayHeader(key string) (string, bool) {
	md, ok := gw.DefaultHeaderMatcher(key)
	if ok && strings.EqualFold(md, lockelect.CallerCNKey) {
		return "", false
	}
	return md, ok
}

// registerSelf serves the Lock and Election services on gs, backed by the
// self-client. Call it on every client listener's server before it serves.
func (m *Member) registerSelf(gs *grpc.Server) {
	lockelect.Register(gs, m.self.client)
}

// serveSelf serves the self-client's socket with gs, a client listener's
// server on which every service is registered.
func (m *Member) serveSelf(gs *grpc.Server) {
	m.run(func() error { return ignoreClosed(gs.Serve(m.self.l)) })
}

// close closes the self-client, the gateway's connection and the socket
// (which removes its file); call it once the servers have stopped.
func (s *self) close() {
	if s == nil {
		return
	}
	if s.gateway != nil {
		s.gateway.Close()
	}
	if s.client != nil {
		s.client.Close()
	}
	s.l.Close()
	if s.tmpDir != "" {
		os.RemoveAll(s.tmpDir)
	}
}
