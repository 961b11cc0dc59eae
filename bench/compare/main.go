// Command compare measures etcd and cairn side by side on this machine, in
// one run, with the same client (`cairn bench`), and prints each figure for
// both with the ratio cairn/etcd: put latency and throughput, linearizable
// and serializable reads, transactions, watch fan-out with 1 to 100,000
// watchers, lease keepalives and lease expiry, memory and disk after loading values, memory during a full-range read,
// what enabling auth costs (--phases auth),
// and restart time. It also measures the disk's own write+fsync time, the
// floor for a durable write.
//
// It lives in a module of its own so that etcd's server, which it builds
// from source with `go build go.etcd.io/etcd/server/v3`, never becomes a
// dependency of cairn itself. See README.md for how to run it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	servers     []string // two of "etcd", "cairn": the columns, in order
	only        string   // if set, the one server measured
	repo        string
	workDir     string
	keep        bool
	etcdBin     string
	cairnBin    string
	benchBin    string
	full        bool
	values      int64
	requests    int64
	maxTime     time.Duration
	watchers    []int         // one watch figure for each count
	leases      int64         // leases in the lease-expiry figure
	leaseTTL    time.Duration // their TTL
	cluster     bool
	restartMiB  int64 // MiB of 1 KiB values in the restart phase
	phases      map[string]bool
	fsyncCount  int
	rounds      int
	jsonOut     string
	verbose     bool
	serverFlags []string
}

