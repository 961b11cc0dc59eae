package embed

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-db/cairn/internal/api"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/watch"
)

// Defaults, etcd's (with cairn's data directory suffix).
const (
	DefaultName                   = "default"
	DefaultListenClientURL        = "http://localhost:2379"
	DefaultAdvertiseClientURL     = "http://localhost:2379"
	DefaultInitialPeerURL         = "http://localhost:2380"
	DefaultListenPeerURL          = "http://localhost:2380"
	DefaultMaxLearners            = server.DefaultMaxLearners
	DefaultSnapshotCatchUpEntries = server.DefaultSnapshotCatchUpEntries
	// DefaultWatchProgressNotifyInterval is etcd's
	// --watch-progress-notify-interval.
	DefaultWatchProgressNotifyInterval = watch.DefaultProgressNotifyInterval
	ClusterStateNew                    = server.ClusterStateNew
	ClusterStateExisting               = server.ClusterStateExisting
	DefaultClusterToken                = "etcd-cluster"
	DefaultMaxRequestBytes             = api.DefaultMaxRequestBytes
	DefaultMaxTxnOps                   = api.DefaultMaxTxnOps
	DefaultSnapshotCount               = server.DefaultSnapshotCount
	DefaultHeartbeatMs                 = 100
	DefaultElectionMs                  = 1000
	DefaultAutoCompactionMode          = server.CompactionModePeriodic
	DefaultLogLevel                    = "info"
	DefaultLogFormat                   = "json"
	maxElectionMs                      = 50000
	dataDirSuffix                      = ".cairn"
	defaultQuotaBackendBytes           = 0 // the server's default: 2 GiB
	defaultAutoCompactionRetention     = "0"
)

