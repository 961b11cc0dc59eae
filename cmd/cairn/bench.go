package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-db/cairn/internal/bench"
)

// benchFlags are the flags every bench subcommand shares.
type benchFlags struct {
	cfg      bench.Config
	output   string
	progress string
	// durationIsWait says that --duration bounds a wait, not the number
	// of requests, so that --duration alone keeps --total's default.
	durationIsWait bool
}

// newBenchCommand returns `cairn bench` and its workloads. They speak the
// etcd v3 API through clientv3, so they measure etcd as well as cairn.
func newBenchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the throughput and latency of a cairn or etcd cluster",
		Long: `Measure the throughput and latency of a cairn or etcd cluster.

Workloads: put, range, txn-put, watch-latency, lease-keepalive and
lease-expire (how fast the server expires leases and deletes their keys).

Each workload runs --clients concurrent clients over --conns connections, each
client issuing one request at a time, until --total requests were issued or
--duration passed, whichever comes first; --duration without --total runs for
that long. With --user, every connection logs in first (one Authenticate
each, before the run) and its requests carry the token, as etcdctl's. It then prints requests/sec, the slowest, fastest and average
latency, the standard deviation, a latency histogram and percentiles; with
--output json it prints the same figures as JSON, in seconds. Ctrl-C stops a
run early and still prints the report of what was done.`,
		Example: `  cairn bench put --clients 100 --conns 10 --total 100000 --val-size 256
  cairn bench range foo --consistency s --clients 50 --duration 30s
  cairn bench watch-latency --streams 100 --watchers-per-stream 100 --put-rate 50
  cairn bench lease-expire --total 10000 --clients 100 --conns 10 --lease-ttl 10
  cairn bench put --endpoints 127.0.0.1:2379 --output json
  cairn bench put --user bench:secret --key-prefix bench/ --clients 100 --conns 10`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(
		newBenchPutCommand(),
		newBenchRangeCommand(),
		newBenchTxnPutCommand(),
		newBenchWatchLatencyCommand(),
		newBenchLeaseKeepaliveCommand(),
		newBenchLeaseExpireCommand(),
	)
	return cmd
}

// addBenchFlags registers the shared flags. What "a request" is differs by
// workload, so each passes its own words for --total and its defaults.
func addBenchFlags(cmd *cobra.Command, f *benchFlags, requests string, withClients bool) {
	f.cfg = bench.DefaultConfig()
	fs := cmd.Flags()
	fs.StringSliceVar(&f.cfg.Endpoints, "endpoints", f.cfg.Endpoints, "comma-separated client addresses (host:port or URL)")
	fs.IntVar(&f.cfg.Conns, "conns", f.cfg.Conns, "number of gRPC connections")
	if withClients {
		fs.IntVar(&f.cfg.Clients, "clients", f.cfg.Clients, "number of concurrent clients, spread over the connections")
	}
	fs.Int64Var(&f.cfg.Total, "total", f.cfg.Total, "number of "+requests+" (0: no limit, --duration must be set)")
	fs.DurationVar(&f.cfg.Duration, "duration", 0, "stop after this long even if --total is not reached (0: no limit)")
	fs.DurationVar(&f.cfg.RequestTimeout, "request-timeout", f.cfg.RequestTimeout, "time limit of each request; slower ones count as errors")
	fs.DurationVar(&f.cfg.DialTimeout, "dial-timeout", f.cfg.DialTimeout, "time limit for connecting")
	fs.StringVar(&f.cfg.User, "user", "", "log in as this user: name:password, or name with --password (as etcdctl)")
	fs.StringVar(&f.cfg.Password, "password", "", "the password of --user, when --user holds only the name")
	fs.StringVar(&f.cfg.KeyPrefix, "key-prefix", "", "prefix of every key written, before the --key-size digits")
	fs.IntVar(&f.cfg.KeySize, "key-size", f.cfg.KeySize, "key size in bytes (keys are zero-padded decimal numbers)")
	fs.IntVar(&f.cfg.ValSize, "val-size", f.cfg.ValSize, "value size in bytes (random bytes, new for each request)")
	fs.Int64Var(&f.cfg.KeySpaceSize, "key-space-size", f.cfg.KeySpaceSize, "number of distinct keys")
	fs.BoolVar(&f.cfg.SequentialKeys, "sequential-keys", false, "use keys in order instead of at random")
	fs.StringVarP(&f.output, "output", "o", "text", "report format: text or json")
	fs.StringVar(&f.progress, "progress", "auto", "progress on stderr: auto (a bar on a terminal, nothing otherwise), bar, lines or none")
}

