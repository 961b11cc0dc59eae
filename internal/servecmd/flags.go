package servecmd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cairn-db/cairn/internal/embed"
)

// envPrefix is the prefix of the environment variables that set flags:
// --data-dir is CAIRN_DATA_DIR, as etcd reads ETCD_DATA_DIR.
const envPrefix = "CAIRN"

// serveFlags are etcd's server flags, bound to an embed.Config where cairn
// implements them and kept aside where it only accepts them.
type serveFlags struct {
	fs  *pflag.FlagSet
	cfg *embed.Config

	dataDir             string
	logOutputs          []string
	initialClusterState string
	metrics             string
	configFile          string
	printVersion        bool
	// fromFile is set when the flags came from a configuration file.
	fromFile bool
	recovery recoveryFlags

	// notImplemented are etcd flags cairn accepts and does not act on yet;
	// setting one logs a warning. legacy are the flags etcd itself accepts
	// and ignores.
	notImplemented map[string]bool
	legacy         map[string]bool
	// refused are the security-relevant etcd flags cairn does not
	// implement, with the reason: a value that asks for the setting
	// refuses to start (see refusals), where ignoring it would leave open
	// what the operator meant to close.
	refused map[string]string
}

// notImplementedUsage marks, in --help, the flags cairn only accepts;
// refusedUsage those it refuses to start with.
const (
	notImplementedUsage = " (accepted for etcd compatibility; not implemented yet)"
	refusedUsage        = " (not implemented: cairn refuses to start when it is set)"
)