// Config configures a member. Start it with Start. NewConfig returns etcd's
// defaults; the zero Config is not usable.
type Config struct {
	// Name is the member's human-readable name.
	Name string
	// DataDir holds the member's data. Empty means "<Name>.cairn" in the
	// working directory, as etcd uses "<name>.etcd".
	DataDir string
	// WalDir, when set, keeps the raft log in its own directory (etcd's
	// --wal-dir); empty keeps it in DataDir.
	WalDir string

	// ListenClientURLs are where clients are served, gRPC and HTTP on each
	// (http:// or https://). Port 0 picks a free port; Member.ClientURLs
	// reports the ports bound.
	ListenClientURLs []string
	// AdvertiseClientURLs are the client URLs this member tells others
	// about.
	AdvertiseClientURLs []string
	// ClientTLS secures https:// client URLs (and https:// metrics URLs).
	ClientTLS TLSInfo
	// ClientAutoTLS serves https:// client URLs with a self-signed
	// certificate generated into <DataDir>/fixtures/client (etcd's
	// --auto-tls) when ClientTLS names none; ClientTLS's other settings
	// stay in force.
	ClientAutoTLS bool
	// ListenClientHTTPURLs, if set, serve the HTTP endpoints instead of
	// ListenClientURLs, which then serve gRPC only (etcd's
	// --listen-client-http-urls).
	ListenClientHTTPURLs []string
	// ListenMetricsURLs are extra HTTP-only listeners for /metrics and the
	// health endpoints (etcd's --listen-metrics-urls), typically for
	// probes that should not share the client port.
	ListenMetricsURLs []string

	// ListenPeerURLs are where the other members' raft traffic is served
	// (http:// or https://; port 0 picks a free port, Member.PeerURLs
	// reports it). Empty means no peer listener: the member can only ever
	// be a cluster of one. NewConfig leaves it empty, so members embedded
	// in tests take no fixed port; cairn's command line sets etcd's
	// default, http://localhost:2380.
	ListenPeerURLs []string
	// PeerTLS secures https:// peer URLs: the peer listeners and the
	// connections to other members' https:// peer URLs.
	PeerTLS TLSInfo
	// PeerAutoTLS does for peers what ClientAutoTLS does for clients, in
	// <DataDir>/fixtures/peer (etcd's --peer-auto-tls). As in etcd, a
	// member with a generated certificate does not verify the members it
	// dials: the traffic is encrypted, not authenticated.
	PeerAutoTLS bool
	// SelfSignedCertValidity is how many years generated certificates are
	// valid for (etcd's --self-signed-cert-validity, default 1).
	SelfSignedCertValidity uint

	// InitialCluster ("name=peerURL,...") , InitialClusterToken and
	// InitialAdvertisePeerURLs found the cluster and derive the member and
	// cluster IDs, as in etcd. Only read when DataDir is new. Empty
	// InitialCluster means this member alone.
	InitialCluster           string
	InitialClusterToken      string
	InitialAdvertisePeerURLs []string
	// InitialClusterState is "new" (the members of InitialCluster found a
	// cluster together) or "existing" (this member joins a running cluster
	// that already has it in its member list, after a MemberAdd;
	// InitialCluster then lists the current members, this one included).
	// Only read when DataDir is new.
	InitialClusterState string
	// MaxLearners bounds how many learners the cluster's member list may
	// hold (etcd's --max-learners, default 1).
	MaxLearners int
	// StrictReconfigCheck refuses membership changes that could cost the
	// cluster its quorum (etcd's --strict-reconfig-check, on by default).
	StrictReconfigCheck bool
	// SnapshotCatchUpEntries is how many entries a raft log compaction
	// keeps for followers that lag; one lagging further gets a snapshot.
	SnapshotCatchUpEntries uint64
	// AutoPromoteLearners lets the leader promote a learner by itself once
	// it has caught up (cairn's --auto-promote-learners; etcd has no such
	// setting). Off by default.
	AutoPromoteLearners bool

	// MaxRequestBytes bounds a client request; MaxTxnOps each list of a
	// txn.
	MaxRequestBytes uint
	MaxTxnOps       uint
	// QuotaBackendBytes is the database size past which writes are
	// refused and the NOSPACE alarm raised; 0 means 2 GiB, negative none.
	QuotaBackendBytes int64
	// UnsafeNoFsync skips fsync: a crash may lose acknowledged writes.
	UnsafeNoFsync bool
	// SnapshotCount is how many applied entries trigger a raft log
	// compaction.
	SnapshotCount uint64
	// HeartbeatMs and ElectionMs are raft's heartbeat interval and
	// election timeout in milliseconds (--heartbeat-interval,
	// --election-timeout).
	HeartbeatMs uint
	ElectionMs  uint
	// PreVote runs raft's pre-vote before an election (--pre-vote, on by
	// default), so a member returning from a partition does not depose a
	// working leader.
	PreVote bool
	// AutoCompactionMode ("periodic" or "revision") and
	// AutoCompactionRetention configure automatic compaction as in etcd.
	AutoCompactionMode      string
	AutoCompactionRetention string

	// WatchProgressNotifyInterval is how often a watcher created with
	// progress_notify that saw no events gets a progress notification
	// (--watch-progress-notify-interval, default 10 minutes).
	WatchProgressNotifyInterval time.Duration

	// AuthToken is --auth-token: "simple" (empty means simple) or
	// "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...".
	// AuthTokenTTL is --auth-token-ttl in seconds (0: 300), the life of a
	// simple token after its last use. BcryptCost is --bcrypt-cost (0:
	// 10). With ClientTLS.ClientCertAuth, a request without a token runs as
	// its verified client certificate's CN.
	AuthToken    string
	AuthTokenTTL uint
	BcryptCost   uint
	// AuditLog is --audit-log, the file of the member's audit log of auth
	// changes and auth refusals ("": off; see package audit).
	// AuditLogMaxBytes (--audit-log-max-bytes, 0: 100 MiB) is the size it
	// rotates at, AuditLogMaxFiles the rotated files kept (0: 5, below 0:
	// none; the flag's 0 means none).
	AuditLog         string
	AuditLogMaxBytes int64
	AuditLogMaxFiles int

	// GRPC tunes the client-facing gRPC server.
	GRPC GRPCOptions
	// EnablePprof serves Go's profiler at /debug/pprof/ on the client URLs.
	EnablePprof bool
	// EnableGRPCGateway serves etcd's JSON gateway (/v3/kv/range, ...)
	// with the HTTP endpoints; on by default, as in etcd.
	EnableGRPCGateway bool

	// LogLevel (debug, info, warn, error; etcd's panic and fatal mean
	// error) and LogFormat (json, console) shape the log written to stderr
	// when Logger is nil.
	LogLevel  string
	LogFormat string
	// Recovery holds the settings for recovering from a lost quorum and
	// for detecting members whose state diverged.
	Recovery RecoveryOptions

	// Logger, if set, receives the member's log instead.
	Logger *slog.Logger
	// Metrics is the registry the member's metrics go to and /metrics
	// serves. Nil means a registry of the member's own, with Go runtime
	// and process metrics, so several members fit in one process.
	Metrics *prometheus.Registry
	// ExtensiveMetrics adds the gRPC handling-time histograms (etcd's
	// --metrics=extensive; false is etcd's basic).
	ExtensiveMetrics bool
}

