package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-db/cairn/internal/bench"
)

// fsyncRate appends a small record to a file in dir and syncs it n times,
// the pattern of a write-ahead log, and returns the mean time of one
// write+sync. Run in the directory the servers' data lives in, it is the
// disk's own floor for a durable single-client write.
func fsyncRate(dir string, n int) (time.Duration, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	rec := bytes.Repeat([]byte{0xab}, 512)
	start := time.Now()
	for range n {
		if _, err := f.Write(rec); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}

// benchClient runs `cairn bench` workloads against a set of endpoints.
type benchClient struct {
	bin       string
	endpoints []string
	verbose   bool
}

// run executes `cairn bench <args> --output json` and decodes the report.
// A run with errors is returned with them; the caller shows the count.
func (b *benchClient) run(args ...string) (*bench.Report, error) {
	r, _, err := b.runCPU(args...)
	return r, err
}

// runCPU is run that also returns the CPU time (user and system) the bench
// process used: on one machine, the client's share of the CPU bounds what
// any server can reach.
func (b *benchClient) runCPU(args ...string) (*bench.Report, time.Duration, error) {
	full := append([]string{"bench"}, args...)
	// Progress lines (one every 10s) show that a long load is alive.
	full = append(full, "--endpoints", strings.Join(b.endpoints, ","), "--output", "json", "--progress", "lines")
	if b.verbose {
		fmt.Fprintf(os.Stderr, "    %s %s\n", filepath.Base(b.bin), strings.Join(full, " "))
	}
	cmd := exec.Command(b.bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, io.MultiWriter(os.Stderr, &stderr)
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("%s (%w); command: %s %s", errorLine(stderr.String()), err, filepath.Base(b.bin), strings.Join(full, " "))
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	var r bench.Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return nil, 0, fmt.Errorf("cairn %s: decode report: %w\n%s", strings.Join(full, " "), err, stdout.String())
	}
	return &r, cpu, nil
}

// hasBench reports whether bin has the bench subcommand (main.go wires it).
func hasBench(bin string) bool {
	out, err := exec.Command(bin, "bench", "--help").CombinedOutput()
	return err == nil && bytes.Contains(out, []byte("watch-latency"))
}

// walSyncs reads, from the member's /metrics on its client URL, the sum
// (seconds) and count of etcd_disk_wal_fsync_duration_seconds: the synced
// writes of its raft log, which etcd and cairn both export under that
// name. Differences between two reads give the mean synced log write of
// the workload in between, as the member itself paid for it.
func (m *member) walSyncs() (sum, count float64, err error) {
	resp, err := http.Get(m.clientURL + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "etcd_disk_wal_fsync_duration_seconds_sum":
			dst = &sum
		case "etcd_disk_wal_fsync_duration_seconds_count":
			dst = &count
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(strings.TrimSpace(value), 64); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("%s/metrics has no etcd_disk_wal_fsync_duration_seconds", m.clientURL)
	}
	return sum, count, nil
}