func newServeFlags(fs *pflag.FlagSet) *serveFlags {
	f := &serveFlags{
		fs:             fs,
		cfg:            embed.NewConfig(),
		notImplemented: make(map[string]bool),
		legacy:         make(map[string]bool),
		refused:        make(map[string]string),
	}
	c := f.cfg

	// Member.
	fs.StringVar(&c.Name, "name", c.Name, "Human-readable name for this member.")
	fs.StringVar(&f.dataDir, "data-dir", "", `Path to the data directory (default "<name>.cairn").`)
	fs.StringVar(&c.WalDir, "wal-dir", c.WalDir, "Path to a dedicated directory for the raft log (default: inside the data directory).")
	fs.Uint64Var(&c.SnapshotCount, "snapshot-count", c.SnapshotCount, "Number of committed transactions to trigger a raft log compaction.")
	fs.UintVar(&c.HeartbeatMs, "heartbeat-interval", c.HeartbeatMs, "Time (in milliseconds) of a heartbeat interval.")
	fs.UintVar(&c.ElectionMs, "election-timeout", c.ElectionMs, "Time (in milliseconds) for an election to timeout.")
	fs.Int64Var(&c.QuotaBackendBytes, "quota-backend-bytes", c.QuotaBackendBytes, "Maximum size (in bytes) the database may take before writes are refused and the NOSPACE alarm raised. 0 means the default 2GiB limit.")
	fs.UintVar(&c.MaxTxnOps, "max-txn-ops", c.MaxTxnOps, "Maximum number of operations permitted in a transaction.")
	fs.UintVar(&c.MaxRequestBytes, "max-request-bytes", c.MaxRequestBytes, "Maximum client request size in bytes the server will accept.")
	fs.DurationVar(&c.GRPC.KeepAliveMinTime, "grpc-keepalive-min-time", c.GRPC.KeepAliveMinTime, "Minimum interval duration that a client should wait before pinging server.")
	fs.DurationVar(&c.GRPC.KeepAliveInterval, "grpc-keepalive-interval", c.GRPC.KeepAliveInterval, "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).")
	fs.DurationVar(&c.GRPC.KeepAliveTimeout, "grpc-keepalive-timeout", c.GRPC.KeepAliveTimeout, "Additional duration of wait before closing a non-responsive connection (0 to disable).")
	fs.Uint32Var(&c.GRPC.MaxConcurrentStreams, "max-concurrent-streams", 0, "Maximum concurrent streams that each client can open at a time (0: unlimited).")
	fs.Var(&urlList{v: &c.ListenClientURLs}, "listen-client-urls", "List of URLs to listen on for client grpc and http traffic.")
	fs.Var(&urlList{v: &c.AdvertiseClientURLs}, "advertise-client-urls", "List of this member's client URLs to advertise to the public.")
	fs.Var(&urlList{v: &c.ListenClientHTTPURLs}, "listen-client-http-urls", "List of URLs to listen on for http only client traffic. Enabling this flag removes http services from --listen-client-urls.")
	fs.Var(&urlList{v: &c.ListenMetricsURLs}, "listen-metrics-urls", "List of URLs to listen on for the metrics and health endpoints.")

	// Clustering: these found the cluster and derive the member's ID.
	c.ListenPeerURLs = []string{embed.DefaultListenPeerURL}
	fs.Var(&urlList{v: &c.ListenPeerURLs}, "listen-peer-urls", "List of URLs to listen on for peer traffic.")
	fs.Var(&urlList{v: &c.InitialAdvertisePeerURLs}, "initial-advertise-peer-urls", "List of this member's peer URLs to advertise to the rest of the cluster.")
	fs.StringVar(&c.InitialCluster, "initial-cluster", "", `Initial cluster configuration for bootstrapping (default "<name>=<initial-advertise-peer-urls>").`)
	fs.StringVar(&c.InitialClusterToken, "initial-cluster-token", c.InitialClusterToken, "Initial cluster token for the cluster during bootstrap.")
	fs.StringVar(&f.initialClusterState, "initial-cluster-state", embed.ClusterStateNew, "Initial cluster state ('new' when bootstrapping a new cluster or 'existing' when adding new members to an existing cluster).")
	fs.BoolVar(&c.PreVote, "pre-vote", c.PreVote, "Enable the raft Pre-Vote algorithm to prevent disruption when a node that has been partitioned away rejoins the cluster.")
	fs.IntVar(&c.MaxLearners, "max-learners", c.MaxLearners, "Sets the maximum number of learners that can be available in the cluster membership.")
	fs.BoolVar(&c.StrictReconfigCheck, "strict-reconfig-check", c.StrictReconfigCheck, "Reject reconfiguration requests that would cause quorum loss.")
	fs.Uint64Var(&c.SnapshotCatchUpEntries, "snapshot-catchup-entries", c.SnapshotCatchUpEntries, "Number of entries for a slow follower to catch-up after compacting the raft storage entries.")
	fs.BoolVar(&c.AutoPromoteLearners, "auto-promote-learners", false, "cairn only: the leader promotes a learner to a voting member by itself once its log has caught up (the check member promote makes).")

	// Client security.
	fs.StringVar(&c.ClientTLS.CertFile, "cert-file", "", "Path to the client server TLS cert file.")
	fs.StringVar(&c.ClientTLS.KeyFile, "key-file", "", "Path to the client server TLS key file.")
	fs.BoolVar(&c.ClientTLS.ClientCertAuth, "client-cert-auth", false, "Enable client cert authentication.")
	fs.StringVar(&c.ClientTLS.TrustedCAFile, "trusted-ca-file", "", "Path to the client server TLS trusted CA cert file.")
	fs.StringSliceVar(&c.ClientTLS.CipherSuites, "cipher-suites", nil, "Comma-separated list of supported TLS cipher suites between client/server (empty will be auto-populated by Go).")
	fs.StringVar(&c.ClientTLS.MinVersion, "tls-min-version", "TLS1.2", "Minimum TLS version supported. Possible values: TLS1.2, TLS1.3.")
	fs.StringVar(&c.ClientTLS.MaxVersion, "tls-max-version", "", "Maximum TLS version supported. Possible values: TLS1.2, TLS1.3 (empty defers to Go).")
	fs.StringVar(&c.ClientTLS.ClientCertFile, "client-cert-file", "", "Path to an explicit client TLS cert file; checked as etcd checks it but never presented: etcd's JSON gateway dials the member with it, cairn's reaches the member over a private unix socket, so no gateway request runs as its CN.")
	fs.StringVar(&c.ClientTLS.ClientKeyFile, "client-key-file", "", "Path to an explicit client TLS key file; see --client-cert-file.")
	fs.StringVar(&c.ClientTLS.CRLFile, "client-crl-file", "", "Path to the client certificate revocation list file.")
	fs.StringSliceVar(&c.ClientTLS.AllowedHostnames, "client-cert-allowed-hostname", nil, "Comma-separated list of allowed SAN hostnames for client cert authentication.")
	fs.StringSliceVar(&c.ClientTLS.AllowedCNs, "client-cert-allowed-cn", nil, "Comma-separated list of allowed CNs for client cert authentication (etcd's client-transport-security allowed-cn).")
	fs.Lookup("client-cert-allowed-cn").Hidden = true // etcd has it in the configuration file only
	fs.BoolVar(&c.ClientAutoTLS, "auto-tls", false, "Client TLS using generated certificates.")

	// Peer security.
	fs.StringVar(&c.PeerTLS.CertFile, "peer-cert-file", "", "Path to the peer server TLS cert file.")
	fs.StringVar(&c.PeerTLS.KeyFile, "peer-key-file", "", "Path to the peer server TLS key file.")
	fs.StringVar(&c.PeerTLS.ClientCertFile, "peer-client-cert-file", "", "Path to an explicit peer client TLS cert file otherwise peer cert file will be used when client auth is required.")
	fs.StringVar(&c.PeerTLS.ClientKeyFile, "peer-client-key-file", "", "Path to an explicit peer client TLS key file otherwise peer key file will be used when client auth is required.")
	fs.BoolVar(&c.PeerTLS.ClientCertAuth, "peer-client-cert-auth", false, "Enable peer client cert authentication.")
	fs.StringVar(&c.PeerTLS.TrustedCAFile, "peer-trusted-ca-file", "", "Path to the peer server TLS trusted CA file.")
	fs.BoolVar(&c.PeerAutoTLS, "peer-auto-tls", false, "Peer TLS using generated certificates.")
	fs.UintVar(&c.SelfSignedCertValidity, "self-signed-cert-validity", c.SelfSignedCertValidity, "The validity period of the client and peer certificates, unit is year.")
	fs.StringVar(&c.PeerTLS.CRLFile, "peer-crl-file", "", "Path to the peer certificate revocation list file.")
	fs.StringSliceVar(&c.PeerTLS.AllowedCNs, "peer-cert-allowed-cn", nil, "Comma-separated list of allowed CNs for inter-peer TLS authentication.")
	fs.StringSliceVar(&c.PeerTLS.AllowedHostnames, "peer-cert-allowed-hostname", nil, "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication.")
	fs.BoolVar(&c.PeerTLS.SkipClientSANVerify, "peer-skip-client-san-verification", false, "Skip verification of SAN field in client certificate for peer connections.")

	// Logging, compaction, profiling, safety.
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "Configures log level. Only supports debug, info, warn, error, panic, or fatal.")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "Configures log format. Only supports json, console.")
	fs.StringSliceVar(&f.logOutputs, "log-outputs", []string{"default"}, "Specify 'stdout' or 'stderr' (default) or a list of comma separated files to write the log to.")
	fs.StringVar(&c.AutoCompactionRetention, "auto-compaction-retention", c.AutoCompactionRetention, "Auto compaction retention for mvcc key value store. 0 means disable auto compaction.")
	fs.StringVar(&c.AutoCompactionMode, "auto-compaction-mode", c.AutoCompactionMode, "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention.")
	fs.DurationVar(&c.WatchProgressNotifyInterval, "watch-progress-notify-interval", c.WatchProgressNotifyInterval, "Duration of periodic watch progress notifications.")
	fs.BoolVar(&c.EnablePprof, "enable-pprof", false, `Enable runtime profiling data via HTTP server. Address is at client URL + "/debug/pprof/"`)
	fs.BoolVar(&c.UnsafeNoFsync, "unsafe-no-fsync", false, "Disables fsync, unsafe, will cause data loss.")
	fs.BoolVar(&c.EnableGRPCGateway, "enable-grpc-gateway", c.EnableGRPCGateway, "Enable GRPC gateway.")
	fs.StringVar(&f.metrics, "metrics", "basic", "Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics.")

	// Auth.
	fs.StringVar(&c.AuthToken, "auth-token", "simple", "Specify auth token specific options.")
	fs.UintVar(&c.BcryptCost, "bcrypt-cost", 10, "Specify bcrypt algorithm cost factor for auth password hashing.")
	fs.UintVar(&c.AuthTokenTTL, "auth-token-ttl", 300, "The lifetime in seconds of the auth token.")
	fs.StringVar(&c.AuditLog, "audit-log", "", "Write auth changes and requests refused for auth reasons to this file, as JSON lines (cairn's; off by default).")
	fs.Int64Var(&c.AuditLogMaxBytes, "audit-log-max-bytes", 0, "Rotate the audit log when a line would take it past this many bytes (0: 100 MiB).")
	fs.Func("audit-log-max-files", "Rotated audit log files kept, FILE.1 the newest (0: none). (default 5)", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("want a number of files, 0 or more")
		}
		if n == 0 {
			n = -1 // embed.Config's "none"
		}
		c.AuditLogMaxFiles = n
		return nil
	})

	fs.StringVar(&f.configFile, "config-file", "", "Path to the server configuration file (etcd's YAML format). Note that if a configuration file is provided, other command line flags and environment variables will be ignored.")
	fs.BoolVar(&f.printVersion, "version", false, "Print the version and exit.")

	f.addRecovery()
	f.addNotImplemented()
	return f
}