// GRPCOptions are etcd's gRPC server settings.
type GRPCOptions struct {
	// MaxConcurrentStreams bounds the streams of one client connection; 0
	// means unbounded (etcd's default).
	MaxConcurrentStreams uint32
	// KeepAliveMinTime, KeepAliveInterval and KeepAliveTimeout are
	// --grpc-keepalive-min-time, -interval and -timeout; 0 disables each.
	KeepAliveMinTime  time.Duration
	KeepAliveInterval time.Duration
	KeepAliveTimeout  time.Duration
}

// NewConfig returns a Config with etcd's defaults: name "default", data
// directory "default.cairn", clients served on http://localhost:2379 and
// advertised there, 1.5 MiB requests, 128 ops per txn branch, 2 GiB quota,
// 100 ms heartbeat, 1 s election timeout, periodic auto-compaction off.
func NewConfig() *Config {
	return &Config{
		Name:                        DefaultName,
		DataDir:                     DefaultName + dataDirSuffix,
		ListenClientURLs:            []string{DefaultListenClientURL},
		AdvertiseClientURLs:         []string{DefaultAdvertiseClientURL},
		InitialClusterToken:         DefaultClusterToken,
		InitialAdvertisePeerURLs:    []string{DefaultInitialPeerURL},
		InitialClusterState:         ClusterStateNew,
		SelfSignedCertValidity:      DefaultSelfSignedCertValidity,
		MaxLearners:                 DefaultMaxLearners,
		StrictReconfigCheck:         true,
		SnapshotCatchUpEntries:      DefaultSnapshotCatchUpEntries,
		MaxRequestBytes:             DefaultMaxRequestBytes,
		MaxTxnOps:                   DefaultMaxTxnOps,
		QuotaBackendBytes:           defaultQuotaBackendBytes,
		SnapshotCount:               DefaultSnapshotCount,
		HeartbeatMs:                 DefaultHeartbeatMs,
		ElectionMs:                  DefaultElectionMs,
		PreVote:                     true,
		AutoCompactionMode:          DefaultAutoCompactionMode,
		AutoCompactionRetention:     defaultAutoCompactionRetention,
		WatchProgressNotifyInterval: DefaultWatchProgressNotifyInterval,
		GRPC: GRPCOptions{
			KeepAliveMinTime:  api.DefaultKeepAliveMinTime,
			KeepAliveInterval: api.DefaultKeepAliveInterval,
			KeepAliveTimeout:  api.DefaultKeepAliveTimeout,
		},
		EnableGRPCGateway: true,
		LogLevel:          DefaultLogLevel,
		LogFormat:         DefaultLogFormat,
	}
}

// DefaultDataDir is the data directory a member named name uses when none
// is given: "<name>.cairn".
func DefaultDataDir(name string) string { return name + dataDirSuffix }

// ErrUnsetAdvertiseClientURLs is etcd's refusal of explicit listen URLs
// without advertised ones.
var ErrUnsetAdvertiseClientURLs = errors.New("--advertise-client-urls is required when --listen-client-urls is set explicitly")

