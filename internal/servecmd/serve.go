package servecmd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/version"

	"github.com/cairn-db/cairn/internal/api"
	"github.com/cairn-db/cairn/internal/embed"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/storage"
)

// cairnVersion is cairn's own version; a release build sets it with
// -ldflags "-X github.com/cairn-db/cairn/internal/servecmd.cairnVersion=...".
var cairnVersion = "0.1.0"

// Command returns the root command: `cairn` with no subcommand runs a
// member. It takes etcd's server flags by their etcd names, and a
// CAIRN_<FLAG> environment variable for each (CAIRN_DATA_DIR for
// --data-dir), the flag winning over the variable. etcd's flags that cairn
// does not implement yet are accepted with a warning; an unknown flag is an
// error. SIGINT and SIGTERM stop the member gracefully. The command takes
// its arguments from os.Args; cmd/cairn adds the subcommands to it.
func Command() *cobra.Command {
	cmd, flags := newServeCommandFlags()
	// etcd (Go's flag package) also takes -name and -data-dir=x.
	cmd.SetArgs(normalizeArgs(flags.fs, os.Args[1:]))
	return cmd
}

// Main runs Command as a program's main function would and returns the
// exit status: 0 when the member stopped cleanly, 1 otherwise (the error
// has been printed).
func Main() int {
	if err := Command().Execute(); err != nil {
		return 1
	}
	return 0
}