// run checks the shared flags, runs the workload with Ctrl-C wired to stop
// it, and prints the report to stdout.
func (f *benchFlags) run(cmd *cobra.Command, workload func(context.Context, bench.Config) (*bench.Report, error)) error {
	// Flags are right by now: a failure from here on is not a usage error.
	cmd.SilenceUsage = true
	if cmd.Flags().Changed("duration") && !cmd.Flags().Changed("total") && !f.durationIsWait {
		f.cfg.Total = 0 // --duration alone means: run for that long
	}
	if f.output != "text" && f.output != "json" {
		return fmt.Errorf("bench: --output must be text or json, got %q", f.output)
	}
	mode, err := progressMode(f.progress, os.Stderr)
	if err != nil {
		return err
	}
	f.cfg.Progress, f.cfg.ProgressMode = cmd.ErrOrStderr(), mode
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := workload(ctx, f.cfg)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if f.output == "json" {
		err = r.WriteJSON(out)
	} else {
		err = r.WriteText(out)
	}
	if err != nil {
		return err
	}
	if r.Requests == 0 && r.Errors > 0 {
		return errors.New("bench: every request failed")
	}
	return nil
}

// progressMode turns --progress into a mode; "auto" draws a bar only when
// stderr is a terminal, so a log file does not fill with redraws.
func progressMode(s string, stderr *os.File) (bench.ProgressMode, error) {
	switch s {
	case "auto":
		if fi, err := stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return bench.ProgressBar, nil
		}
		return bench.ProgressNone, nil
	case "bar":
		return bench.ProgressBar, nil
	case "lines":
		return bench.ProgressLines, nil
	case "none":
		return bench.ProgressNone, nil
	}
	return 0, fmt.Errorf("bench: --progress must be auto, bar, lines or none, got %q", s)
}

func newBenchPutCommand() *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "put",
		Short: "Write keys, one put per request",
		Args:  cobra.NoArgs,
	}
	addBenchFlags(cmd, f, "puts", true)
	rate := cmd.Flags().Float64("rate", 0, "maximum puts per second over all clients (0: no limit)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		f.cfg.Rate = *rate
		return f.run(cmd, bench.Put)
	}
	return cmd
}

func newBenchRangeCommand() *cobra.Command {
	f := &benchFlags{}
	var (
		opts        bench.RangeOptions
		consistency string
		rate        float64
	)
	cmd := &cobra.Command{
		Use:   "range <key> [<end-key>]",
		Short: "Read a key or a range of keys, the same range each request",
		Long: `Read a key or a range of keys, the same range each request.

With --prefix, every key starting with <key> is read; an empty <key> ("")
with --prefix reads the whole key space. The report counts the keys returned.`,
		Args: cobra.RangeArgs(1, 2),
	}
	addBenchFlags(cmd, f, "range requests", true)
	fs := cmd.Flags()
	fs.StringVar(&consistency, "consistency", "l", "l for linearizable reads, s for serializable ones")
	fs.BoolVar(&opts.Prefix, "prefix", false, "read every key with the prefix <key>")
	fs.Int64Var(&opts.Limit, "limit", 0, "maximum keys per response (0: no limit)")
	fs.BoolVar(&opts.CountOnly, "count-only", false, "return only the number of keys")
	fs.Float64Var(&rate, "rate", 0, "maximum requests per second over all clients (0: no limit)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		switch strings.ToLower(consistency) {
		case "l", "linearizable":
		case "s", "serializable":
			opts.Serializable = true
		default:
			return fmt.Errorf("bench: --consistency must be l or s, got %q", consistency)
		}
		opts.Key = args[0]
		if len(args) == 2 {
			opts.End = args[1]
		}
		f.cfg.Rate = rate
		return f.run(cmd, func(ctx context.Context, cfg bench.Config) (*bench.Report, error) {
			return bench.Range(ctx, cfg, opts)
		})
	}
	return cmd
}

func newBenchTxnPutCommand() *cobra.Command {
	f := &benchFlags{}
	var (
		opts bench.TxnPutOptions
		rate float64
	)
	cmd := &cobra.Command{
		Use:   "txn-put",
		Short: "Write keys in transactions of --txn-ops puts each",
		Args:  cobra.NoArgs,
	}
	addBenchFlags(cmd, f, "transactions", true)
	cmd.Flags().IntVar(&opts.OpsPerTxn, "txn-ops", 1, "puts per transaction, on distinct keys")
	cmd.Flags().Float64Var(&rate, "rate", 0, "maximum transactions per second over all clients (0: no limit)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		f.cfg.Rate = rate
		return f.run(cmd, func(ctx context.Context, cfg bench.Config) (*bench.Report, error) {
			return bench.TxnPut(ctx, cfg, opts)
		})
	}
	return cmd
}

