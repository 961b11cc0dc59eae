package api

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
)

// Defaults that match etcd's.
const (
	// DefaultMaxRequestBytes is the largest request accepted: 1.5 MiB.
	DefaultMaxRequestBytes = 1536 * 1024
	// DefaultMaxTxnOps is the most operations in one branch of a txn.
	DefaultMaxTxnOps = 128
	// DefaultKeepAliveMinTime is the shortest client ping interval the
	// server tolerates.
	DefaultKeepAliveMinTime = 5 * time.Second
	// DefaultKeepAliveInterval is how long a connection may be idle before
	// the server pings it.
	DefaultKeepAliveInterval = 2 * time.Hour
	// DefaultKeepAliveTimeout is how long the server waits for a ping's
	// answer before closing the connection.
	DefaultKeepAliveTimeout = 20 * time.Second

	// grpcOverheadBytes is what a request may carry beyond MaxRequestBytes
	// in gRPC framing and protobuf field overhead (etcd allows the same),
	// so that a request of MaxRequestBytes of payload reaches the server,
	// which then rejects anything larger with "request is too large".
	grpcOverheadBytes = 512 * 1024

	// streamWorkers is how many goroutines gRPC keeps to run requests on.
	// Without them every request starts a new goroutine whose stack then
	// grows (and is copied) several times on the way down through the
	// handler: a quarter of a serializable read's CPU went to copystack.
	// A worker keeps its grown stack from one request to the next. Past
	// this many requests in flight gRPC starts goroutines again, so the
	// number only bounds how much of the load gets the cheap path, at
	// the price of the workers' idle stacks (a few KiB each).
	streamWorkers = 128
)

// Options configure the API. A zero field means etcd's default, except for
// the keep-alive settings (see below).
type Options struct {
	// MaxRequestBytes bounds a request; gRPC refuses messages larger than
	// this plus 512 KiB of framing.
	MaxRequestBytes uint
	// MaxTxnOps bounds each of a txn's compare, success and failure lists.
	MaxTxnOps uint
	// MaxConcurrentStreams bounds the streams of one client connection; 0
	// means unbounded, as etcd's default (math.MaxUint32).
	MaxConcurrentStreams uint32
	// KeepAliveMinTime, KeepAliveInterval and KeepAliveTimeout are etcd's
	// --grpc-keepalive-min-time, -interval and -timeout, taken as they are:
	// 0 disables the setting, as in etcd (the Default* constants are etcd's
	// defaults, which a caller sets explicitly).
	KeepAliveMinTime  time.Duration
	KeepAliveInterval time.Duration
	KeepAliveTimeout  time.Duration
	// Registerer receives the gRPC request metrics and the health check
	// counters; nil means prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// ExtensiveMetrics adds the grpc_server_handling_seconds histogram
	// (etcd's --metrics=extensive). The first server registered on a
	// registry decides for all that share it.
	ExtensiveMetrics bool
	// Gatherer is what /metrics serves; nil means
	// prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Logger receives the API's logs; nil means slog.Default().
	Logger *slog.Logger
	// Stopping, closed when the member begins to stop, ends every open
	// stream (watches, lease keep-alives) with etcd's "server stopped",
	// so clients resume elsewhere and a graceful stop need not wait for
	// them; nil leaves streams to end on their own.
	Stopping <-chan struct{}
	// ElectionTimeout is the member's election timeout: with Stopping set,
	// streams that require a leader end with etcd's "no leader" once the
	// member has known none for three of them. 0 checks only when a
	// stream starts.
	ElectionTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.MaxTxnOps == 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = math.MaxUint32
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.DefaultRegisterer
	}
	if o.Gatherer == nil {
		o.Gatherer = prometheus.DefaultGatherer
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// NewGRPCServer returns a gRPC server with cairn's services registered on b:
// etcd's KV, Maintenance and Auth services and the standard grpc.health.v1
// service (reporting SERVING). Every request's credentials (token, client
// certificate) reach the backend in its context, and the methods etcd
// reserves for root (or for a user at all) are checked first (authCheck,
// authStream). Watch, Lease and Cluster have Register
// functions of their own (RegisterWatch, RegisterLease, RegisterCluster),
// so that a test can serve a part; a service not registered answers
// codes.Unimplemented. The caller serves the server and stops it.
func NewGRPCServer(b Backend, o Options) *grpc.Server {
	o = o.withDefaults()
	metrics := serverMetrics(o.Registerer, o.Logger, o.ExtensiveMetrics)

	opts := []grpc.ServerOption{
		grpc.UnaryInterceptor(metrics.unaryInterceptor(admitUnary(b))),
		grpc.ChainStreamInterceptor(metrics.streamInterceptor(), learnerStream(b), authStream(b), newLeaderLoss(b, o.ElectionTimeout).interceptor(o.Stopping), stoppingStream(o.Stopping)),
		metrics.codecOption(),
		grpc.MaxRecvMsgSize(int(o.MaxRequestBytes) + grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(o.MaxConcurrentStreams),
		grpc.NumStreamWorkers(streamWorkers),
		// Stop returns only once every handler has: the owner closes the
		// store next, and a watch catching up must not read it closed.
		grpc.WaitForHandlers(true),
	}
	if o.KeepAliveMinTime > 0 {
		opts = append(opts, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: o.KeepAliveMinTime,
		}))
	}
	if o.KeepAliveInterval > 0 && o.KeepAliveTimeout > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    o.KeepAliveInterval,
			Timeout: o.KeepAliveTimeout,
		}))
	}
	gs := grpc.NewServer(opts...)

	registerKV(gs, &kvService{b: b, maxTxnOps: int(o.MaxTxnOps), streamChunkBytes: int(o.MaxRequestBytes)})
	pb.RegisterMaintenanceServer(gs, &maintenanceService{b: b, log: o.Logger})
	pb.RegisterAuthServer(gs, &authService{b: b})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)

	metrics.initialize(gs)
	return gs
}