// parseWatchers turns --watchers into counts; empty gives the default
// list, which --full extends to DESIGN.md's 100,000.
func parseWatchers(s string, full bool) ([]int, error) {
	if s == "" {
		if full {
			return []int{1, 1000, 10_000, 100_000}, nil
		}
		return []int{1, 1000, 10_000}, nil
	}
	var counts []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--watchers: want positive counts separated by commas, got %q", s)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

func parseFlags() (*options, error) {
	o := &options{}
	var err error
	var servers, serverFlags, watchers string
	flag.StringVar(&servers, "servers", "etcd,cairn", "the two servers to compare, in column order (etcd,etcd checks the tool itself)")
	flag.StringVar(&o.repo, "repo", "../..", "root of the cairn repository")
	flag.StringVar(&o.workDir, "work-dir", "", "directory for binaries, data and logs (default: a new temp dir, removed at the end)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (data dirs and server logs)")
	flag.StringVar(&o.etcdBin, "etcd-bin", "", "use this etcd binary instead of building go.etcd.io/etcd/server/v3")
	flag.StringVar(&o.cairnBin, "cairn-bin", "", "use this cairn binary instead of building ./cmd/cairn")
	flag.StringVar(&o.benchBin, "bench-bin", "", "binary whose `bench` subcommand drives the load (default: the cairn binary)")
	flag.BoolVar(&o.full, "full", false, "the target sizes: 1M values, 200k requests per workload, 100k watchers, 100k leases")
	flag.Int64Var(&o.values, "values", 0, "256-byte values loaded for the memory, disk and restart figures (default 100000, --full 1000000)")
	flag.Int64Var(&o.requests, "requests", 0, "requests per throughput workload (default 20000, --full 200000)")
	flag.DurationVar(&o.maxTime, "max-time", 0, "time limit of each throughput workload (default 20s, --full 2m)")
	flag.StringVar(&watchers, "watchers", "", "comma-separated watcher counts, one watch figure each (default 1,1000,10000; --full adds 100000)")
	flag.Int64Var(&o.leases, "expire-leases", 0, "leases, each with one key, in the lease-expiry figure (default 10000, --full 100000)")
	flag.DurationVar(&o.leaseTTL, "expire-ttl", 0, "TTL of those leases, whole seconds (default: 10s, or 0.6ms per lease if more, so that granting them all ends before the first deadline)")
	flag.StringVar(&o.only, "only", "", "measure only this server's column (the other shows n/a), for figures too slow to take twice, such as --restart-mib 10240")
	flag.BoolVar(&o.cluster, "cluster", false, "also measure 3 members on 127.0.0.1 (adds the cluster phase)")
	phases := flag.String("phases", "kv,data", "phases to run: kv (latency, throughput), data (load, memory, disk, restart), cluster, restart (a member holding --restart-mib of data; --full adds it), auth (put and linearizable range with auth off and on)")
	flag.Int64Var(&o.restartMiB, "restart-mib", 1024, "MiB of 1 KiB values the restart phase loads before restarting the member")
	flag.IntVar(&o.fsyncCount, "fsync-count", 1000, "write+fsync repetitions for the disk figure")
	flag.IntVar(&o.rounds, "rounds", 1, "measure each server this many times, alternating which goes first, and report medians")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.BoolVar(&o.verbose, "v", false, "print each bench command as it runs")
	flag.StringVar(&serverFlags, "server-flags", "", "extra flags for every server, space-separated (both get the same)")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	o.servers = strings.Split(servers, ",")
	if len(o.servers) != 2 {
		return nil, fmt.Errorf("--servers needs two names, got %q", servers)
	}
	for _, s := range o.servers {
		if s != "etcd" && s != "cairn" {
			return nil, fmt.Errorf("--servers: unknown server %q (etcd or cairn)", s)
		}
	}
	if o.only != "" && !slices.Contains(o.servers, o.only) {
		return nil, fmt.Errorf("--only %q is not one of --servers %q", o.only, servers)
	}
	o.serverFlags = strings.Fields(serverFlags)
	o.phases = map[string]bool{"cluster": o.cluster, "restart": o.full}
	for _, p := range strings.Split(*phases, ",") {
		if p != "kv" && p != "data" && p != "cluster" && p != "restart" && p != "auth" {
			return nil, fmt.Errorf("--phases: unknown phase %q (kv, data, cluster, restart or auth)", p)
		}
		o.phases[p] = true
	}
	if o.restartMiB < 1 {
		return nil, fmt.Errorf("--restart-mib must be at least 1, got %d", o.restartMiB)
	}
	if o.rounds < 1 {
		return nil, fmt.Errorf("--rounds must be at least 1, got %d", o.rounds)
	}
	pick := func(v *int64, quick, full int64) {
		if *v == 0 {
			*v = quick
			if o.full {
				*v = full
			}
		}
	}
	pick(&o.values, 100_000, 1_000_000)
	pick(&o.requests, 20_000, 200_000)
	if o.watchers, err = parseWatchers(watchers, o.full); err != nil {
		return nil, err
	}
	pick(&o.leases, 10_000, 100_000)
	if o.leases < 1 {
		return nil, fmt.Errorf("--expire-leases must be at least 1, got %d", o.leases)
	}
	if o.leaseTTL == 0 {
		o.leaseTTL = max(10*time.Second, time.Duration(o.leases)*600*time.Microsecond).Round(time.Second)
	}
	if o.leaseTTL < time.Second || o.leaseTTL%time.Second != 0 {
		return nil, fmt.Errorf("--expire-ttl must be whole seconds, at least 1s, got %v", o.leaseTTL)
	}
	if o.maxTime == 0 {
		o.maxTime = 20 * time.Second
		if o.full {
			o.maxTime = 2 * time.Minute
		}
	}
	return o, nil
}

// running tracks started members so that Ctrl-C stops them before exiting.
var running struct {
	sync.Mutex
	members map[*member]bool
}

func track(m *member, on bool) {
	running.Lock()
	defer running.Unlock()
	if running.members == nil {
		running.members = map[*member]bool{}
	}
	if on {
		running.members[m] = true
	} else {
		delete(running.members, m)
	}
}

func stopAll() {
	running.Lock()
	defer running.Unlock()
	for m := range running.members {
		m.stop()
	}
}

func main() {
	if os.Getenv(floorEnv) != "" {
		if err := serveFloor(); err != nil {
			fmt.Fprintln(os.Stderr, "compare: floor server:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run() error {
	o, err := parseFlags()
	if err != nil {
		return err
	}
	work := o.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "cairn-compare-"); err != nil {
			return err
		}
	}
	if work, err = filepath.Abs(work); err != nil {
		return err
	}
	if !o.keep && o.workDir == "" {
		defer os.RemoveAll(work)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "compare: interrupted, stopping servers")
		stopAll()
		if !o.keep && o.workDir == "" {
			os.RemoveAll(work)
		}
		os.Exit(1)
	}()
	defer stopAll()

	bins, err := build(o, work)
	if err != nil {
		return err
	}
	if !hasBench(bins["bench"]) {
		return fmt.Errorf("%s has no `bench` subcommand: cmd/cairn/main.go must add newBenchCommand() (or pass --bench-bin)", bins["bench"])
	}

	fsync, err := fsyncRate(work, o.fsyncCount)
	if err != nil {
		return fmt.Errorf("measure fsync: %w", err)
	}
	logf("disk: write+fsync of 512 bytes takes %s on average (%.0f/s), %d times in %s",
		fmtMs(fsync.Seconds()), 1/fsync.Seconds(), o.fsyncCount, work)

	res := &results{servers: o.servers, fsync: fsync}
	var failed []error
	for round := range o.rounds {
		// Alternate the order (AB, BA, AB, ...) so that neither server
		// always runs on a colder or busier machine.
		order := []int{0, 1}
		if round%2 == 1 {
			order = []int{1, 0}
		}
		for _, col := range order {
			name := o.servers[col]
			if o.only != "" && name != o.only {
				continue
			}
			dir := filepath.Join(work, fmt.Sprintf("r%d-%d-%s", round, col, name))
			if err := measureServer(o, res, col, round, name, bins[name], bins["bench"], dir); err != nil {
				// Keep the figures gathered so far, and the other column.
				res.notef("%s: stopped: %v", name, err)
				logf("%s: stopped: %v", name, err)
				failed = append(failed, fmt.Errorf("%s: %w", name, err))
			}
			if !o.keep {
				os.RemoveAll(dir)
			}
		}
	}
	if o.phases["kv"] && o.only == "" {
		if err := floorPhase(o, res, bins["bench"]); err != nil {
			res.notef("gRPC floor: %v", err)
			logf("gRPC floor: %v", firstLine(err.Error()))
		}
	}
	res.print(os.Stdout, o)
	if o.jsonOut != "" {
		if err := res.writeJSON(o.jsonOut); err != nil {
			return err
		}
	}
	return errors.Join(failed...)
}

// build compiles whatever binaries were not given: etcd from this module's
// pinned go.etcd.io/etcd/server/v3, cairn from the repository.
func build(o *options, work string) (map[string]string, error) {
	binDir := filepath.Join(work, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	repo, err := filepath.Abs(o.repo)
	if err != nil {
		return nil, err
	}
	bins := map[string]string{"etcd": o.etcdBin, "cairn": o.cairnBin}
	needCairn := o.benchBin == "" || strings.Contains(strings.Join(o.servers, ","), "cairn")
	if bins["etcd"] == "" && strings.Contains(strings.Join(o.servers, ","), "etcd") {
		bins["etcd"] = filepath.Join(binDir, "etcd")
		logf("building etcd (go.etcd.io/etcd/server/v3)")
		if err := goBuild(filepath.Join(repo, "bench", "compare"), bins["etcd"], "go.etcd.io/etcd/server/v3"); err != nil {
			return nil, err
		}
	}
	if bins["cairn"] == "" && needCairn {
		bins["cairn"] = filepath.Join(binDir, "cairn")
		logf("building cairn (./cmd/cairn)")
		if err := goBuild(repo, bins["cairn"], "./cmd/cairn"); err != nil {
			return nil, err
		}
	}
	bins["bench"] = o.benchBin
	if bins["bench"] == "" {
		bins["bench"] = bins["cairn"]
	}
	return bins, nil
}

func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s in %s: %w", pkg, dir, err)
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// startCluster starts n fresh members under dir and waits until each one
// answers a linearizable read.
func startCluster(bin, dir string, n int, flags []string) ([]*member, error) {
	ms, err := newMembers(bin, dir, n, flags)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if err := m.start(); err != nil {
			stopMembers(ms)
			return nil, err
		}
		track(m, true)
	}
	for _, m := range ms {
		if _, err := m.waitReady(time.Now(), 60*time.Second); err != nil {
			stopMembers(ms)
			return nil, err
		}
	}
	return ms, nil
}

func stopMembers(ms []*member) {
	for _, m := range ms {
		m.stop()
		track(m, false)
	}
}

// putKey writes one key through the bench-independent client, for the
// range workloads to read.
func putKey(endpoint, key string, size int) error {
	cli, err := newClient(endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cli.Put(ctx, key, strings.Repeat("v", size))
	return err
}