func newBenchWatchLatencyCommand() *cobra.Command {
	f := &benchFlags{}
	var (
		opts    bench.WatchOptions
		putRate float64
	)
	cmd := &cobra.Command{
		Use:   "watch-latency",
		Short: "Measure how long a put takes to reach every watcher of its key",
		Long: `Measure how long a put takes to reach every watcher of its key.

--streams watch streams (spread over --conns connections) each carry
--watchers-per-stream watchers of one key; once all are in place, one client
puts that key --total times at --put-rate puts per second. Each event's
latency runs from the start of its put to its arrival at a watcher, so the
report has one sample per put and watcher. Events still missing
--request-timeout after the last put count as errors.`,
		Args: cobra.NoArgs,
	}
	addBenchFlags(cmd, f, "puts", false)
	fs := cmd.Flags()
	fs.Lookup("total").DefValue = "100"
	f.cfg.Total = 100
	fs.IntVar(&opts.Streams, "streams", 10, "number of watch streams")
	fs.IntVar(&opts.WatchersPerStream, "watchers-per-stream", 10, "number of watchers on each stream")
	fs.Float64Var(&putRate, "put-rate", 100, "puts per second (0: as fast as one client can)")
	fs.BoolVar(&opts.PrevKV, "prev-kv", false, "ask for the previous key-value with each event")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		f.cfg.Rate = putRate
		return f.run(cmd, func(ctx context.Context, cfg bench.Config) (*bench.Report, error) {
			return bench.WatchLatency(ctx, cfg, opts)
		})
	}
	return cmd
}

func newBenchLeaseKeepaliveCommand() *cobra.Command {
	f := &benchFlags{}
	var (
		opts bench.LeaseOptions
		rate float64
	)
	cmd := &cobra.Command{
		Use:   "lease-keepalive",
		Short: "Renew leases, one keepalive round trip per request",
		Long: `Renew leases, one keepalive round trip per request.

--leases leases are granted first (one per client by default); then each
client keeps one keepalive stream open and renews the leases round-robin, one
renewal at a time. The leases are revoked at the end.`,
		Args: cobra.NoArgs,
	}
	addBenchFlags(cmd, f, "keepalives", true)
	fs := cmd.Flags()
	fs.IntVar(&opts.Leases, "leases", 0, "number of leases (0: one per client)")
	fs.Int64Var(&opts.TTL, "lease-ttl", 60, "time to live of each lease in seconds")
	fs.Float64Var(&rate, "rate", 0, "maximum keepalives per second over all clients (0: no limit)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if opts.Leases == 0 {
			opts.Leases = f.cfg.Clients
		}
		f.cfg.Rate = rate
		return f.run(cmd, func(ctx context.Context, cfg bench.Config) (*bench.Report, error) {
			return bench.LeaseKeepalive(ctx, cfg, opts)
		})
	}
	return cmd
}

func newBenchLeaseExpireCommand() *cobra.Command {
	f := &benchFlags{durationIsWait: true}
	var opts bench.LeaseExpireOptions
	cmd := &cobra.Command{
		Use:   "lease-expire",
		Short: "Measure how fast leases expire and their keys go",
		Long: `Measure how fast leases expire and their keys go.

--clients clients (over --conns connections) grant --total leases of
--lease-ttl seconds, each followed by a put of one key (--val-size bytes)
attached to it. A lease's deadline is the time its grant was answered plus
the TTL the server granted (etcd raises a TTL below its minimum). Then one
client counts the keys left with a count-only range every --poll-interval,
from a second before the first deadline, until none is left.

The report has one latency per lease: from the k-th deadline to the first
count that found k keys gone. Leases/sec is the expiry throughput: the leases
over the time from the first deadline until the last key was gone; if the
server keeps pace, that is just the rate they were granted at. Its counters
say how long the grants took (setup_us), how far apart the deadlines were
(deadline_spread_us), how long after the last deadline the last key went
(drain_us), and how many deadlines passed before all leases were granted
(expired_during_setup: if not 0, give a longer --lease-ttl). Keys still there
--duration after the last deadline count as errors, and their leases are
revoked.`,
		Args: cobra.NoArgs,
	}
	addBenchFlags(cmd, f, "leases", true)
	fs := cmd.Flags()
	total := fs.Lookup("total")
	total.DefValue, total.Usage = "1000", "number of leases, each with one key attached"
	f.cfg.Total = 1000
	// The keys are the run's own, one per lease.
	for _, name := range []string{"key-prefix", "key-size", "key-space-size", "sequential-keys"} {
		fs.MarkHidden(name)
	}
	f.cfg.Duration = 5 * time.Minute
	d := fs.Lookup("duration")
	d.DefValue, d.Usage = "5m0s", "how long to wait after the last deadline for the keys to go (0: no limit)"
	fs.Int64Var(&opts.TTL, "lease-ttl", 10, "time to live of each lease in seconds; must outlast granting them all")
	fs.DurationVar(&opts.PollInterval, "poll-interval", bench.DefaultExpirePollInterval, "time between two counts of the keys left")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return f.run(cmd, func(ctx context.Context, cfg bench.Config) (*bench.Report, error) {
			return bench.LeaseExpire(ctx, cfg, opts)
		})
	}
	return cmd
}
