package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/bench"
)

func newClient(endpoint string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop(), DialTimeout: time.Second})
}

const mib = 1 << 20

// rangeKey is the key the range workloads read; a 256-byte value like the
// rest of the data.
const rangeKey = "compare/range"

// measureServer runs every figure for one server (column col), each phase
// on fresh members under dir. A workload that fails is noted and skipped,
// so that a server missing one feature still gets the other figures; a
// server that does not start ends its column.
func measureServer(o *options, res *results, col, round int, name, serverBin, benchBin, dir string) error {
	if o.phases["kv"] {
		if err := throughputPhase(o, res, col, name, serverBin, benchBin, filepath.Join(dir, "kv")); err != nil {
			return err
		}
	}
	if o.phases["data"] {
		if err := dataPhase(o, res, col, name, serverBin, benchBin, filepath.Join(dir, "data")); err != nil {
			return err
		}
	}
	if o.phases["restart"] {
		if err := restartPhase(o, res, col, name, serverBin, benchBin, filepath.Join(dir, "restart")); err != nil {
			return err
		}
	}
	if o.phases["auth"] {
		if err := authPhase(o, res, col, round, name, serverBin, benchBin, filepath.Join(dir, "auth")); err != nil {
			return err
		}
	}
	if o.phases["cluster"] {
		if err := clusterPhase(o, res, col, name, serverBin, benchBin, filepath.Join(dir, "cluster")); err != nil {
			return err
		}
	}
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// figureSet says which numbers of a report become rows, under a label.
type figureSet struct {
	label                      string
	throughput, mean, p50, p99 bool
	args                       []string
	// more, if set, adds the workload's own rows from a report without
	// failures.
	more func(res *results, col int, name string, r *bench.Report)
}

func (res *results) record(col int, name string, f figureSet, r *bench.Report, err error) {
	if err != nil {
		res.notef("%s: %s: %v", name, f.label, err)
		logf("%s: %s failed: %v", name, f.label, firstLine(err.Error()))
		return
	}
	if r.Errors > 0 {
		res.notef("%s: %s: %d of %d requests failed: %v", name, f.label, r.Errors, r.Errors+r.Requests, r.ErrorCounts)
	}
	if f.throughput {
		res.set(f.label+": throughput", "req/s", col, r.RequestsPerSecond)
	}
	if f.mean {
		res.set(f.label+": mean latency", "ms", col, r.Average.Duration().Seconds()*1000)
	}
	if f.p50 {
		res.set(f.label+": p50 latency", "ms", col, r.Percentiles["p50"].Duration().Seconds()*1000)
	}
	if f.p99 {
		res.set(f.label+": p99 latency", "ms", col, r.Percentiles["p99"].Duration().Seconds()*1000)
	}
	if f.more != nil {
		f.more(res, col, name, r)
	}
	logf("%s: %s: %.1f req/s, mean %s, p99 %s, %d errors", name, f.label, r.RequestsPerSecond,
		fmtMs(r.Average.Duration().Seconds()), fmtMs(r.Percentiles["p99"].Duration().Seconds()), r.Errors)
}

// recordCPU adds the CPU time per request of the server (all members)
// and of the bench client. Both share this machine's cores: when they are
// all busy, throughput is about cores / (server + client CPU per request),
// so the client's figure bounds the throughput ratio any server can reach
// here, and the server's is the efficiency the throughput ratio only
// partly shows.
func (res *results) recordCPU(col int, f figureSet, server, client time.Duration, requests int64) {
	per := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(requests) }
	res.set(f.label+": server CPU per request", "us", col, per(server))
	res.set(f.label+": bench client CPU per request", "us", col, per(client))
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}

