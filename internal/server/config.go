package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/clock"
	"github.com/cairn-db/cairn/internal/transport"
)

// Defaults, etcd's where etcd has the same setting.
const (
	DefaultName              = "default"
	DefaultPeerURL           = "http://localhost:2380"
	DefaultClusterToken      = "etcd-cluster"
	DefaultMaxRequestBytes   = 1536 * 1024
	DefaultQuotaBackendBytes = 2 << 30
	DefaultSnapshotCount     = 10000
	DefaultTickMs            = 100
	DefaultElectionTicks     = 10
	DefaultMaxLearners       = 1
	// DefaultSnapshotCatchUpEntries is how much log a compaction keeps
	// behind the applied index, so a follower that lags a little catches up
	// from the log rather than needing a snapshot (etcd's default).
	DefaultSnapshotCatchUpEntries = 5000

	// maxApplyLag is how far the applied index may trail the committed
	// index before new proposals are refused (etcd's limit).
	maxApplyLag = 5000
)

// Initial cluster states (--initial-cluster-state).
const (
	ClusterStateNew      = "new"
	ClusterStateExisting = "existing"
)

// Auto-compaction modes (--auto-compaction-mode).
const (
	CompactionModePeriodic = "periodic"
	CompactionModeRevision = "revision"
)