// addNotImplemented registers etcd's other server flags, with etcd's types
// so they parse as in etcd, for a setting that is not acted on.
func (f *serveFlags) addNotImplemented() {
	fs := f.fs
	str := func(name, def string) { fs.String(name, def, ""); f.notImplemented[name] = true }
	boolean := func(name string, def bool) { fs.Bool(name, def, ""); f.notImplemented[name] = true }
	uintF := func(name string, def uint) { fs.Uint(name, def, ""); f.notImplemented[name] = true }
	intF := func(name string, def int) { fs.Int(name, def, ""); f.notImplemented[name] = true }
	dur := func(name string, def time.Duration) { fs.Duration(name, def, ""); f.notImplemented[name] = true }

	uintF("max-snapshots", 5)
	uintF("max-wals", 5)
	boolean("initial-election-tick-advance", true)
	str("backend-bbolt-freelist-type", "map")
	dur("backend-batch-interval", 0)
	intF("backend-batch-limit", 0)
	boolean("socket-reuse-port", false)
	boolean("socket-reuse-address", false)
	dur("raft-read-timeout", 5*time.Second)
	dur("raft-write-timeout", 5*time.Second)

	str("discovery-endpoints", "")
	str("discovery-token", "")
	dur("discovery-dial-timeout", 2*time.Second)
	dur("discovery-request-timeout", 5*time.Second)
	dur("discovery-keepalive-time", 2*time.Second)
	dur("discovery-keepalive-timeout", 6*time.Second)
	boolean("discovery-insecure-transport", true)
	boolean("discovery-insecure-skip-tls-verify", false)
	str("discovery-cert", "")
	str("discovery-key", "")
	str("discovery-cacert", "")
	str("discovery-user", "")
	str("discovery-password", "")
	str("discovery-srv", "")
	str("discovery-srv-name", "")
	str("discovery-fallback", "exit")

	str("cors", "*")
	str("host-whitelist", "*")

	str("logger", "zap")
	boolean("enable-log-rotation", false)
	str("log-rotation-config-json", `{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`)
	boolean("enable-distributed-tracing", false)
	str("distributed-tracing-address", "localhost:4317")
	str("distributed-tracing-service-name", "etcd")
	str("distributed-tracing-instance-id", "")
	intF("distributed-tracing-sampling-rate", 0)
	intF("compaction-batch-limit", 1000)
	dur("compaction-sleep-interval", 10*time.Millisecond)
	dur("downgrade-check-time", 5*time.Second)
	dur("warning-apply-duration", 100*time.Millisecond)
	dur("warning-unary-request-duration", 300*time.Millisecond)
	boolean("memory-mlock", false)
	uintF("bootstrap-defrag-threshold-megabytes", 0)
	str("v2-deprecation", "")

	const noDiscovery = "discovery is not implemented; found the cluster with --initial-cluster, --initial-cluster-state and --initial-cluster-token"
	f.refused["discovery-endpoints"] = noDiscovery
	f.refused["discovery-token"] = noDiscovery
	f.refused["discovery-srv"] = noDiscovery
	f.refused["discovery-srv-name"] = noDiscovery
	f.refused["host-whitelist"] = "cairn does not check the Host header of plaintext HTTP requests; serve the client URLs over https:// (or bind them to a private address) instead"

	for name := range f.notImplemented {
		fl := fs.Lookup(name)
		fl.Usage = "etcd's --" + name + notImplementedUsage
		if _, ok := f.refused[name]; ok {
			fl.Usage = "etcd's --" + name + refusedUsage
		}
	}

	// Flags etcd accepts and ignores (leftovers of etcd v2), accepted here
	// the same way, with or without a value.
	for _, name := range []string{
		"cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
		"max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval", "peer-election-timeout",
		"retry-interval", "snapshot", "v", "vv",
	} {
		fs.String(name, "", "ignored, as in etcd")
		fs.Lookup(name).NoOptDefVal = "true"
		fs.Lookup(name).Hidden = true
		f.legacy[name] = true
	}
}

