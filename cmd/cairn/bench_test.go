package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/internal/bench"
	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// startBenchEtcd starts a single-member etcd (the test kit's oracle) and returns
// its client address and a client, for the bench command to measure.
func startBenchEtcd(t *testing.T) (string, *clientv3.Client) {
	t.Helper()
	e := oracle.Start(t)
	return e.Addr, e.Client(t)
}

func runBench(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newBenchCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestBenchCommandJSON(t *testing.T) {
	addr, cli := startBenchEtcd(t)
	out, err := runBench(t, "put", "--endpoints", addr, "--conns", "2", "--clients", "5", "--total", "60",
		"--sequential-keys", "--key-space-size", "60", "--val-size", "32", "--output", "json", "--progress", "none")
	if err != nil {
		t.Fatalf("bench put: %v", err)
	}
	var r bench.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not a JSON report: %v\n%s", err, out)
	}
	if r.Workload != "put" || r.Requests != 60 || r.Errors != 0 || r.Conns != 2 || r.Clients != 5 {
		t.Fatalf("report %+v, want 60 puts by 5 clients on 2 conns, no errors", r)
	}
	resp, err := cli.Get(context.Background(), "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 60 {
		t.Fatalf("%v keys after the run (err %v), want 60", resp.Count, err)
	}

	out, err = runBench(t, "range", "0000001", "--prefix", "--consistency", "s", "--endpoints", addr,
		"--total", "20", "-o", "json", "--progress", "none")
	if err != nil {
		t.Fatalf("bench range: %v", err)
	}
	r = bench.Report{}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	// Keys 00000010..00000019 share the prefix.
	if r.Requests != 20 || r.Counters["keys_returned"] != 200 {
		t.Errorf("range report: %d requests, %d keys returned; want 20 and 200", r.Requests, r.Counters["keys_returned"])
	}
}

func TestBenchCommandText(t *testing.T) {
	addr, _ := startBenchEtcd(t)
	for _, args := range [][]string{
		{"txn-put", "--txn-ops", "2", "--key-space-size", "10", "--total", "10"},
		{"watch-latency", "--streams", "2", "--watchers-per-stream", "2", "--total", "5", "--put-rate", "0"},
		{"lease-keepalive", "--clients", "2", "--total", "10"},
		{"put", "--duration", "100ms"},
	} {
		out, err := runBench(t, append(args, "--endpoints", addr, "--progress", "none")...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out, "Summary ("+args[0]) || !strings.Contains(out, "p99.9") || !strings.Contains(out, " 0 errors") {
			t.Errorf("%v printed:\n%s", args, out)
		}
	}
}

func TestBenchLeaseExpireCommand(t *testing.T) {
	addr, cli := startBenchEtcd(t)
	// --duration bounds the wait for expiry; alone, it keeps --total.
	out, err := runBench(t, "lease-expire", "--endpoints", addr, "--clients", "3", "--total", "6", "--lease-ttl", "2",
		"--duration", "1m", "-o", "json", "--progress", "none")
	if err != nil {
		t.Fatalf("bench lease-expire: %v", err)
	}
	var r bench.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not a JSON report: %v\n%s", err, out)
	}
	if r.Workload != "lease-expire" || r.Requests != 6 || r.Errors != 0 || r.Counters["keys_left"] != 0 {
		t.Fatalf("report %+v, want 6 leases expired, none left, no errors", r)
	}
	if resp, err := cli.Get(context.Background(), "", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("keys left after the run: %v (err %v), want none", resp.Count, err)
	}
}

func TestBenchCommandRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"put", "--output", "yaml"},
		{"put", "--progress", "sometimes"},
		{"range", "k", "--consistency", "x"},
		{"range"},
		{"put", "--total", "0"},
		{"lease-expire", "--lease-ttl", "0"},
		{"lease-expire", "--total", "0"},
		{"put", "--user", ":pw"},
	} {
		if _, err := runBench(t, append(args, "--endpoints", "127.0.0.1:1", "--request-timeout", "100ms")...); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

// TestBenchUserLogsIn: with --user, put and range run as that user (the
// server refuses them without a login, and refuses keys outside the
// user's permission), as etcdctl's --user does.
func TestBenchUserLogsIn(t *testing.T) {
	addr, cli := startBenchEtcd(t)
	ctx := context.Background()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "bench"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "bench", "bench/", clientv3.GetPrefixRangeEnd("bench/"),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "bench", "benchpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "bench", "bench"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	common := []string{"--endpoints", addr, "--conns", "2", "--clients", "4", "--total", "40",
		"--key-prefix", "bench/", "--sequential-keys", "--key-space-size", "40", "-o", "json", "--progress", "none"}

	if _, err := runBench(t, append([]string{"put"}, common...)...); err == nil {
		t.Fatal("bench put without --user succeeded against a server with auth enabled")
	}
	for _, user := range [][]string{{"--user", "bench:benchpw"}, {"--user", "bench", "--password", "benchpw"}} {
		out, err := runBench(t, append(append([]string{"put"}, common...), user...)...)
		if err != nil {
			t.Fatalf("bench put %v: %v", user, err)
		}
		var r bench.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("output is not a JSON report: %v\n%s", err, out)
		}
		if r.Requests != 40 || r.Errors != 0 {
			t.Fatalf("bench put %v: %d puts, %d errors (%v); want 40, none", user, r.Requests, r.Errors, r.ErrorCounts)
		}
	}
	out, err := runBench(t, "range", "bench/", "--prefix", "--user", "bench:benchpw", "--endpoints", addr,
		"--total", "5", "-o", "json", "--progress", "none")
	if err != nil {
		t.Fatalf("bench range --user: %v", err)
	}
	var r bench.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Requests != 5 || r.Counters["keys_returned"] != 5*40 {
		t.Fatalf("range as bench: %d requests, %d keys; want 5 and 200", r.Requests, r.Counters["keys_returned"])
	}

	// Outside the user's prefix every put is refused.
	_, err = runBench(t, "put", "--key-prefix", "other/", "--user", "bench:benchpw", "--endpoints", addr,
		"--total", "5", "--progress", "none")
	if err == nil || !strings.Contains(err.Error(), "every request failed") {
		t.Fatalf("bench put outside the permitted prefix: %v, want every request failed", err)
	}
	if _, err := runBench(t, "put", "--user", "bench:wrong", "--endpoints", addr, "--total", "5", "--progress", "none"); err == nil {
		t.Fatal("bench put with a wrong password succeeded")
	}
}
