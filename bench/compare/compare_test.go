package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-db/cairn/internal/bench"
)

func TestResultsTable(t *testing.T) {
	res := &results{servers: []string{"etcd", "cairn"}, fsync: 2_000_000}
	res.set("put, 100 clients: throughput", "req/s", 0, 1000)
	res.set("put, 100 clients: throughput", "req/s", 1, 2500)
	res.set("memory: RSS", "MiB", 0, 100)
	res.notef("cairn: watch: unimplemented\nmore detail")
	var buf bytes.Buffer
	res.print(&buf, &options{values: 10, requests: 20})
	out := buf.String()
	for _, want := range []string{
		"disk write+fsync (512 B): 2.000 ms mean, 500/s",
		"cairn/etcd",
		"put, 100 clients: throughput",
		"1000/s", "2500/s", "2.50",
		"100.0 MiB", "n/a",
		"cairn: watch: unimplemented\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "more detail") {
		t.Errorf("notes should show only their first line:\n%s", out)
	}
}

func TestResultsTargets(t *testing.T) {
	res := &results{servers: []string{"etcd", "cairn"}}
	for col, v := range []float64{10000, 16000} {
		res.set("put, 100 clients: throughput", "req/s", col, v)
	}
	for col, v := range []float64{80, 60} {
		res.set("put, 100 clients: server CPU per request", "us", col, v)
	}
	for col, v := range []float64{40, 40} {
		res.set("put, 100 clients: bench client CPU per request", "us", col, v)
	}
	res.set("put, 1 client: mean latency / (disk fsync + round trip)", "x", 0, 1.1)
	res.set("put, 1 client: mean latency / (disk fsync + round trip)", "x", 1, 1.7)
	res.set("put, 1 client: the member's synced log write, mean", "ms", 0, 0.25)
	res.set("put, 1 client: the member's synced log write, mean", "ms", 1, 0.3)
	res.set("put, 1 client: mean latency / (member's synced log write + round trip)", "x", 0, 1.05)
	res.set("put, 1 client: mean latency / (member's synced log write + round trip)", "x", 1, 1.15)
	var buf bytes.Buffer
	res.printTargets(&buf)
	out := buf.String()
	for _, want := range []string{
		"server CPU per put, 100 clients: at most 0.5x etcd's: 0.75, not met",
		"put throughput, 100 clients: at least 1.5x etcd's: 1.60, met",
		// (80+40)/(60+40) = 1.2; 1.5x needs (80+40)/1.5-40 = 40.
		"etcd 80.0 + 40.0 µs, cairn 60.0 + 40.0 µs: at most 1.20x when CPU-bound; 1.5x needs cairn's server at 40.0 µs",
		"within 1.2x of fsync + round trip: 1.70, not met",
		"own synced log writes during the put (etcd 0.250 ms, cairn 0.300 ms) + round trip: etcd 1.05x, cairn 1.15x",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("targets lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "3 members") {
		t.Errorf("a target without figures is printed:\n%s", out)
	}
	buf.Reset()
	res.servers = []string{"etcd", "etcd"}
	res.printTargets(&buf)
	if buf.Len() != 0 {
		t.Errorf("targets printed for etcd against etcd:\n%s", buf.String())
	}
}

// TestFloorServerAnswers checks that the gRPC floor answers what the kv
// phase's workloads send, as a server would: a put raises the revision,
// and the range key holds a 256-byte value.
func TestFloorServerAnswers(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := newFloorServer()
	go gs.Serve(lis)
	defer gs.Stop()
	c, err := newClient("http://" + lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p1, err := c.Put(ctx, "k", "v")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c.Put(ctx, "k", "v")
	if err != nil {
		t.Fatal(err)
	}
	if p2.Header.Revision != p1.Header.Revision+1 {
		t.Errorf("revisions %d then %d, want consecutive", p1.Header.Revision, p2.Header.Revision)
	}
	g, err := c.Get(ctx, rangeKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Kvs) != 1 || len(g.Kvs[0].Value) != 256 {
		t.Errorf("range answered %v, want one 256-byte value", g.Kvs)
	}
}

func TestFormatValues(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{1.23456, "ms", "1.235 ms"}, {1234.6, "req/s", "1235/s"}, {10.25, "MiB", "10.2 MiB"},
		{2.5, "s", "2.50 s"}, {1.5, "x", "1.50x"}, {12.34, "us", "12.3 µs"}, {math.NaN(), "ms", "n/a"},
	} {
		if got := fmtValue(c.v, c.unit); got != c.want {
			t.Errorf("fmtValue(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func TestDiskUsageCountsAllocatedBytes(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "f"), bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// A preallocated file: 4 MiB reserved, 1 KiB written.
	f, err := os.Create(filepath.Join(dir, "prealloc"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, 4<<20); err != nil {
		t.Skipf("fallocate: %v", err)
	}
	if err := f.Truncate(1 << 10); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(f.Fd()), 1 /* FALLOC_FL_KEEP_SIZE */, 0, 4<<20); err != nil {
		t.Fatal(err)
	}
	alloc, size, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if size != 1<<20+1<<10 {
		t.Errorf("apparent size %d, want 1 MiB + 1 KiB", size)
	}
	if alloc < 5<<20 || alloc > 6<<20 {
		t.Errorf("allocated %d, want about 5 MiB (1 MiB written + 4 MiB reserved)", alloc)
	}
}

func TestProcStatusOfThisProcess(t *testing.T) {
	rss, err := procStatusBytes(os.Getpid(), "VmRSS:")
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 {
		t.Errorf("VmRSS %d bytes, implausibly small for a Go test binary", rss)
	}
}

func TestFsyncRate(t *testing.T) {
	d, err := fsyncRate(t.TempDir(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 {
		t.Errorf("mean write+fsync %v, want positive", d)
	}
}

func TestErrorLine(t *testing.T) {
	tail := "starting\nError: unknown flag: --name\nUsage:\n  cairn [flags]"
	if got := errorLine(tail); got != "Error: unknown flag: --name" {
		t.Errorf("errorLine = %q", got)
	}
	if got := errorLine("a\nb"); got != "b" {
		t.Errorf("errorLine without an error = %q, want the last line", got)
	}
}

func TestProcCPUTime(t *testing.T) {
	before, err := procCPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until /proc shows some (its unit is 10ms), or give up.
	start := time.Now()
	x := 1
	for time.Since(start) < 10*time.Second {
		for i := range 1_000_000 {
			x = x*31 + i
		}
		after, err := procCPUTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			if elapsed := time.Since(start); after-before > elapsed*time.Duration(runtime.NumCPU())+time.Second {
				t.Fatalf("used %v of CPU in %v of wall time", after-before, elapsed)
			}
			return
		}
	}
	t.Fatalf("no CPU time counted after 10s of busy loop (%d)", x)
}

func TestParseWatchers(t *testing.T) {
	for _, c := range []struct {
		in   string
		full bool
		want []int
	}{
		{"", false, []int{1, 1000, 10000}},
		{"", true, []int{1, 1000, 10000, 100000}},
		{"5, 200", true, []int{5, 200}},
	} {
		got, err := parseWatchers(c.in, c.full)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("parseWatchers(%q, %v) = %v, %v; want %v", c.in, c.full, got, err, c.want)
		}
	}
	for _, bad := range []string{"0", "1,,2", "x", "-3"} {
		if _, err := parseWatchers(bad, false); err == nil {
			t.Errorf("parseWatchers(%q) accepted", bad)
		}
	}
}

func TestWatchFigureShape(t *testing.T) {
	for _, c := range []struct {
		n     int
		label string
		shape string
	}{
		{1, "watch, 1 watcher", "--streams 1 --watchers-per-stream 1 --conns 1 --total 50 --put-rate 10 "},
		{1000, "watch, 1000 watchers", "--streams 10 --watchers-per-stream 100 --conns 10 --total 50 --put-rate 10 "},
		{10000, "watch, 10000 watchers", "--streams 100 --watchers-per-stream 100 --conns 10 --total 20 --put-rate 2 "},
		{100000, "watch, 100000 watchers", "--streams 1000 --watchers-per-stream 100 --conns 10 --total 10 --put-rate 0.2 "},
	} {
		f := watchFigure(c.n)
		args := strings.Join(f.args, " ")
		if f.label != c.label || !f.p50 || !f.p99 || !strings.Contains(args, c.shape) {
			t.Errorf("watchFigure(%d): %q %s", c.n, f.label, args)
		}
	}
}

func TestExpireFigureRows(t *testing.T) {
	f := expireFigure(10000, 10*time.Second)
	if args := strings.Join(f.args, " "); !strings.Contains(args, "lease-expire --total 10000 --lease-ttl 10 ") {
		t.Errorf("args: %s", args)
	}
	res := &results{servers: []string{"etcd", "cairn"}}
	r := &bench.Report{
		RequestsPerSecond: 1000,
		Percentiles:       map[string]bench.Seconds{"p50": bench.Seconds(2 * time.Second), "p99": bench.Seconds(5 * time.Second)},
		Counters:          map[string]int64{"leases": 10000, "setup_us": 4_000_000, "drain_us": 3_500_000, "expired_during_setup": 7},
	}
	res.record(0, "etcd", f, r, nil)
	res.record(1, "cairn", f, nil, errors.New("rpc error: code = Unimplemented"))
	var buf bytes.Buffer
	res.print(&buf, &options{})
	out := buf.String()
	for _, want := range []string{
		"lease expiry, 10000 leases of 10s: throughput", "1000/s",
		"delay after the deadline, p50", "2000.000 ms", "delay after the deadline, p99", "5000.000 ms",
		"last key gone after the last deadline", "3.50 s",
		"grant + attached put throughput", "2500/s",
		"7 deadlines passed before every lease was granted",
		"cairn: lease expiry, 10000 leases of 10s: rpc error: code = Unimplemented",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestAuthWorkloadsStayInThePrefix: the auth phase's user may read and
// write only authPrefix, so every key its workloads touch must be there,
// or the auth-on runs would measure refusals.
func TestAuthWorkloadsStayInThePrefix(t *testing.T) {
	if !strings.HasPrefix(rangeKey, authPrefix) {
		t.Fatalf("range key %q is outside %q", rangeKey, authPrefix)
	}
	for _, f := range authWorkloads(&options{requests: 10, maxTime: time.Second}) {
		switch f.args[0] {
		case "put":
			i := slices.Index(f.args, "--key-prefix")
			if i < 0 || f.args[i+1] != authPrefix {
				t.Errorf("%s: puts keys outside %q: %v", f.label, authPrefix, f.args)
			}
		case "range":
			if f.args[1] != rangeKey {
				t.Errorf("%s: reads %q, want %q", f.label, f.args[1], rangeKey)
			}
		default:
			t.Errorf("%s: unexpected workload %q", f.label, f.args[0])
		}
		if !slices.Contains(f.args, "100") {
			t.Errorf("%s: not 100 clients: %v", f.label, f.args)
		}
	}
}

// TestWalSyncs reads the synced-log-write histogram's sum and count from a
// /metrics page, and fails on a page without it.
func TestWalSyncs(t *testing.T) {
	page := "# HELP etcd_disk_wal_fsync_duration_seconds ...\n" +
		"etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 7\n" +
		"etcd_disk_wal_fsync_duration_seconds_sum 0.0042\n" +
		"etcd_disk_wal_fsync_duration_seconds_count 12\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, page)
	}))
	defer srv.Close()
	m := &member{clientURL: srv.URL}
	sum, count, err := m.walSyncs()
	if err != nil || sum != 0.0042 || count != 12 {
		t.Fatalf("walSyncs = %v, %v, %v; want 0.0042, 12, nil", sum, count, err)
	}
	page = "other_metric 1\n"
	if _, _, err := m.walSyncs(); err == nil {
		t.Fatal("walSyncs of a page without the histogram: no error")
	}
}
