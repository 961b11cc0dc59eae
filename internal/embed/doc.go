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
// wrapping storage.ErrLocked. Close stops accepting connections, lets
// requests in flight finish (up to etcd's request timeout), and stops the
// member.
//
// Peer URLs (--listen-peer-urls) are not served yet: a member is a
// one-member cluster. The advertised peer URLs and the cluster token still
// feed the member and cluster IDs exactly as in etcd.
package embed
