package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// startEtcd starts a single-member etcd (the test kit's oracle) and returns
// its client address and a client for checking what a run did.
func startEtcd(t *testing.T) (string, *clientv3.Client) {
	t.Helper()
	e := oracle.Start(t)
	return e.Addr, e.Client(t)
}

func testConfig(addr string) Config {
	cfg := DefaultConfig()
	cfg.Endpoints = []string{addr}
	cfg.Conns, cfg.Clients = 2, 4
	return cfg
}

// checkClean fails the test if the run reported errors.
func checkClean(t *testing.T, r *Report, wantRequests int64) {
	t.Helper()
	if r.Errors != 0 || r.Requests != wantRequests {
		t.Fatalf("%s: %d requests, %d errors %v; want %d requests, no errors", r.Workload, r.Requests, r.Errors, r.ErrorCounts, wantRequests)
	}
	if r.Fastest <= 0 || r.Slowest < r.Fastest || r.Percentiles["p50"] < r.Fastest || r.RequestsPerSecond <= 0 {
		t.Fatalf("%s: implausible latencies %+v", r.Workload, r)
	}
}

func count(t *testing.T, cli *clientv3.Client, prefix string) (int64, *clientv3.GetResponse) {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count, resp
}

func TestPutAgainstEtcd(t *testing.T) {
	addr, cli := startEtcd(t)
	cfg := testConfig(addr)
	cfg.Total, cfg.KeySpaceSize, cfg.SequentialKeys, cfg.ValSize = 300, 300, true, 100
	r, err := Put(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r, 300)
	if r.Conns != 2 || r.Clients != 4 || r.Workload != "put" {
		t.Errorf("report says %s with %d conns, %d clients", r.Workload, r.Conns, r.Clients)
	}
	n, resp := count(t, cli, "")
	if n != 300 {
		t.Fatalf("%d keys exist after 300 sequential puts, want 300", n)
	}
	if resp.Header.Revision != 301 {
		t.Errorf("revision %d, want 301: one per put", resp.Header.Revision)
	}
	distinct := map[string]bool{}
	for _, kv := range resp.Kvs {
		if len(kv.Key) != 8 || len(kv.Value) != 100 {
			t.Fatalf("key %q with a %d-byte value, want 8-byte keys and 100-byte values", kv.Key, len(kv.Value))
		}
		distinct[string(kv.Value)] = true
	}
	if len(distinct) != 300 {
		t.Errorf("%d distinct values, want 300: values must not repeat", len(distinct))
	}
}

func TestPutRandomKeysStayInKeySpace(t *testing.T) {
	addr, cli := startEtcd(t)
	cfg := testConfig(addr)
	cfg.Total, cfg.KeySpaceSize, cfg.KeySize = 200, 10, 3
	r, err := Put(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r, 200)
	n, resp := count(t, cli, "")
	if n < 1 || n > 10 {
		t.Fatalf("%d keys exist, want between 1 and the key space of 10", n)
	}
	for _, kv := range resp.Kvs {
		if len(kv.Key) != 3 || !strings.HasPrefix(string(kv.Key), "00") {
			t.Errorf("key %q outside 000..009", kv.Key)
		}
	}
}

func TestPutBoundedByDuration(t *testing.T) {
	addr, cli := startEtcd(t)
	cfg := testConfig(addr)
	cfg.Total, cfg.Duration = 0, 300*time.Millisecond
	r, err := Put(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("%d requests, %d errors %v", r.Requests, r.Errors, r.ErrorCounts)
	}
	// Every counted put happened: with one key, each took one revision.
	_, resp := count(t, cli, "")
	if resp.Header.Revision != r.Requests+1 {
		t.Errorf("revision %d after %d counted puts, want %d", resp.Header.Revision, r.Requests, r.Requests+1)
	}
}

