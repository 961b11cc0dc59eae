package servecmd

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	etcdembed "go.etcd.io/etcd/server/v3/embed"

	"github.com/cairn-db/cairn/internal/embed"
	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/tests/kit"
)

// parse parses args as the command line and env as the environment, and
// returns the resulting config (or the error), plus the warnings the run
// would log.
func parse(t *testing.T, args []string, env ...string) (*embed.Config, []string, error) {
	t.Helper()
	cmd, f := newServeCommandFlags()
	if err := cmd.ParseFlags(args); err != nil {
		return nil, nil, err
	}
	f, notes, err := resolveFlags(f, env)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := f.config()
	return cfg, append(notes, f.warnings()...), err
}

func TestImplementedFlagsLandInConfig(t *testing.T) {
	cfg, warnings, err := parse(t, []string{
		"--name", "infra1",
		"--data-dir", "/var/lib/x",
		"--wal-dir", "/var/lib/x-wal",
		"--listen-client-urls", "http://127.0.0.1:2379,https://10.0.0.1:2379",
		"--advertise-client-urls", "http://10.0.0.1:2379",
		"--listen-metrics-urls", "http://127.0.0.1:2381",
		"--initial-advertise-peer-urls", "http://10.0.0.1:2380",
		"--initial-cluster", "infra1=http://10.0.0.1:2380",
		"--initial-cluster-token", "tok",
		"--initial-cluster-state", "existing",
		"--listen-peer-urls", "https://127.0.0.1:2380,http://10.0.0.1:2380",
		"--max-learners", "3",
		"--strict-reconfig-check=false",
		"--snapshot-catchup-entries", "700",
		"--peer-cert-file", "p.pem", "--peer-key-file", "pk.pem", "--peer-trusted-ca-file", "pca.pem", "--peer-client-cert-auth",
		"--peer-client-cert-file", "pc.pem", "--peer-client-key-file", "pck.pem",
		"--peer-crl-file", "p.crl", "--peer-cert-allowed-cn", "m1,m2", "--peer-skip-client-san-verification",
		"--client-cert-file", "cc.pem", "--client-key-file", "cck.pem", "--client-crl-file", "c.crl",
		"--client-cert-allowed-hostname", "a.example,b.example",
		"--auto-tls", "--peer-auto-tls", "--self-signed-cert-validity", "3",
		"--max-request-bytes", "1000",
		"--max-txn-ops", "64",
		"--quota-backend-bytes", "4096",
		"--unsafe-no-fsync",
		"--log-level", "debug",
		"--log-format", "console",
		"--auto-compaction-mode", "revision",
		"--auto-compaction-retention", "1000",
		"--snapshot-count", "500",
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--grpc-keepalive-min-time", "1s",
		"--grpc-keepalive-interval", "1m",
		"--grpc-keepalive-timeout", "3s",
		"--max-concurrent-streams", "100",
		"--cert-file", "c.pem", "--key-file", "k.pem", "--trusted-ca-file", "ca.pem", "--client-cert-auth",
		"--tls-min-version", "TLS1.2", "--tls-max-version", "TLS1.3", "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
		"--enable-pprof",
		"--enable-grpc-gateway=false",
		"--watch-progress-notify-interval", "90s",
		"--pre-vote=false",
		"--auth-token", "simple", "--bcrypt-cost", "4", "--auth-token-ttl", "60",
		"--audit-log", "/var/log/audit.log", "--audit-log-max-bytes", "2048", "--audit-log-max-files", "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("implemented flags warned: %v", warnings)
	}
	want := embed.Config{
		Name:                "infra1",
		DataDir:             "/var/lib/x",
		WalDir:              "/var/lib/x-wal",
		ListenClientURLs:    []string{"http://127.0.0.1:2379", "https://10.0.0.1:2379"},
		AdvertiseClientURLs: []string{"http://10.0.0.1:2379"},
		ClientTLS: embed.TLSInfo{CertFile: "c.pem", KeyFile: "k.pem", TrustedCAFile: "ca.pem", ClientCertAuth: true,
			MinVersion: "TLS1.2", MaxVersion: "TLS1.3", CipherSuites: []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"},
			ClientCertFile: "cc.pem", ClientKeyFile: "cck.pem", CRLFile: "c.crl", AllowedHostnames: []string{"a.example", "b.example"}},
		ClientAutoTLS:     true,
		ListenMetricsURLs: []string{"http://127.0.0.1:2381"},
		ListenPeerURLs:    []string{"https://127.0.0.1:2380", "http://10.0.0.1:2380"},
		// The TLS version and cipher flags apply to peers too, as in etcd.
		PeerTLS: embed.TLSInfo{CertFile: "p.pem", KeyFile: "pk.pem", TrustedCAFile: "pca.pem", ClientCertAuth: true,
			MinVersion: "TLS1.2", MaxVersion: "TLS1.3", CipherSuites: []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"},
			ClientCertFile: "pc.pem", ClientKeyFile: "pck.pem", CRLFile: "p.crl", AllowedCNs: []string{"m1", "m2"}, SkipClientSANVerify: true},
		PeerAutoTLS:                 true,
		SelfSignedCertValidity:      3,
		InitialCluster:              "infra1=http://10.0.0.1:2380",
		InitialClusterToken:         "tok",
		InitialAdvertisePeerURLs:    []string{"http://10.0.0.1:2380"},
		InitialClusterState:         "existing",
		MaxLearners:                 3,
		StrictReconfigCheck:         false,
		SnapshotCatchUpEntries:      700,
		MaxRequestBytes:             1000,
		MaxTxnOps:                   64,
		QuotaBackendBytes:           4096,
		UnsafeNoFsync:               true,
		SnapshotCount:               500,
		HeartbeatMs:                 50,
		ElectionMs:                  500,
		AutoCompactionMode:          "revision",
		AutoCompactionRetention:     "1000",
		WatchProgressNotifyInterval: 90 * time.Second,
		AuthToken:                   "simple",
		AuthTokenTTL:                60,
		BcryptCost:                  4,
		AuditLog:                    "/var/log/audit.log",
		AuditLogMaxBytes:            2048,
		AuditLogMaxFiles:            -1,
		GRPC:                        embed.GRPCOptions{MaxConcurrentStreams: 100, KeepAliveMinTime: time.Second, KeepAliveInterval: time.Minute, KeepAliveTimeout: 3 * time.Second},
		EnablePprof:                 true,
		LogLevel:                    "debug",
		LogFormat:                   "console",
	}
	if fmt.Sprintf("%+v", *cfg) != fmt.Sprintf("%+v", want) {
		t.Errorf("config\n got %+v\nwant %+v", *cfg, want)
	}
}

func TestDefaults(t *testing.T) {
	cfg, warnings, err := parse(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "default" || cfg.DataDir != "default.cairn" || !slices.Equal(cfg.ListenClientURLs, []string{"http://localhost:2379"}) ||
		!slices.Equal(cfg.AdvertiseClientURLs, []string{"http://localhost:2379"}) || len(warnings) != 0 ||
		!slices.Equal(cfg.ListenPeerURLs, []string{"http://localhost:2380"}) || !slices.Equal(cfg.InitialAdvertisePeerURLs, []string{"http://localhost:2380"}) ||
		cfg.InitialClusterState != "new" || cfg.InitialClusterToken != "etcd-cluster" || cfg.MaxLearners != 1 ||
		!cfg.StrictReconfigCheck || cfg.SnapshotCatchUpEntries != 5000 {
		t.Errorf("defaults: %+v, warnings %v", cfg, warnings)
	}
	// The data directory follows the name, as etcd's "<name>.etcd" does.
	cfg, _, err = parse(t, []string{"--name", "infra2"})
	if err != nil || cfg.DataDir != "infra2.cairn" {
		t.Errorf("data dir for infra2: %v %v", cfg, err)
	}
}

func TestUnknownFlagIsAnError(t *testing.T) {
	cmd, _ := newServeCommandFlags()
	cmd.SetArgs([]string{"--no-such-flag"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "unknown flag: --no-such-flag") {
		t.Fatalf("got %v", err)
	}
}

func TestEnvironment(t *testing.T) {
	cfg, notes, err := parse(t, nil, "CAIRN_DATA_DIR=/from/env", "CAIRN_NAME=envname", "CAIRN_MAX_TXN_OPS=7", "CAIRN_UNSAFE_NO_FSYNC=true", "PATH=/bin")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/env" || cfg.Name != "envname" || cfg.MaxTxnOps != 7 || !cfg.UnsafeNoFsync || len(notes) != 0 {
		t.Errorf("from the environment: %+v %v", cfg, notes)
	}

	// The flag wins, and the shadowed variable is reported.
	cfg, notes, err = parse(t, []string{"--data-dir", "/from/flag"}, "CAIRN_DATA_DIR=/from/env")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/flag" || len(notes) != 1 || !strings.Contains(notes[0], "CAIRN_DATA_DIR is shadowed by the command-line flag --data-dir") {
		t.Errorf("flag over environment: %s %v", cfg.DataDir, notes)
	}

	_, notes, err = parse(t, nil, "CAIRN_NO_SUCH=1")
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "unrecognized environment variable CAIRN_NO_SUCH") {
		t.Errorf("unknown variable: %v %v", notes, err)
	}
	_, _, err = parse(t, nil, "CAIRN_MAX_TXN_OPS=many")
	if err == nil || !strings.Contains(err.Error(), `invalid value "many" for CAIRN_MAX_TXN_OPS`) {
		t.Errorf("bad value from the environment: %v", err)
	}
	// Environment variables reach the not-implemented flags too, and warn.
	_, notes, err = parse(t, nil, "CAIRN_LOGGER=zap")
	if err != nil || !slices.Contains(notes, "flag --logger is accepted for etcd compatibility but not implemented yet") {
		t.Errorf("not-implemented flag from the environment: %v %v", notes, err)
	}
}