// Config configures a Server. The zero value of every field but DataDir
// means its default.
type Config struct {
	// Name is the member's human-readable name (default "default").
	Name string
	// DataDir holds the member's engine. Required.
	DataDir string
	// WalDir, when set, keeps the raft log in an engine of its own there
	// (etcd's --wal-dir: a separate disk for the log's fsyncs); empty keeps
	// the log in DataDir's engine. A member refuses to start when the data
	// directory and the log disagree about where the log is.
	WalDir string
	// InitialCluster lists the founding members, etcd's
	// "name=peerURL,name=peerURL" syntax; default Name=PeerURLs. Only read
	// when DataDir is new.
	InitialCluster string
	// InitialClusterState is "new" (default): found the cluster
	// InitialCluster lists, whose every member starts with the same list;
	// or "existing": join a running cluster to which this member was added
	// (MemberAdd), fetching the member list from the peers InitialCluster
	// names. Only read when DataDir is new.
	InitialClusterState string
	// ClusterToken seeds member and cluster IDs (default "etcd-cluster").
	ClusterToken string
	// PeerURLs are this member's advertised peer URLs (default
	// http://localhost:2380).
	PeerURLs []string
	// ClientURLs are this member's advertised client URLs; the member
	// publishes them, with Name, to the member list once it runs, as etcd
	// does.
	ClientURLs []string
	// MaxLearners bounds the learners in the cluster (default 1); a
	// MemberAdd of one more learner fails with
	// membership.ErrTooManyLearners.
	MaxLearners int
	// DisableStrictReconfigCheck turns off etcd's checks that refuse a
	// membership change which could cost the cluster its quorum
	// (--strict-reconfig-check=false).
	DisableStrictReconfigCheck bool

	// MaxRequestBytes limits a marshaled request (default 1.5 MiB).
	MaxRequestBytes uint
	// QuotaBackendBytes is the engine size beyond which writes that add
	// data are refused with ErrNoSpace (default 2 GiB; negative: no quota).
	QuotaBackendBytes int64
	// UnsafeNoFsync skips fsync: a crash may lose acknowledged writes.
	UnsafeNoFsync bool
	// FS is the file system DataDir is on (storage.Options.FS); nil means
	// the operating system's. Crash and fault tests run members on Pebble's
	// crashable in-memory file system or on errorfs.
	FS vfs.FS
	// SnapshotCount is how many applied entries trigger a raft log
	// compaction (default 10,000).
	SnapshotCount uint64
	// SnapshotCatchUpEntries is how many entries a compaction keeps behind
	// the applied index for followers that lag (default 5000); one that
	// lags further catches up from a snapshot.
	SnapshotCatchUpEntries uint64

	// TickMs is the raft tick (heartbeat) interval in milliseconds (default
	// 100); ElectionTicks the election timeout in ticks (default 10).
	TickMs        uint
	ElectionTicks int
	// DisablePreVote turns raft's pre-vote off (--pre-vote=false); it is on
	// by default, as in etcd.
	DisablePreVote bool
	// RequestTimeout bounds how long a request waits for consensus; default
	// etcd's: 5s + 2 × the election timeout.
	RequestTimeout time.Duration

	// AutoCompactionMode is "periodic" (default) or "revision";
	// AutoCompactionRetention is a duration ("1h", or a bare number of
	// hours) in periodic mode and a number of revisions in revision mode.
	// Empty or "0" retention disables auto-compaction.
	AutoCompactionMode      string
	AutoCompactionRetention string

	// WatchProgressNotifyInterval is how often watchers created with
	// progress_notify that saw no events get a progress notification
	// (default 10 minutes, etcd's --watch-progress-notify-interval).
	WatchProgressNotifyInterval time.Duration

	// LeaseCheckpointInterval is how often the leader records, through
	// raft, the remaining TTL of each lease whose TTL is longer than the
	// interval, so that a new leader neither expires it early nor gives it
	// its full TTL again (etcd's lease checkpointing; default 5 minutes,
	// negative turns it off).
	LeaseCheckpointInterval time.Duration

	// AutoPromoteLearners lets the leader promote a learner by itself once
	// its log has caught up (the check MemberPromote makes), which etcd
	// does not do (cairn's --auto-promote-learners; off by default).
	AutoPromoteLearners bool
	// ForceNewCluster makes a member restarted on an existing data
	// directory the only member of its cluster, keeping all its data
	// (etcd's --force-new-cluster; see forcenew.go). It is ignored on a new
	// data directory, as in etcd.
	ForceNewCluster bool
	// CorruptCheckTime, if positive, is how often the leader compares its
	// HashKV with every follower's and raises the CORRUPT alarm on a
	// mismatch (etcd's --corrupt-check-time). CompactHashCheckTime, if
	// positive, is how often the leader compares the hashes members keep
	// at compaction revisions (etcd's --compact-hash-check-time).
	CorruptCheckTime, CompactHashCheckTime time.Duration
	// InitialCorruptCheck makes a restarting member compare its HashKV with
	// its peers' before it serves, and refuse to start on a mismatch
	// (etcd's feature gate InitialCorruptCheck).
	InitialCorruptCheck bool
	// AuthToken is etcd's --auth-token: "simple" (the default when empty)
	// or "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=..." (see
	// auth.NewTokenProvider). AuthTokenTTL is --auth-token-ttl, the life
	// of a simple token since its last use (default 300 s). BcryptCost is
	// --bcrypt-cost (default 10), the cost of hashing new passwords.
	AuthToken    string
	AuthTokenTTL time.Duration
	BcryptCost   int
	// ClientCertAuth is --client-cert-auth: a request without a token runs
	// as the CN of its verified client certificate, which the api passes
	// in with WithCredentials.
	ClientCertAuth bool
	// AuditLog is --audit-log: the file the member writes its audit log
	// to ("" for none; see package audit). AuditLogMaxBytes and
	// AuditLogMaxFiles are its rotation (0: audit's defaults, 100 MiB and
	// 5 files; MaxFiles below 0 keeps no old file).
	AuditLog         string
	AuditLogMaxBytes int64
	AuditLogMaxFiles int

	// Logger receives the member's log; nil discards it.
	Logger *slog.Logger
	// Metrics, if set, gets the member's Prometheus collectors (etcd's
	// metric names).
	Metrics prometheus.Registerer
	// Clock drives timeouts, auto-compaction and raft ticks; nil is the
	// wall clock. Tests inject a fake one.
	Clock clock.Clock

	// PeerTLS is the client TLS configuration for https:// peer URLs (the
	// transport and the member's own requests to peers); nil uses the
	// system roots. PeerServerTLS is the configuration the peer listener
	// serves with: when set, PeerHandler refuses plaintext raft traffic.
	PeerTLS, PeerServerTLS *tls.Config
	// NewTransport, if set, builds the peer transport instead of
	// transport.New, from the configuration New would have used (tests run
	// members over a simulated network with it).
	NewTransport func(transport.Config) PeerTransport
	// PeerRoundTripper carries the member's own requests to its peers (the
	// member list when joining, learner promotions forwarded to the
	// leader); nil uses an HTTP/1.1 client with PeerTLS.
	PeerRoundTripper http.RoundTripper
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.DataDir == "" {
		return c, errors.New("server: DataDir is required")
	}
	if c.WalDir != "" && filepath.Clean(c.WalDir) == filepath.Clean(c.DataDir) {
		// Two engines cannot share a directory (each locks its own);
		// leaving WalDir empty is what keeps the log there.
		return c, fmt.Errorf("server: --wal-dir %q is the data directory: give another directory, or none to keep the raft log in the data directory", c.WalDir)
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if len(c.PeerURLs) == 0 {
		c.PeerURLs = []string{DefaultPeerURL}
	}
	if c.ClusterToken == "" {
		c.ClusterToken = DefaultClusterToken
	}
	switch c.InitialClusterState {
	case "":
		c.InitialClusterState = ClusterStateNew
	case ClusterStateNew, ClusterStateExisting:
	default:
		return c, fmt.Errorf("server: unexpected initial cluster state %q: want %q or %q",
			c.InitialClusterState, ClusterStateNew, ClusterStateExisting)
	}
	if c.MaxLearners == 0 {
		c.MaxLearners = DefaultMaxLearners
	}
	if c.SnapshotCatchUpEntries == 0 {
		c.SnapshotCatchUpEntries = DefaultSnapshotCatchUpEntries
	}
	if c.InitialCluster == "" {
		parts := make([]string, len(c.PeerURLs))
		for i, u := range c.PeerURLs {
			parts[i] = c.Name + "=" + u
		}
		c.InitialCluster = strings.Join(parts, ",")
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = DefaultSnapshotCount
	}
	if c.TickMs == 0 {
		c.TickMs = DefaultTickMs
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5*time.Second + 2*time.Duration(c.ElectionTicks)*time.Duration(c.TickMs)*time.Millisecond
	}
	if c.AutoCompactionMode == "" {
		c.AutoCompactionMode = CompactionModePeriodic
	}
	if _, err := parseRetention(c.AutoCompactionMode, c.AutoCompactionRetention); err != nil {
		return c, err
	}
	if c.AuthToken == "" {
		c.AuthToken = "simple"
	}
	if c.BcryptCost == 0 {
		c.BcryptCost = auth.DefaultBcryptCost
	}
	if c.BcryptCost < bcrypt.MinCost || c.BcryptCost > bcrypt.MaxCost {
		return c, fmt.Errorf("server: invalid --bcrypt-cost %d: want %d..%d", c.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return c, nil
}

// parseRetention reads --auto-compaction-retention as etcd does: a bare
// non-negative integer is hours (periodic) or revisions (revision);
// anything else must be a Go duration and is only meaningful for periodic
// mode. Zero disables auto-compaction.
func parseRetention(mode, retention string) (time.Duration, error) {
	if retention == "" {
		retention = "0"
	}
	switch mode {
	case CompactionModePeriodic, CompactionModeRevision:
	default:
		return 0, fmt.Errorf("server: unknown auto-compaction mode %q", mode)
	}
	if n, err := strconv.Atoi(retention); err == nil && n >= 0 {
		if mode == CompactionModeRevision {
			return time.Duration(n), nil
		}
		return time.Duration(n) * time.Hour, nil
	}
	d, err := time.ParseDuration(retention)
	if err != nil {
		return 0, fmt.Errorf("server: error parsing auto-compaction retention: %w", err)
	}
	if d < 0 {
		return 0, fmt.Errorf("server: negative auto-compaction retention %q", retention)
	}
	return d, nil
}