// Validate checks c as etcd checks its configuration, with etcd's messages.
func (c *Config) Validate() error {
	if len(c.ListenClientURLs) == 0 {
		return errors.New("embed: no client URL to listen on")
	}
	for _, raw := range c.ListenClientURLs {
		if err := c.checkListenURL("client", raw); err != nil {
			return err
		}
	}
	for _, raw := range c.ListenClientHTTPURLs {
		if err := c.checkListenURL("client http", raw); err != nil {
			return err
		}
	}
	for _, raw := range c.ListenMetricsURLs {
		if err := c.checkListenURL("metrics", raw); err != nil {
			return err
		}
	}
	for _, raw := range c.ListenPeerURLs {
		if err := c.checkListenPeerURL(raw); err != nil {
			return err
		}
	}
	switch c.InitialClusterState {
	case ClusterStateNew, ClusterStateExisting:
	default:
		return fmt.Errorf("unexpected clusterState %q", c.InitialClusterState)
	}
	if c.MaxLearners < 0 {
		return fmt.Errorf("--max-learners must be >= 0 (set to %d)", c.MaxLearners)
	}
	if c.HeartbeatMs == 0 {
		return fmt.Errorf("--heartbeat-interval must be >0 (set to %dms)", c.HeartbeatMs)
	}
	if c.ElectionMs == 0 {
		return fmt.Errorf("--election-timeout must be >0 (set to %dms)", c.ElectionMs)
	}
	if 5*c.HeartbeatMs > c.ElectionMs {
		return fmt.Errorf("--election-timeout[%vms] should be at least as 5 times as --heartbeat-interval[%vms]", c.ElectionMs, c.HeartbeatMs)
	}
	if c.ElectionMs > maxElectionMs {
		return fmt.Errorf("--election-timeout[%vms] is too long, and should be set less than %vms", c.ElectionMs, maxElectionMs)
	}
	if len(c.AdvertiseClientURLs) == 0 {
		return ErrUnsetAdvertiseClientURLs
	}
	switch c.AutoCompactionMode {
	case server.CompactionModePeriodic, server.CompactionModeRevision:
	case "":
		return errors.New("undefined auto-compaction-mode")
	default:
		return fmt.Errorf("unknown auto-compaction-mode %q", c.AutoCompactionMode)
	}
	if err := c.ClientTLS.validate(false); err != nil {
		return err
	}
	if err := c.PeerTLS.validate(true); err != nil {
		return err
	}
	if (c.ClientAutoTLS || c.PeerAutoTLS) && c.SelfSignedCertValidity == 0 {
		return errors.New("selfSignedCertValidity is invalid,it should be greater than 0")
	}
	if c.PeerAutoTLS && !c.PeerTLS.configured() && c.PeerTLS.requiresClientCert() && c.PeerTLS.ClientCertFile == "" {
		// etcd drops the checks instead; cairn keeps them (see autoTLS),
		// and the other members could not verify a generated certificate.
		return errors.New("--peer-auto-tls with --peer-client-cert-auth or --peer-trusted-ca-file needs --peer-client-cert-file and --peer-client-key-file signed by a trusted CA: other members cannot verify a generated certificate")
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		return err
	}
	switch c.LogFormat {
	case "", "json", "console":
	default:
		return fmt.Errorf("unknown log format: %s, supported values json, console", c.LogFormat)
	}
	return nil
}

// checkListenURL checks one URL to listen on; kind names it in errors.
func (c *Config) checkListenURL(kind, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid listen %s URL %q: %w", kind, raw, err)
	}
	switch u.Scheme {
	case "http":
	case "https":
		if (c.ClientTLS.CertFile == "" || c.ClientTLS.KeyFile == "") && !(c.ClientAutoTLS && !c.ClientTLS.configured()) {
			return fmt.Errorf("TLS key/cert (--cert-file, --key-file) must be provided for %s url %s with HTTPS scheme", kind, raw)
		}
	default:
		return fmt.Errorf("listen %s URL %q: scheme %q is not supported (use http or https)", kind, raw, u.Scheme)
	}
	if u.Port() == "" {
		return fmt.Errorf("listen %s URL %q has no port", kind, raw)
	}
	return nil
}