// envName is the environment variable that sets the flag name.
func envName(name string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its CAIRN_*
// environment variable, if that is set and not empty. A flag given on the
// command line wins over its variable; the variable is then reported as
// shadowed. It returns notes to log (shadowed and unrecognized variables).
func (f *serveFlags) applyEnv(environ []string) (notes []string, err error) {
	known := make(map[string]string) // env name → flag name
	f.fs.VisitAll(func(fl *pflag.Flag) { known[envName(fl.Name)] = fl.Name })
	for _, kv := range environ {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(key, envPrefix+"_") || val == "" {
			continue
		}
		name, isFlag := known[key]
		switch {
		case !isFlag:
			notes = append(notes, fmt.Sprintf("unrecognized environment variable %s", key))
		case f.fs.Changed(name):
			notes = append(notes, fmt.Sprintf("environment variable %s is shadowed by the command-line flag --%s", key, name))
		default:
			if err := f.fs.Set(name, val); err != nil {
				return notes, fmt.Errorf("invalid value %q for %s: %w", val, key, err)
			}
		}
	}
	return notes, nil
}

// warnings lists the flags set (on the command line or through the
// environment) that cairn accepts but does not act on.
func (f *serveFlags) warnings() []string {
	var out []string
	f.fs.Visit(func(fl *pflag.Flag) {
		switch {
		case f.refused[fl.Name] != "":
		case f.notImplemented[fl.Name]:
			out = append(out, fmt.Sprintf("flag --%s is accepted for etcd compatibility but not implemented yet", fl.Name))
		case f.legacy[fl.Name]:
			out = append(out, fmt.Sprintf("flag --%s is ignored, as in etcd", fl.Name))
		}
	})
	return append(out, f.recovery.notes...)
}

// refusals returns an error naming the first refused flag (in name order)
// whose value asks for the setting cairn does not implement: anything but
// its default or empty. nil when there is none.
func (f *serveFlags) refusals() error {
	var err error
	f.fs.VisitAll(func(fl *pflag.Flag) {
		why := f.refused[fl.Name]
		if err != nil || why == "" {
			return
		}
		if v := fl.Value.String(); v != fl.DefValue && v != "" {
			err = fmt.Errorf("--%s=%s is not supported: %s", fl.Name, v, why)
		}
	})
	return err
}

// config finishes the embed.Config from the parsed flags, with etcd's rules
// for the flags that depend on each other. A refused flag (see refusals) is
// an error.
func (f *serveFlags) config() (*embed.Config, error) {
	if err := f.refusals(); err != nil {
		return nil, err
	}
	c := f.cfg
	c.DataDir = f.dataDir
	if c.DataDir == "" {
		c.DataDir = embed.DefaultDataDir(c.Name)
	}
	// As in etcd: explicit listen URLs do not inherit the default
	// advertised ones, which would point clients elsewhere.
	if !f.fromFile && f.fs.Changed("listen-client-urls") && !f.fs.Changed("advertise-client-urls") {
		c.AdvertiseClientURLs = nil
	}
	switch f.initialClusterState {
	case embed.ClusterStateNew, embed.ClusterStateExisting:
		c.InitialClusterState = f.initialClusterState
	default:
		return nil, fmt.Errorf("invalid value %q for --initial-cluster-state: valid values are \"new\" and \"existing\"", f.initialClusterState)
	}
	// As in etcd, any value but "extensive" means basic.
	c.ExtensiveMetrics = f.metrics == "extensive"
	// As in etcd, --tls-min-version, --tls-max-version and --cipher-suites
	// apply to peer connections too.
	c.PeerTLS.MinVersion, c.PeerTLS.MaxVersion = c.ClientTLS.MinVersion, c.ClientTLS.MaxVersion
	c.PeerTLS.CipherSuites = c.ClientTLS.CipherSuites
	if err := f.applyRecovery(c); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// urlList is a comma-separated list of URLs, checked as etcd checks them.
// Setting it replaces the list (etcd's flag does the same).
type urlList struct{ v *[]string }

func (u *urlList) String() string {
	if u.v == nil {
		return ""
	}
	return strings.Join(*u.v, ",")
}

func (u *urlList) Type() string { return "urls" }

func (u *urlList) Set(s string) error {
	var out []string
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		p, err := url.Parse(raw)
		if err != nil {
			return err
		}
		switch p.Scheme {
		case "http", "https":
			if _, _, err := net.SplitHostPort(p.Host); err != nil {
				return fmt.Errorf(`URL address does not have the form "host:port": %s`, raw)
			}
			if p.Path != "" {
				return fmt.Errorf("URL must not contain a path: %s", raw)
			}
		case "unix", "unixs":
		default:
			return fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", raw)
		}
		if !slices.Contains(out, p.String()) {
			out = append(out, p.String())
		}
	}
	if len(out) == 0 {
		return errors.New("no valid URLs given")
	}
	*u.v = out
	return nil
}

// normalizeArgs rewrites etcd's single-dash long flags (-name, -data-dir=x:
// Go's flag package accepts both forms, and etcd deployments use both) to
// the double-dash form pflag reads. It only rewrites names of the serving
// command's flags and stops at the first argument that is not a flag or a
// flag's value (a subcommand) or at "--", so subcommands parse their own
// arguments untouched.
func normalizeArgs(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			return append(out, args[i:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		fl := fs.Lookup(name)
		if fl == nil {
			out = append(out, a)
			continue
		}
		if !strings.HasPrefix(a, "--") {
			a = "-" + a
		}
		out = append(out, a)
		// A flag that takes a value in the next argument: copy it as is.
		if !hasValue && fl.NoOptDefVal == "" && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}
