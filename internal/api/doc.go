// Package api is cairn's client-facing edge: etcd's gRPC services and the
// HTTP endpoints etcd serves beside them on the same port.
//
// It holds no state. Each request is validated exactly as etcd validates it
// (the same checks in the same order, answered with the same rpctypes
// errors, so clientv3 maps every failure to the same typed error), handed to
// a Backend (the member, internal/server), and the Backend's errors are
// turned into gRPC statuses by one table (errors.go).
//
// NewGRPCServer serves KV (Range, RangeStream, Put, DeleteRange, Txn,
// Compact) and Maintenance (Status, Alarm, Defragment, HashKV and
// MoveLeader where the backend provides them; Hash, Snapshot and Downgrade
// answer codes.Unimplemented). RegisterWatch, RegisterLease and
// RegisterCluster add those services; a member (internal/embed) registers
// them all. Auth is not served, so clients get codes.Unimplemented.
//
// # One port for gRPC and HTTP
//
// A plain-text listener is split by ConnMux: a connection that opens with
// the HTTP/2 client preface is gRPC, anything else is HTTP/1.1 and goes to
// the handler from NewHTTPHandler (/health, /livez, /readyz, /version,
// /metrics, and etcd's JSON gateway under /v3/). On TLS the split happens per
// request instead (GRPCOrHTTP), because the protocol is only visible after
// the handshake.
package api