// checkListenPeerURL checks one peer URL to listen on.
func (c *Config) checkListenPeerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid listen peer URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http":
	case "https":
		if (c.PeerTLS.CertFile == "" || c.PeerTLS.KeyFile == "") && !(c.PeerAutoTLS && !c.PeerTLS.configured()) {
			return fmt.Errorf("TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url %s with HTTPS scheme", raw)
		}
	default:
		return fmt.Errorf("listen peer URL %q: scheme %q is not supported (use http or https)", raw, u.Scheme)
	}
	if u.Port() == "" {
		return fmt.Errorf("listen peer URL %q has no port", raw)
	}
	return nil
}

func (c *Config) dataDir() string {
	if c.DataDir != "" {
		return c.DataDir
	}
	return DefaultDataDir(c.Name)
}

func (c *Config) serverConfig(lg *slog.Logger, reg prometheus.Registerer) server.Config {
	return server.Config{
		Name:                        c.Name,
		DataDir:                     c.dataDir(),
		WalDir:                      c.WalDir,
		InitialCluster:              c.InitialCluster,
		InitialClusterState:         c.InitialClusterState,
		ClusterToken:                c.InitialClusterToken,
		PeerURLs:                    c.InitialAdvertisePeerURLs,
		ClientURLs:                  c.AdvertiseClientURLs,
		MaxLearners:                 c.MaxLearners,
		DisableStrictReconfigCheck:  !c.StrictReconfigCheck,
		SnapshotCatchUpEntries:      c.SnapshotCatchUpEntries,
		AutoPromoteLearners:         c.AutoPromoteLearners,
		MaxRequestBytes:             c.MaxRequestBytes,
		QuotaBackendBytes:           c.QuotaBackendBytes,
		UnsafeNoFsync:               c.UnsafeNoFsync,
		SnapshotCount:               c.SnapshotCount,
		TickMs:                      c.HeartbeatMs,
		ElectionTicks:               int(c.ElectionMs / c.HeartbeatMs),
		DisablePreVote:              !c.PreVote,
		AutoCompactionMode:          c.AutoCompactionMode,
		AutoCompactionRetention:     c.AutoCompactionRetention,
		WatchProgressNotifyInterval: c.WatchProgressNotifyInterval,
		AuthToken:                   c.AuthToken,
		AuthTokenTTL:                time.Duration(c.AuthTokenTTL) * time.Second,
		BcryptCost:                  int(c.BcryptCost),
		ClientCertAuth:              c.ClientTLS.ClientCertAuth,
		AuditLog:                    c.AuditLog,
		AuditLogMaxBytes:            c.AuditLogMaxBytes,
		AuditLogMaxFiles:            c.AuditLogMaxFiles,
		Logger:                      lg,
		Metrics:                     reg,
	}
}

func (c *Config) apiOptions(lg *slog.Logger, reg *prometheus.Registry) api.Options {
	return api.Options{
		MaxRequestBytes:      c.MaxRequestBytes,
		MaxTxnOps:            c.MaxTxnOps,
		MaxConcurrentStreams: c.GRPC.MaxConcurrentStreams,
		KeepAliveMinTime:     c.GRPC.KeepAliveMinTime,
		KeepAliveInterval:    c.GRPC.KeepAliveInterval,
		KeepAliveTimeout:     c.GRPC.KeepAliveTimeout,
		Registerer:           reg,
		Gatherer:             reg,
		Logger:               lg,
		ExtensiveMetrics:     c.ExtensiveMetrics,
	}
}

// requestTimeout is etcd's: 5 s plus two election timeouts. Close gives
// in-flight requests this long to finish.
func (c *Config) requestTimeout() time.Duration {
	return 5*time.Second + 2*time.Duration(c.ElectionMs)*time.Millisecond
}