func TestRangeAgainstEtcd(t *testing.T) {
	addr, cli := startEtcd(t)
	for _, k := range []string{"a1", "a2", "a3", "b1"} {
		if _, err := cli.Put(context.Background(), k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		opts RangeOptions
		each int64
	}{
		{"linearizable prefix", RangeOptions{Key: "a", Prefix: true}, 3},
		{"serializable range", RangeOptions{Key: "a2", End: "b2", Serializable: true}, 3},
		{"single key", RangeOptions{Key: "b1"}, 1},
		{"limit", RangeOptions{Key: "a", Prefix: true, Limit: 2}, 2},
		{"count only", RangeOptions{Key: "", Prefix: true, CountOnly: true}, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(addr)
			cfg.Total = 100
			r, err := Range(context.Background(), cfg, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			checkClean(t, r, 100)
			if got := r.Counters["keys_returned"]; got != 100*c.each {
				t.Errorf("keys_returned %d, want %d", got, 100*c.each)
			}
		})
	}
	if _, err := Range(context.Background(), testConfig(addr), RangeOptions{Key: "a", End: "b", Prefix: true}); err == nil {
		t.Error("range accepted both an end key and a prefix")
	}
}

func TestTxnPutAgainstEtcd(t *testing.T) {
	addr, cli := startEtcd(t)
	cfg := testConfig(addr)
	cfg.Total, cfg.KeySpaceSize, cfg.SequentialKeys = 40, 120, true
	r, err := TxnPut(context.Background(), cfg, TxnPutOptions{OpsPerTxn: 3})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r, 40)
	if r.Counters["puts"] != 120 {
		t.Errorf("puts counter %d, want 120", r.Counters["puts"])
	}
	n, resp := count(t, cli, "")
	if n != 120 || resp.Header.Revision != 41 {
		t.Errorf("%d keys at revision %d, want 120 keys at 41 (one revision per txn)", n, resp.Header.Revision)
	}
	cfg.KeySpaceSize = 2
	if _, err := TxnPut(context.Background(), cfg, TxnPutOptions{OpsPerTxn: 3}); err == nil {
		t.Error("txn-put accepted 3 distinct keys per txn in a key space of 2")
	}
}

func TestWatchLatencyAgainstEtcd(t *testing.T) {
	addr, cli := startEtcd(t)
	cfg := testConfig(addr)
	cfg.Total = 25
	r, err := WatchLatency(context.Background(), cfg, WatchOptions{Streams: 3, WatchersPerStream: 4})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r, 25*12)
	if r.Unit != "events" {
		t.Errorf("unit %q, want events: each sample is an event at a watcher", r.Unit)
	}
	if r.Counters["watchers"] != 12 || r.Counters["puts"] != 25 || r.Counters["events_expected"] != 300 {
		t.Errorf("counters %v, want 12 watchers, 25 puts, 300 events", r.Counters)
	}
	_, resp := count(t, cli, "watch-latency/")
	if len(resp.Kvs) != 1 || resp.Kvs[0].Version != 25 {
		t.Errorf("watched key: %v, want one key put 25 times", resp.Kvs)
	}
}

func TestLeaseKeepaliveAgainstEtcd(t *testing.T) {
	addr, cli := startEtcd(t)
	cfg := testConfig(addr)
	cfg.Total = 150
	r, err := LeaseKeepalive(context.Background(), cfg, LeaseOptions{Leases: 7, TTL: 30})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r, 150)
	if r.Counters["leases"] != 7 {
		t.Errorf("leases counter %d, want 7", r.Counters["leases"])
	}
	leases, err := cli.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 0 {
		t.Errorf("%d leases left after the run, want all revoked", len(leases.Leases))
	}
}

func TestUnreachableEndpointFails(t *testing.T) {
	cfg := testConfig("127.0.0.1:1")
	cfg.RequestTimeout = 300 * time.Millisecond
	if _, err := Put(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("got %v, want an error naming the endpoint", err)
	}
}

func TestCancelledRunReportsWhatWasDone(t *testing.T) {
	addr, cli := startEtcd(t)
	cfg := testConfig(addr)
	cfg.Total = 0
	cfg.Duration = time.Hour // only the cancellation ends this run
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once the run has visibly written something.
	go func() {
		for ctx.Err() == nil {
			if resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil && resp.Header.Revision > 50 {
				cancel()
			}
		}
	}()
	r, err := Put(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 0 {
		t.Fatalf("%d errors %v after cancel; interrupted requests are not errors", r.Errors, r.ErrorCounts)
	}
	// Every counted put was applied; a put in flight at the cancel may
	// have been applied without being counted, at most one per client.
	_, resp := count(t, cli, "")
	applied := resp.Header.Revision - 1
	if r.Requests > applied || r.Requests < applied-int64(cfg.Clients) || applied < 50 {
		t.Fatalf("report counts %d puts, the server applied %d; want between %d and %d", r.Requests, applied, applied-int64(cfg.Clients), applied)
	}
}
