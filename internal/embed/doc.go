// Package embed runs a cairn member inside a Go program: it turns a Config
// into a running server (internal/server) served to clients by the API
// (internal/api) on every client URL, and stops it all again.
//
//	cfg := embed.NewConfig()
//	cfg.Name = "infra1"
//	cfg.DataDir = "/var/lib/cairn"
//	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
//	m, err := embed.Start(cfg)
//	if err != nil { ... }
//	defer m.Close()
//	fmt.Println(m.ClientURLs()) // [http://127.0.0.1:41234]
//
// Each client URL serves etcd's gRPC services and the HTTP endpoints
// (/health, /livez, /readyz, /version, /metrics) on the same port: plain
// http:// listeners tell the two apart by a connection's first bytes,
// https:// listeners (with Config.ClientTLS) per request after the TLS
// handshake, as etcd does. As in etcd, ListenClientHTTPURLs moves the HTTP
// endpoints to URLs of their own, and ListenMetricsURLs serves them on
// extra URLs (for probes).
//
// Start binds every listener before it opens the data directory, so a port
// in use fails before anything is written, and opens the data directory
// exclusively: a second member on the same directory fails with an error
// wrapping storage.ErrLocked. The data directory is made private first:
// created 0700, or set to 0700 with a warning when it exists with another
// mode, and nothing in it left open to the group or others.
//
// TLS (TLSInfo, for clients and for peers) follows etcd: certificates and
// keys are read for every handshake and parsed again when their files
// change, so copying new files over them rotates them without a restart
// (while the files hold no matching pair, the last good one is served); a
// CRL refuses revoked certificates at the handshake; allowed CNs and host
// names restrict the certificates accepted; the peer listener checks that a
// member's client certificate names the address it connects from. With
// ClientAutoTLS and PeerAutoTLS and no certificate given, a self-signed one
// is generated into <DataDir>/fixtures/client and /peer and reused. Settings
// etcd would accept and not act on (a CRL with no client certificates to
// check) are refused by Validate. Close stops accepting connections, lets
// requests in flight finish (up to etcd's request timeout), and stops the
// member.
//
// ListenPeerURLs serve the other members: raft messages and snapshots
// (internal/transport) and the member list a joining member asks for, all
// through the server's PeerHandler, over TLS for https:// URLs (PeerTLS,
// which also secures this member's connections to https:// peers). A
// cluster is founded as in etcd: every member starts with the same
// InitialCluster, InitialClusterToken and InitialClusterState "new", its own
// Name and InitialAdvertisePeerURLs; the advertised peer URLs and the token
// derive the member and cluster IDs exactly as etcd derives them. A member
// added at runtime (Cluster.MemberAdd) starts with InitialClusterState
// "existing" and the current members in InitialCluster. NewConfig leaves
// ListenPeerURLs empty, so members embedded in tests take no fixed port;
// without a peer listener a member can only be a cluster of one. Each
// client listener serves KV, Maintenance, Watch, Lease, Cluster and Auth
// (AuthToken, AuthTokenTTL and BcryptCost are etcd's --auth-token,
// --auth-token-ttl and --bcrypt-cost; AuditLog, cairn's own, is the audit
// log of auth changes and refusals, see package audit).
//
// Every client listener also serves etcd's Lock and Election services
// (internal/lockelect), and with EnableGRPCGateway their JSON paths
// (/v3/lock/lock, /v3/election/campaign, ...). They keep their state in
// ordinary keys, through the member's self-client: a clientv3 client of the
// member's own KV, Watch and Lease services over a unix socket that the
// first client listener's gRPC server also serves. The socket is
// self.sock in the data directory (bound once the data directory is open;
// a short private temporary directory instead when that path is too long
// for a socket), where only the member's user can reach it: it needs no
// TLS whatever the client URLs require, and its calls pass through the
// same interceptors as any client's; the caller's auth token goes along
// with each call. Close closes the self-client once the servers stop.
//
// With EnableGRPCGateway the JSON gateway also serves Watch (/v3/watch,
// streamed), Lease (/v3/lease/..., /v3/kv/lease/...) and Cluster
// (/v3/cluster/...) through a connection of its own over the same socket;
// KV and Maintenance go straight to their services.
//
// Close first ends open streams (watches, keep-alives) with "server
// stopped", so clients resume on another member, then hands the leadership
// to another voting member if this member leads (as etcd does on a
// graceful stop, so the others need not wait out an election timeout),
// then stops the client listeners, then the server (whose transport ends
// the peers' long-lived streams), then the peer listeners.
package embed