// serverMetrics returns the gRPC request metrics registered on reg (etcd's
// grpc_server_* series). Several servers in one process (tests, or one per
// listener) share one collector, as registering a second would fail.
func serverMetrics(reg prometheus.Registerer, log *slog.Logger, extensive bool) *rpcMetrics {
	m := newRPCMetrics(extensive)
	if err := reg.Register(m); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*rpcMetrics); ok {
				return existing
			}
		}
		log.Warn("gRPC metrics are not registered", "error", err)
	}
	return m
}

// admitUnary is the interceptor of every unary call, inside the metrics'
// one: it refuses on a learner what etcd refuses there (learnerCheck),
// then a call that requires a leader while there is none (leaderCheck),
// then puts the call's credentials in its context and makes the access
// checks (authCheck), and runs the handler. One interceptor for the three
// steps because a chain of gRPC interceptors makes a closure per link on
// every call.
func admitUnary(b Backend) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := learnerCheck(b, req); err != nil {
			return nil, err
		}
		if err := leaderCheck(ctx, b); err != nil {
			return nil, err
		}
		ctx, err := authCheck(ctx, b, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// leaderCheck refuses a request that asks for a leader
// (clientv3.WithRequireLeader sets the "hasleader" metadata) while this
// member knows of none, with etcd's "no leader" error, instead of letting
// it wait; streams get the same check from leaderLoss, which also ends
// them when the leader is lost later.
func leaderCheck(ctx context.Context, b Backend) error {
	if needsLeader(ctx) && b.Leader() == 0 {
		return rpctypes.ErrGRPCNoLeader
	}
	return nil
}

// needsLeader looks the one key up: FromIncomingContext would copy the
// request's whole metadata, on every request.
func needsLeader(ctx context.Context) bool {
	v := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey)
	return len(v) > 0 && v[0] == rpctypes.MetadataHasLeader
}
