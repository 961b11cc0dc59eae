// Package api is cairn's client-facing edge: etcd's gRPC services and the
// HTTP endpoints etcd serves beside them on the same port.
//
// It holds no state. Each request is validated exactly as etcd validates it
// (the same checks in the same order, answered with the same rpctypes
// errors, so clientv3 maps every failure to the same typed error), handed to
// the Backend (the member, *server.Server), and the Backend's errors are
// turned into gRPC statuses by one table (errors.go).
//
// Backend, declared here, lists exactly the methods the API calls; every
// service works on it alone, with no optional extras discovered at run
// time.
//
// NewGRPCServer serves KV (Range, RangeStream, Put, DeleteRange, Txn,
// Compact), Maintenance (Status, Alarm, Defragment, Hash, HashKV, Snapshot,
// MoveLeader, Downgrade), the gRPC health service, and etcd's Auth service
// (auth.go).
// RegisterWatch, RegisterLease and RegisterCluster add those services; a
// member (internal/embed) registers them all, and etcd's Lock and Election
// services come from internal/lockelect.
//
// Interceptors on every server put each request's credentials (its
// "token" or "authorization" metadata, and the CN of a verified client
// certificate) into its context for the backend, and refuse, as etcd's API
// layer does, the methods reserved for role root (cluster changes,
// Compact, Defragment, Hash, HashKV, Snapshot, MoveLeader, Downgrade, alarm
// changes) or for a named user (Status, MemberList, alarm listing) while
// auth is enabled; the gateway makes the same checks (gatewayAuth), its
// Authorization header being the token. They also refuse what a learner
// must not serve
// (etcd's "rpc not supported for learner"), refuse requests that require a
// leader while there is none, and count requests in etcd's grpc_server_*
// metrics (the handling-time histogram with Options.ExtensiveMetrics; the
// member's own self-client, SelfUserAgent, left out); a codec counts the
// bytes of client messages. A unary Range in key order is sent from
// KeyValues the backend encoded while reading (Backend.RangeEncoded,
// kv_range.go), so a large response is never held twice. Given
// Options.Stopping, streams end with "server stopped" when
// the member begins to stop, and (with Options.ElectionTimeout) those that
// require a leader end with "no leader" once it has been lost for three
// election timeouts.
//
// # One port for gRPC and HTTP
//
// A plain-text listener is split by ConnMux: a connection that opens with
// the HTTP/2 client preface is gRPC, anything else is HTTP/1.1 and goes to
// the handler from NewHTTPHandler (/health, /livez, /readyz, /version,
// /metrics, optionally /debug/pprof/, and etcd's JSON gateway for KV and
// Maintenance under /v3/). On TLS the split happens per request instead
// (GRPCOrHTTP), because the protocol is only visible after the handshake.
package api