// newServeCommandFlags builds the command and returns its flags with it, for
// tests to inspect.
func newServeCommandFlags() (*cobra.Command, *serveFlags) {
	var flags *serveFlags
	cmd := &cobra.Command{
		Use:   "cairn",
		Short: "cairn is a strongly consistent key-value store that speaks etcd's v3 API",
		Long: `cairn is a strongly consistent, distributed key-value store that speaks
etcd's v3 API: etcd clients, etcdctl and Kubernetes work against it unchanged.

Run with no subcommand, it serves as a member, taking etcd's server flags
(cairn --name infra1 --data-dir /var/lib/cairn ...) or the matching CAIRN_*
environment variables (CAIRN_NAME, CAIRN_DATA_DIR, ...).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd, flags, os.Environ())
		},
	}
	flags = newServeFlags(cmd.Flags())
	return cmd, flags
}

// runServe turns the parsed flags into a member and runs it until a signal
// or a fatal error.
func runServe(cmd *cobra.Command, flags *serveFlags, environ []string) error {
	if flags.printVersion {
		printVersion(cmd.OutOrStdout())
		return nil
	}
	flags, notes, err := resolveFlags(flags, environ)
	if err != nil {
		return err
	}
	cfg, err := flags.config()
	if err != nil {
		return err
	}
	lg, closeLog, err := newLogger(cfg, flags.logOutputs, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer closeLog()
	cfg.Logger = lg
	for _, n := range notes {
		lg.Warn(n)
	}
	for _, w := range flags.warnings() {
		lg.Warn(w)
	}
	if cfg.Name == embed.DefaultName {
		lg.Warn("it isn't recommended to use the default name; set --name (members with the same name confuse cluster membership)")
	}
	lg.Info("starting cairn", "version", cairnVersion, "etcd-api-version", api.EtcdVersion, "go-version", runtime.Version(),
		"name", cfg.Name, "data-dir", cfg.DataDir, "listen-client-urls", cfg.ListenClientURLs)
	lg.Info("effective configuration", configSummary(cfg)...)

	// Signals are caught before the member serves, so one that arrives
	// once clients can reach it always means a graceful stop.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	m, err := embed.Start(cfg)
	if err != nil {
		err = startError(cfg.DataDir, err)
		lg.Error("failed to start the member", "error", err)
		return err
	}
	select {
	case sig := <-sigs:
		lg.Info("received signal; shutting down", "signal", sig.String())
		go func() {
			// A second signal means the operator will not wait.
			sig := <-sigs
			lg.Warn("received a second signal; exiting without a graceful shutdown", "signal", sig.String())
			os.Exit(1)
		}()
		return m.Close()
	case err := <-m.Err():
		if errors.Is(err, server.ErrRemoved) {
			// Removed from the cluster: its work is done, and etcd exits
			// with status 0 then too.
			lg.Warn("the member has been permanently removed from the cluster; exiting")
			m.Close()
			return nil
		}
		lg.Error("member failed; shutting down", "error", err)
		m.Close()
		return err
	}
}

// startError turns the error that kept the member from starting on
// dataDir into the message the operator reads: what is wrong, where, and
// what to do. A full device is fatal at start (storage.Open cannot recover
// its write-ahead log, and leaves the attempt parked, so the process must
// exit): the message names the directory and the remedy.
func startError(dataDir string, err error) error {
	switch {
	case errors.Is(err, storage.ErrLocked):
		return fmt.Errorf("data directory %s is in use by another process (is another cairn member running on it?)", dataDir)
	case errors.Is(err, storage.ErrNoSpace), errors.Is(err, storage.ErrBackground):
		// storage's message names the directory, the cause and the remedy.
		return err
	case storage.IsNoSpace(err):
		return fmt.Errorf("cannot open data directory %s: the device holding it is full: %w; "+
			"free space on that device (or move the data directory to a larger one) and restart", dataDir, err)
	}
	return err
}

// configSummary is the effective configuration as one log line's
// attributes, defaults resolved, as etcd logs it when it starts: the
// settings an operator checks first when a member misbehaves.
func configSummary(cfg *embed.Config) []any {
	dataDir := cfg.DataDir
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	walDir := dataDir // the raft log stays in the data directory's engine
	if cfg.WalDir != "" {
		walDir = cfg.WalDir
		if abs, err := filepath.Abs(walDir); err == nil {
			walDir = abs
		}
	}
	quota := any(cfg.QuotaBackendBytes)
	switch {
	case cfg.QuotaBackendBytes == 0:
		quota = int64(server.DefaultQuotaBackendBytes)
	case cfg.QuotaBackendBytes < 0:
		quota = "none"
	}
	return []any{
		"data-dir", dataDir,
		"wal-dir", walDir,
		"quota-backend-bytes", quota,
		"heartbeat-interval", (time.Duration(cfg.HeartbeatMs) * time.Millisecond).String(),
		"election-timeout", (time.Duration(cfg.ElectionMs) * time.Millisecond).String(),
		"snapshot-count", cfg.SnapshotCount,
		"snapshot-catchup-entries", cfg.SnapshotCatchUpEntries,
		"max-request-bytes", cfg.MaxRequestBytes,
		"max-txn-ops", cfg.MaxTxnOps,
		"max-learners", cfg.MaxLearners,
		"pre-vote", cfg.PreVote,
		"strict-reconfig-check", cfg.StrictReconfigCheck,
		"auto-compaction-mode", cfg.AutoCompactionMode,
		"auto-compaction-retention", cfg.AutoCompactionRetention,
		"auto-promote-learners", cfg.AutoPromoteLearners,
		"initial-cluster-state", cfg.InitialClusterState,
		"unsafe-no-fsync", cfg.UnsafeNoFsync,
	}
}

// resolveFlags completes the parsed command line with the environment, or,
// when a configuration file is named (--config-file or CAIRN_CONFIG_FILE),
// replaces both with the file, as etcd does. It returns the flags to use and
// notes to log.
func resolveFlags(flags *serveFlags, environ []string) (*serveFlags, []string, error) {
	path := flags.configFile
	if path == "" {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, envName("config-file")+"="); ok {
				path = v
			}
		}
	}
	if path == "" {
		notes, err := flags.applyEnv(environ)
		return flags, notes, err
	}
	_, fromFile := newServeCommandFlags()
	notes, err := fromFile.loadConfigFile(path)
	if err != nil {
		return nil, notes, err
	}
	notes = append(notes, fmt.Sprintf("loaded server configuration from %s; other command line flags and environment variables are ignored", path))
	return fromFile, notes, nil
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "cairn Version: %s\n", cairnVersion)
	fmt.Fprintf(w, "API Version: %s (etcd %s)\n", version.APIVersion, api.EtcdVersion)
	fmt.Fprintf(w, "Go Version: %s\n", runtime.Version())
	fmt.Fprintf(w, "Go OS/Arch: %s/%s\n", runtime.GOOS, runtime.GOARCH)
}

// newLogger builds the member's logger from --log-level, --log-format and
// --log-outputs: "default" and "stderr" are standard error, "stdout"
// standard output, anything else a file appended to.
func newLogger(cfg *embed.Config, outputs []string, stderr io.Writer) (*slog.Logger, func(), error) {
	var (
		writers []io.Writer
		files   []*os.File
	)
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, o := range outputs {
		switch o {
		case "default", "stderr":
			writers = append(writers, stderr)
		case "stdout":
			writers = append(writers, os.Stdout)
		default:
			f, err := os.OpenFile(o, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("--log-outputs: %w", err)
			}
			files = append(files, f)
			writers = append(writers, f)
		}
	}
	if len(writers) == 0 {
		writers = append(writers, stderr)
	}
	lg, err := embed.NewLogger(io.MultiWriter(writers...), cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return lg, closeAll, nil
}