func TestNotImplementedFlagsWarn(t *testing.T) {
	_, warnings, err := parse(t, []string{"--cors", "https://ui.example", "--logger=zap", "--v"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"flag --cors is accepted for etcd compatibility but not implemented yet",
		"flag --logger is accepted for etcd compatibility but not implemented yet",
		"flag --v is ignored, as in etcd",
	}
	if !slices.Equal(warnings, want) {
		t.Errorf("warnings\n got %q\nwant %q", warnings, want)
	}
	// Types are etcd's: a duration flag refuses a non-duration.
	if _, _, err := parse(t, []string{"--raft-read-timeout", "soon"}); err == nil {
		t.Error("--raft-read-timeout=soon accepted")
	}
}

// TestEveryEtcdFlagIsAccepted checks the flag set against etcd 3.7's server
// flags, read from etcd itself (embed.Config.AddFlags) plus the ones its
// main adds: none may be unknown to cairn, and the ones etcd takes without
// a value (booleans) must take none here either.
func TestEveryEtcdFlagIsAccepted(t *testing.T) {
	_, f := newServeCommandFlags()
	efs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	etcdembed.NewConfig().AddFlags(efs)
	n := 0
	efs.VisitAll(func(ef *flag.Flag) {
		n++
		fl := f.fs.Lookup(ef.Name)
		if fl == nil {
			t.Errorf("etcd flag --%s is unknown to cairn", ef.Name)
			return
		}
		bf, isBool := ef.Value.(interface{ IsBoolFlag() bool })
		etcdBool := isBool && bf.IsBoolFlag()
		if etcdBool != (fl.NoOptDefVal == "true") {
			t.Errorf("--%s: etcd boolean %v, cairn takes no value %v", ef.Name, etcdBool, fl.NoOptDefVal == "true")
		}
	})
	if n < 100 {
		t.Fatalf("etcd registered only %d flags", n)
	}
	for _, name := range etcdServerFlags {
		if f.fs.Lookup(name) == nil {
			t.Errorf("etcd flag --%s is unknown to cairn", name)
		}
	}
}

// etcdServerFlags are the flags of etcd 3.7's server (embed.Config.AddFlags
// and etcdmain), written out so that the list stays visible here.
var etcdServerFlags = strings.Fields(`
data-dir wal-dir listen-peer-urls listen-client-urls listen-client-http-urls listen-metrics-urls max-snapshots max-wals
name snapshot-count heartbeat-interval election-timeout initial-election-tick-advance quota-backend-bytes
backend-bbolt-freelist-type backend-batch-interval backend-batch-limit max-txn-ops max-request-bytes
grpc-keepalive-min-time grpc-keepalive-interval grpc-keepalive-timeout socket-reuse-port socket-reuse-address
max-concurrent-streams raft-read-timeout raft-write-timeout initial-advertise-peer-urls advertise-client-urls
discovery-endpoints discovery-token discovery-dial-timeout discovery-request-timeout discovery-keepalive-time
discovery-keepalive-timeout discovery-insecure-transport discovery-insecure-skip-tls-verify discovery-cert
discovery-key discovery-cacert discovery-user discovery-password discovery-srv discovery-srv-name initial-cluster
initial-cluster-token strict-reconfig-check pre-vote cert-file key-file client-cert-file client-key-file
client-cert-auth client-crl-file client-cert-allowed-hostname trusted-ca-file auto-tls peer-cert-file peer-key-file
peer-client-cert-file peer-client-key-file peer-client-cert-auth peer-trusted-ca-file peer-auto-tls
self-signed-cert-validity peer-crl-file peer-cert-allowed-cn peer-cert-allowed-hostname cipher-suites
peer-skip-client-san-verification tls-min-version tls-max-version cors host-whitelist logger log-outputs log-level
log-format enable-log-rotation log-rotation-config-json auto-compaction-retention auto-compaction-mode enable-pprof
metrics enable-distributed-tracing distributed-tracing-address distributed-tracing-service-name
distributed-tracing-instance-id distributed-tracing-sampling-rate auth-token bcrypt-cost auth-token-ttl
enable-grpc-gateway corrupt-check-time compact-hash-check-time compaction-batch-limit compaction-sleep-interval
watch-progress-notify-interval downgrade-check-time warning-apply-duration warning-unary-request-duration
memory-mlock bootstrap-defrag-threshold-megabytes max-learners snapshot-catchup-entries unsafe-no-fsync
force-new-cluster feature-gates config-file discovery-fallback initial-cluster-state v2-deprecation version
cluster-active-size cluster-remove-delay cluster-sync-interval config force max-result-buffer max-retry-attempts
peer-heartbeat-interval peer-election-timeout retry-interval snapshot v vv`)

func TestEtcdRulesBetweenFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--listen-client-urls", "http://127.0.0.1:2379"}, "--advertise-client-urls is required when --listen-client-urls is set explicitly"},
		{[]string{"--listen-client-urls", "tcp://127.0.0.1:2379"}, "URL scheme must be http, https, unix, or unixs: tcp://127.0.0.1:2379"},
		{[]string{"--listen-client-urls", "127.0.0.1:2379"}, "first path segment in URL cannot contain colon"},
		{[]string{"--listen-client-urls", "http://127.0.0.1"}, `URL address does not have the form "host:port": http://127.0.0.1`},
		{[]string{"--advertise-client-urls", "http://h:1/path"}, "URL must not contain a path: http://h:1/path"},
		{[]string{"--election-timeout", "200"}, "--election-timeout[200ms] should be at least as 5 times as --heartbeat-interval[100ms]"},
		{[]string{"--initial-cluster-state", "maybe"}, `invalid value "maybe" for --initial-cluster-state`},
		{[]string{"--listen-peer-urls", "https://127.0.0.1:2380"}, "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://127.0.0.1:2380 with HTTPS scheme"},
		{[]string{"--listen-peer-urls", "unix://peer.sock"}, `listen peer URL "unix://peer.sock": scheme "unix" is not supported (use http or https)`},
		{[]string{"--listen-peer-urls", "http://127.0.0.1:2380/raft"}, "URL must not contain a path: http://127.0.0.1:2380/raft"},
		{[]string{"--max-learners", "-1"}, "--max-learners must be >= 0 (set to -1)"},
		{[]string{"--config-file", "/no/such/etcd.yaml"}, "--config-file: open /no/such/etcd.yaml: no such file or directory"},
		{[]string{"--log-level", "chatty"}, "unknown log level: chatty"},
		{[]string{"--tls-min-version", "TLS1.1"}, `unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)`},
		{[]string{"--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"}, "min version (TLS1.3) is greater than max version (TLS1.2)"},
		{[]string{"--tls-min-version", "TLS1.3", "--cipher-suites", "TLS_AES_128_GCM_SHA256"}, "cipher suites cannot be configured when only TLS1.3 is enabled"},
		{[]string{"--cipher-suites", "ROT13"}, `unexpected TLS cipher suite "ROT13"`},
	}
	for _, tc := range cases {
		_, _, err := parse(t, tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestNormalizeArgs(t *testing.T) {
	_, f := newServeCommandFlags()
	cases := []struct{ in, want string }{
		{"-name n1 -data-dir=/d", "--name n1 --data-dir=/d"},
		{"--name n1 -unsafe-no-fsync -max-txn-ops 3", "--name n1 --unsafe-no-fsync --max-txn-ops 3"},
		{"-name -odd-value -v", "--name -odd-value --v"},
		{"-h", "-h"},
		{"bench put -name x", "bench put -name x"},
		{"-name n1 bench -name x", "--name n1 bench -name x"},
		{"-- -name", "-- -name"},
		{"-unknown x", "-unknown x"},
	}
	for _, tc := range cases {
		got := strings.Join(normalizeArgs(f.fs, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("normalizeArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	cmd, _ := newServeCommandFlags()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 3 || lines[0] != "cairn Version: "+cairnVersion || !strings.HasPrefix(lines[1], "API Version: 3.7 (etcd 3.7.") || !strings.HasPrefix(lines[2], "Go Version: go") {
		t.Errorf("--version printed %q", out.String())
	}
}

func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	eng, err := storage.Open(dir, storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	cmd, _ := newServeCommandFlags()
	cmd.SetArgs([]string{"--data-dir", dir, "--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:0", "--log-level", "error"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	err = cmd.Execute()
	if err == nil || err.Error() != fmt.Sprintf("data directory %s is in use by another process (is another cairn member running on it?)", dir) {
		t.Fatalf("got %v", err)
	}
}

// TestServeUntilSignal runs the command as the binary does, serves a
// request, and stops it with SIGTERM: the command returns without error.
func TestServeUntilSignal(t *testing.T) {
	url := "http://" + freeport.Addr(t)
	cmd, _ := newServeCommandFlags()
	var logs bytes.Buffer
	cmd.SetErr(&logs)
	cmd.SetArgs([]string{"--name", "sig", "--data-dir", filepath.Join(t.TempDir(), "d"), "--listen-client-urls", url,
		"--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:0", "--unsafe-no-fsync", "--log-level", "warn"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(context.Background()) }()

	err := kit.Poll(kit.WaitTimeout, func() error {
		select {
		case err := <-done:
			t.Fatalf("command ended before serving: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get(url + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/health answers %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("no healthy member at %s: %v", url, err)
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	if _, err := http.Get(url + "/health"); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("member still answering after SIGTERM: %v", err)
	}
}

// etcdConfigFile is etcd's sample configuration file format, trimmed to
// keys of every kind: strings, numbers, booleans, URL lists, a list, a
// duration in nanoseconds (as etcd reads it) and the TLS sections.
const etcdConfigFile = `
name: 'infra9'
data-dir: /var/lib/cairn-test
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 8589934592
listen-peer-urls: http://localhost:2380
listen-client-urls: http://127.0.0.1:2379,http://10.0.0.9:2379
max-txn-ops: 256
initial-advertise-peer-urls: http://10.0.0.9:2380
advertise-client-urls: http://10.0.0.9:2379
initial-cluster: infra9=http://10.0.0.9:2380
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
grpc-keepalive-min-time: 3000000000
auto-compaction-mode: revision
auto-compaction-retention: "500"
enable-pprof: true
unsafe-no-fsync: true
log-level: warn
log-outputs: [stderr]
cipher-suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
enable-v2: false
client-transport-security:
  cert-file: /c.pem
  key-file: /k.pem
  client-cert-auth: true
  trusted-ca-file: /ca.pem
  auto-tls: false
peer-transport-security:
  cert-file: /p.pem
  key-file:
`

func TestConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etcd.yaml")
	if err := os.WriteFile(path, []byte(etcdConfigFile), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file wins over the command line and the environment, as in etcd.
	cfg, notes, err := parse(t, []string{"--config-file", path, "--name", "ignored"}, "CAIRN_MAX_TXN_OPS=1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "infra9" || cfg.DataDir != "/var/lib/cairn-test" || cfg.QuotaBackendBytes != 8<<30 || cfg.MaxTxnOps != 256 ||
		!slices.Equal(cfg.ListenClientURLs, []string{"http://127.0.0.1:2379", "http://10.0.0.9:2379"}) ||
		!slices.Equal(cfg.AdvertiseClientURLs, []string{"http://10.0.0.9:2379"}) ||
		cfg.InitialCluster != "infra9=http://10.0.0.9:2380" || cfg.GRPC.KeepAliveMinTime != 3*time.Second ||
		cfg.AutoCompactionMode != "revision" || cfg.AutoCompactionRetention != "500" || !cfg.EnablePprof || !cfg.UnsafeNoFsync ||
		cfg.LogLevel != "warn" || cfg.ClientTLS.CertFile != "/c.pem" || !cfg.ClientTLS.ClientCertAuth || cfg.ClientTLS.TrustedCAFile != "/ca.pem" ||
		!slices.Equal(cfg.ClientTLS.CipherSuites, []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}) ||
		!slices.Equal(cfg.ListenPeerURLs, []string{"http://localhost:2380"}) || cfg.PeerTLS.CertFile != "/p.pem" || cfg.InitialClusterState != "new" {
		t.Errorf("config from file: %+v", cfg)
	}
	for _, want := range []string{
		"unknown key enable-v2 ignored",
		"other command line flags and environment variables are ignored",
	} {
		if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, want) }) {
			t.Errorf("no note %q in %q", want, notes)
		}
	}
	// Named through the environment too.
	cfg, _, err = parse(t, nil, "CAIRN_CONFIG_FILE="+path)
	if err != nil || cfg.Name != "infra9" {
		t.Errorf("config file from CAIRN_CONFIG_FILE: %v %v", cfg, err)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("max-txn-ops: lots\n"), 0o600)
	if _, _, err := parse(t, []string{"--config-file", bad}); err == nil || !strings.Contains(err.Error(), `invalid value "lots" for max-txn-ops`) {
		t.Errorf("bad value in the file: %v", err)
	}
}
