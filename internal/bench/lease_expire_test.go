package bench

import (
	"context"
	"testing"
)

func TestLeaseExpireAgainstEtcd(t *testing.T) {
	addr, cli := startEtcd(t)
	cfg := testConfig(addr)
	cfg.Total, cfg.ValSize = 20, 16
	// etcd raises a TTL below its minimum (2s with its default timing):
	// the deadlines must follow the TTL it granted.
	r, err := LeaseExpire(context.Background(), cfg, LeaseExpireOptions{TTL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Workload != "lease-expire" || r.Unit != "leases" || r.Requests != 20 || r.Errors != 0 {
		t.Fatalf("report: %s, %d %s, %d errors %v; want 20 leases expired, no errors",
			r.Workload, r.Requests, r.Unit, r.Errors, r.ErrorCounts)
	}
	c := r.Counters
	t.Logf("%.0f leases/s, lag p50 %v p99 %v, counters %v", r.RequestsPerSecond,
		r.Percentiles["p50"].Duration(), r.Percentiles["p99"].Duration(), c)
	if c["leases"] != 20 || c["keys_left"] != 0 || c["polls"] < 1 || c["ttl_seconds"] < 1 {
		t.Errorf("counters %v, want 20 leases, none left, at least one poll, the granted TTL", c)
	}
	if c["drain_us"] < 0 || c["setup_us"] <= 0 || c["deadline_spread_us"] < 0 {
		t.Errorf("counters %v: durations out of range", c)
	}
	if r.Slowest < r.Fastest || r.Percentiles["p99"] < r.Percentiles["p50"] {
		t.Errorf("implausible lags: %+v", r)
	}
	// Every key went with its lease, and no lease is left behind.
	if n, _ := count(t, cli, "lease-expire/"); n != 0 {
		t.Errorf("%d attached keys left after the run", n)
	}
	leases, err := cli.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 0 {
		t.Errorf("%d leases left after the run, want all expired", len(leases.Leases))
	}
}

func TestLeaseExpireRejectsBadOptions(t *testing.T) {
	cfg := testConfig("127.0.0.1:1")
	for _, c := range []struct {
		total int64
		opts  LeaseExpireOptions
	}{
		{0, LeaseExpireOptions{TTL: 5}},
		{10, LeaseExpireOptions{TTL: 0}},
		{10, LeaseExpireOptions{TTL: 5, PollInterval: -1}},
	} {
		cfg.Total = c.total
		if c.total == 0 {
			cfg.Duration = 1 // so that only lease-expire's own check can refuse it
		}
		if _, err := LeaseExpire(context.Background(), cfg, c.opts); err == nil {
			t.Errorf("total %d, %+v: accepted", c.total, c.opts)
		}
	}
}