// throughputPhase measures latency and throughput on one fresh member.
func throughputPhase(o *options, res *results, col int, name, serverBin, benchBin, dir string) error {
	logf("%s: starting a fresh member for latency and throughput", name)
	ms, err := startCluster(serverBin, dir, 1, o.serverFlags)
	if err != nil {
		return err
	}
	defer stopMembers(ms)
	m := ms[0]
	if v, err := m.rss(); err == nil {
		res.set("memory: RSS of an idle member", "MiB", col, float64(v)/mib)
	}
	if err := putKey(m.clientURL, rangeKey, 256); err != nil {
		return fmt.Errorf("put %s: %w", rangeKey, err)
	}
	bc := &benchClient{bin: benchBin, endpoints: []string{m.clientURL}, verbose: o.verbose}
	limit := []string{"--duration", o.maxTime.String(), "--request-timeout", "30s"}
	puts := []string{"--val-size", "256", "--key-space-size", "100000"}
	many := func(clients int) []string {
		return []string{"--clients", strconv.Itoa(clients), "--conns", strconv.Itoa(max(1, clients/10))}
	}
	join := func(parts ...[]string) []string {
		var all []string
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	plan := []figureSet{
		// A serializable read touches no disk and needs no consensus:
		// its latency is one round trip through client and server.
		{label: "range serializable, 1 client", mean: true,
			args: join([]string{"range", rangeKey, "--consistency", "s", "--total", itoa(o.requests / 10)}, many(1), limit)},
		{label: "put, 1 client", mean: true, p99: true,
			args: join([]string{"put", "--total", itoa(o.requests / 10)}, many(1), puts, limit)},
		{label: "put, 100 clients", throughput: true, p99: true,
			args: join([]string{"put", "--total", itoa(o.requests)}, many(100), puts, limit)},
		{label: "put, 1000 clients", throughput: true, p99: true,
			args: join([]string{"put", "--total", itoa(o.requests)}, many(1000), puts, limit)},
		{label: "range linearizable, 100 clients", throughput: true, p99: true,
			args: join([]string{"range", rangeKey, "--consistency", "l", "--total", itoa(o.requests * 2)}, many(100), limit)},
		{label: "range serializable, 100 clients", throughput: true, p99: true,
			args: join([]string{"range", rangeKey, "--consistency", "s", "--total", itoa(o.requests * 2)}, many(100), limit)},
		{label: "txn-put (4 puts per txn), 100 clients", throughput: true, p99: true,
			args: join([]string{"txn-put", "--txn-ops", "4", "--total", itoa(o.requests / 2)}, many(100), puts, limit)},
	}
	for _, n := range o.watchers {
		plan = append(plan, watchFigure(n))
	}
	plan = append(plan,
		figureSet{label: "lease keepalive, 100 clients", throughput: true, p99: true,
			args: join([]string{"lease-keepalive", "--leases", "1000", "--total", itoa(o.requests)}, many(100), limit)},
		expireFigure(o.leases, o.leaseTTL))
	var roundTrip time.Duration
	fsync := res.fsync
	for _, f := range plan {
		// The member's synced log writes are read around the 1-client put
		// only: the figure below is that workload's.
		var syncSum, syncCount float64
		serr := errors.New("not read")
		if f.label == "put, 1 client" {
			syncSum, syncCount, serr = m.walSyncs()
		}
		before, cerr := m.cpuTime()
		r, clientCPU, err := bc.runCPU(f.args...)
		res.record(col, name, f, r, err)
		after, cerr2 := m.cpuTime()
		if err == nil && f.throughput && cerr == nil && cerr2 == nil && r.Requests > 0 {
			res.recordCPU(col, f, after-before, clientCPU, r.Requests)
		}
		switch {
		case err != nil:
		case f.label == "range serializable, 1 client":
			roundTrip = r.Average.Duration()
			// The disk's speed drifts on a shared machine: measure it
			// again next to the put it is the floor of.
			if d, err := fsyncRate(dir, o.fsyncCount); err == nil {
				fsync = d
				res.set("disk: write+fsync, measured before the put", "ms", col, d.Seconds()*1000)
			}
		case f.label == "put, 1 client" && roundTrip > 0:
			// DESIGN.md's target: within 1.2x of fsync plus a round trip.
			res.set("put, 1 client: mean latency / (disk fsync + round trip)", "x", col,
				r.Average.Duration().Seconds()/(fsync+roundTrip).Seconds())
			// The same against the member's own synced log writes during
			// the put: what the server adds beyond the sync it waits for.
			sum, count, err := m.walSyncs()
			if serr == nil && err == nil && count > syncCount {
				own := (sum - syncSum) / (count - syncCount)
				res.set("put, 1 client: the member's synced log write, mean", "ms", col, own*1000)
				res.set("put, 1 client: mean latency / (member's synced log write + round trip)", "x", col,
					r.Average.Duration().Seconds()/(own+roundTrip.Seconds()))
			}
		}
	}
	return nil
}

// watchFigure is the watch-latency figure for about n watchers of one key:
// 100 per stream (n itself below 100), over at most 10 connections.
//
// The puts are spaced by 50µs per watcher (at least 100ms: 10/s up to
// 2,000 watchers, 2/s at 10,000, one every 5s at 100,000), more than one
// fan-out takes here, so that each event normally meets an idle server
// and the figure is the latency of one fan-out, not of a backlog: at
// 10/s, 10,000 watchers ask for 100,000 events a second, which the two
// cores of a small machine (server and bench client together) cannot
// deliver, and the latency grows with every put. 50 puts, fewer from
// 4,000 watchers on (200,000 events in all, at least 10 puts), keep each
// figure to about 10s at most, 45s at 100,000.
func watchFigure(n int) figureSet {
	perStream := min(100, n)
	streams := max(1, n/perStream)
	watchers := streams * perStream
	label := fmt.Sprintf("watch, %d watchers", watchers)
	if watchers == 1 {
		label = "watch, 1 watcher"
	}
	gap := max(100*time.Millisecond, time.Duration(watchers)*50*time.Microsecond)
	puts := min(50, max(10, 200_000/watchers))
	limit := time.Duration(puts)*gap + 30*time.Second
	return figureSet{label: label, p50: true, p99: true,
		args: []string{"watch-latency", "--streams", strconv.Itoa(streams),
			"--watchers-per-stream", strconv.Itoa(perStream), "--conns", strconv.Itoa(min(streams, 10)),
			"--total", strconv.Itoa(puts), "--put-rate", strconv.FormatFloat(float64(time.Second)/float64(gap), 'f', -1, 64),
			"--val-size", "256", "--duration", limit.String(), "--request-timeout", "30s"}}
}

// expireFigure is the lease-expiry figure: leases granted by 100 clients,
// each with a 256-byte key attached, then counted until their keys are
// gone. The wait after the last deadline is bounded generously (a server
// expiring 500 leases a second still finishes); the rows are the expiry
// throughput, the delay of each expiry after its deadline, the time the
// last key took after the last deadline, and the grant rate.
func expireFigure(leases int64, ttl time.Duration) figureSet {
	label := fmt.Sprintf("lease expiry, %d leases of %v", leases, ttl)
	wait := max(2*time.Minute, time.Duration(leases)*2*time.Millisecond)
	return figureSet{label: label, throughput: true,
		args: []string{"lease-expire", "--total", itoa(leases), "--lease-ttl", itoa(int64(ttl / time.Second)),
			"--clients", "100", "--conns", "10", "--val-size", "256",
			"--duration", wait.String(), "--request-timeout", "30s"},
		more: func(res *results, col int, name string, r *bench.Report) {
			c := r.Counters
			res.set(label+": delay after the deadline, p50", "ms", col, r.Percentiles["p50"].Duration().Seconds()*1000)
			res.set(label+": delay after the deadline, p99", "ms", col, r.Percentiles["p99"].Duration().Seconds()*1000)
			if c["keys_left"] == 0 {
				res.set(label+": last key gone after the last deadline", "s", col, float64(c["drain_us"])/1e6)
			}
			if c["setup_us"] > 0 {
				res.set(label+": grant + attached put throughput", "req/s", col, float64(c["leases"])/(float64(c["setup_us"])/1e6))
			}
			if n := c["expired_during_setup"]; n > 0 {
				res.notef("%s: %s: %d deadlines passed before every lease was granted: give a longer --expire-ttl",
					name, label, n)
			}
		}}
}

// dataPhase loads o.values 256-byte values into a fresh member, then
// measures memory and disk, a full-range read, and a restart.
func dataPhase(o *options, res *results, col int, name, serverBin, benchBin, dir string) error {
	logf("%s: starting a fresh member and loading %d values of 256 bytes", name, o.values)
	ms, err := startCluster(serverBin, dir, 1, o.serverFlags)
	if err != nil {
		return err
	}
	defer stopMembers(ms)
	m := ms[0]
	bc := &benchClient{bin: benchBin, endpoints: []string{m.clientURL}, verbose: o.verbose}
	n := itoa(o.values)
	load := figureSet{label: "load " + n + " values, 100 clients", throughput: true}
	r, err := bc.run("put", "--sequential-keys", "--key-space-size", n, "--total", n, "--val-size", "256",
		"--clients", "100", "--conns", "10", "--request-timeout", "60s")
	res.record(col, name, load, r, err)
	if err != nil {
		return nil // nothing loaded: the figures below would mean nothing
	}
	// Let background work (a bbolt commit, a Pebble flush) settle the
	// same short while for both before reading memory and disk.
	time.Sleep(2 * time.Second)
	if v, err := m.rss(); err == nil {
		res.set("memory: RSS after loading "+n+" values", "MiB", col, float64(v)/mib)
	}
	if alloc, size, err := diskUsage(m.dataDir); err == nil {
		res.set("disk: data dir allocated (du) after loading "+n+" values", "MiB", col, float64(alloc)/mib)
		res.set("disk: data dir file sizes after loading "+n+" values", "MiB", col, float64(size)/mib)
	}

	stop := make(chan struct{})
	peak := m.sampleRSS(stop)
	full := figureSet{label: "full range of " + n + " keys", mean: true}
	r, err = bc.run("range", "", "--prefix", "--total", "3", "--clients", "1", "--conns", "1", "--request-timeout", "10m")
	close(stop)
	res.record(col, name, full, r, err)
	if err == nil {
		res.set("memory: peak RSS during the full range", "MiB", col, float64(<-peak)/mib)
		if want := o.values; r.Counters["keys_returned"] != 3*want {
			res.notef("%s: full range returned %d keys in 3 reads, want %d", name, r.Counters["keys_returned"], 3*want)
		}
	}

	logf("%s: restarting the member holding %d values", name, o.values)
	return timeRestart(res, col, m, "restart with "+n+" values: until first read", "memory: RSS right after the restart")
}

// timeRestart stops m with SIGTERM, starts it again and records, under the
// given labels, the time from the start to its first linearizable read and
// its resident memory right then.
func timeRestart(res *results, col int, m *member, tookLabel, rssLabel string) error {
	m.stop()
	t0 := time.Now()
	if err := m.start(); err != nil {
		return err
	}
	took, err := m.waitReady(t0, 10*time.Minute)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	res.set(tookLabel, "s", col, took.Seconds())
	if v, err := m.rss(); err == nil {
		res.set(rssLabel, "MiB", col, float64(v)/mib)
	}
	return nil
}

// restartPhase loads o.restartMiB MiB of 1 KiB values (DESIGN.md's
// recovery target is stated for 1 GiB) into a fresh member, stops it with
// SIGTERM, and times the restart to the first linearizable read.
func restartPhase(o *options, res *results, col int, name, serverBin, benchBin, dir string) error {
	values := o.restartMiB << 10
	logf("%s: starting a fresh member and loading %d MiB (%d values of 1 KiB)", name, o.restartMiB, values)
	// Room for the data whatever its overhead: both defaults (2 GiB) are
	// close to a GiB of values in bbolt's pages.
	quota := fmt.Sprint(max(4<<30, 4*(o.restartMiB<<20)))
	ms, err := startCluster(serverBin, dir, 1, append([]string{"--quota-backend-bytes", quota}, o.serverFlags...))
	if err != nil {
		return err
	}
	defer stopMembers(ms)
	m := ms[0]
	bc := &benchClient{bin: benchBin, endpoints: []string{m.clientURL}, verbose: o.verbose}
	n := itoa(values)
	size := itoa(o.restartMiB) + " MiB"
	load := figureSet{label: "load " + size + " of 1 KiB values, 100 clients", throughput: true}
	r, err := bc.run("put", "--sequential-keys", "--key-space-size", n, "--total", n, "--val-size", "1024",
		"--clients", "100", "--conns", "10", "--request-timeout", "60s")
	res.record(col, name, load, r, err)
	if err != nil {
		return nil // the restart would not hold the data it is meant to
	}
	if r.Errors > 0 {
		return nil // recorded as a note: the member holds less than it should
	}
	time.Sleep(2 * time.Second)
	if alloc, _, err := diskUsage(m.dataDir); err == nil {
		res.set("disk: data dir allocated (du) holding "+size, "MiB", col, float64(alloc)/mib)
	}
	logf("%s: restarting the member holding %s", name, size)
	if err := timeRestart(res, col, m, "restart holding "+size+": until first read", "memory: RSS right after the restart holding "+size); err != nil {
		return err
	}
	return scaleFigures(o, res, col, name, m, bc, size, n)
}

// scaleFigures measures, on a member holding size of data in n keys, put
// throughput over the whole key space and linearizable range throughput,
// and the member's memory after them: run at 1 GiB and at 10 GiB, they
// show how writes, reads and memory hold up as the data grows (issue
// 14's scale targets).
func scaleFigures(o *options, res *results, col int, name string, m *member, bc *benchClient, size, n string) error {
	if err := putKey(m.clientURL, rangeKey, 256); err != nil {
		return fmt.Errorf("put %s: %w", rangeKey, err)
	}
	limit := []string{"--duration", o.maxTime.String(), "--request-timeout", "30s"}
	for _, f := range []figureSet{
		{label: "holding " + size + ": put over all its keys, 100 clients", throughput: true, p99: true,
			args: append([]string{"put", "--total", itoa(o.requests), "--clients", "100", "--conns", "10",
				"--val-size", "1024", "--key-space-size", n}, limit...)},
		{label: "holding " + size + ": range linearizable, 100 clients", throughput: true, p99: true,
			args: append([]string{"range", rangeKey, "--consistency", "l", "--total", itoa(o.requests * 2),
				"--clients", "100", "--conns", "10"}, limit...)},
	} {
		before, cerr := m.cpuTime()
		r, clientCPU, err := bc.runCPU(f.args...)
		res.record(col, name, f, r, err)
		after, cerr2 := m.cpuTime()
		if err == nil && cerr == nil && cerr2 == nil && r.Requests > 0 {
			res.recordCPU(col, f, after-before, clientCPU, r.Requests)
		}
	}
	if v, err := m.rss(); err == nil {
		res.set("memory: RSS after those, holding "+size, "MiB", col, float64(v)/mib)
	}
	return nil
}

// clusterPhase measures writes and linearizable reads on three members on
// 127.0.0.1, the clients spread over all of them.
func clusterPhase(o *options, res *results, col int, name, serverBin, benchBin, dir string) error {
	logf("%s: starting 3 members", name)
	ms, err := startCluster(serverBin, dir, 3, o.serverFlags)
	if err != nil {
		res.notef("%s: 3 members: %v", name, err)
		logf("%s: 3 members did not start: %v", name, firstLine(err.Error()))
		return nil
	}
	defer stopMembers(ms)
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.clientURL)
	}
	if err := putKey(eps[0], rangeKey, 256); err != nil {
		return fmt.Errorf("put %s: %w", rangeKey, err)
	}
	bc := &benchClient{bin: benchBin, endpoints: eps, verbose: o.verbose}
	limit := []string{"--duration", o.maxTime.String(), "--request-timeout", "30s"}
	cpu := func() (time.Duration, error) {
		var sum time.Duration
		for _, m := range ms {
			d, err := m.cpuTime()
			if err != nil {
				return 0, err
			}
			sum += d
		}
		return sum, nil
	}
	for _, f := range []figureSet{
		{label: "3 members: put, 100 clients", throughput: true, p99: true,
			args: append([]string{"put", "--total", itoa(o.requests), "--clients", "100", "--conns", "12",
				"--val-size", "256", "--key-space-size", "100000"}, limit...)},
		{label: "3 members: range linearizable, 100 clients", throughput: true, p99: true,
			args: append([]string{"range", rangeKey, "--total", itoa(o.requests * 2), "--clients", "100", "--conns", "12"}, limit...)},
	} {
		before, cerr := cpu()
		r, clientCPU, err := bc.runCPU(f.args...)
		res.record(col, name, f, r, err)
		after, cerr2 := cpu()
		if err == nil && cerr == nil && cerr2 == nil && r.Requests > 0 {
			res.recordCPU(col, f, after-before, clientCPU, r.Requests)
		}
	}
	return nil
}
