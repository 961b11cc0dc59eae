package embed

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit"
)

// etcdFamilies are the metric families etcd's Grafana dashboard and the
// common etcd alert rules query, with etcd's type and label names (from
// etcd 3.7's sources and go-grpc-prometheus'). Each must be on a member's
// /metrics exactly so.
var etcdFamilies = []struct {
	name   string
	typ    dto.MetricType
	labels []string
}{
	{"grpc_server_started_total", dto.MetricType_COUNTER, []string{"grpc_method", "grpc_service", "grpc_type"}},
	{"grpc_server_handled_total", dto.MetricType_COUNTER, []string{"grpc_code", "grpc_method", "grpc_service", "grpc_type"}},
	{"grpc_server_msg_received_total", dto.MetricType_COUNTER, []string{"grpc_method", "grpc_service", "grpc_type"}},
	{"grpc_server_msg_sent_total", dto.MetricType_COUNTER, []string{"grpc_method", "grpc_service", "grpc_type"}},
	{"grpc_server_handling_seconds", dto.MetricType_HISTOGRAM, []string{"grpc_method", "grpc_service", "grpc_type"}},

	{"etcd_server_has_leader", dto.MetricType_GAUGE, nil},
	{"etcd_server_is_leader", dto.MetricType_GAUGE, nil},
	{"etcd_server_is_learner", dto.MetricType_GAUGE, nil},
	{"etcd_server_leader_changes_seen_total", dto.MetricType_COUNTER, nil},
	{"etcd_server_heartbeat_send_failures_total", dto.MetricType_COUNTER, nil},
	{"etcd_server_slow_apply_total", dto.MetricType_COUNTER, nil},
	{"etcd_server_slow_read_indexes_total", dto.MetricType_COUNTER, nil},
	{"etcd_server_read_indexes_failed_total", dto.MetricType_COUNTER, nil},
	// etcd's two "totals" that are gauges.
	{"etcd_server_proposals_committed_total", dto.MetricType_GAUGE, nil},
	{"etcd_server_proposals_applied_total", dto.MetricType_GAUGE, nil},
	{"etcd_server_proposals_pending", dto.MetricType_GAUGE, nil},
	{"etcd_server_proposals_failed_total", dto.MetricType_COUNTER, nil},
	{"etcd_server_quota_backend_bytes", dto.MetricType_GAUGE, nil},
	{"etcd_server_id", dto.MetricType_GAUGE, []string{"server_id"}},
	{"etcd_server_go_version", dto.MetricType_GAUGE, []string{"server_go_version"}},
	{"etcd_server_health_success", dto.MetricType_COUNTER, nil},
	{"etcd_server_health_failures", dto.MetricType_COUNTER, nil},

	{"etcd_network_peer_round_trip_time_seconds", dto.MetricType_HISTOGRAM, []string{"To"}},
	{"etcd_network_peer_sent_bytes_total", dto.MetricType_COUNTER, []string{"To"}},
	{"etcd_network_peer_received_bytes_total", dto.MetricType_COUNTER, []string{"From"}},
	{"etcd_network_active_peers", dto.MetricType_GAUGE, []string{"Local", "Remote"}},
	{"etcd_network_client_grpc_sent_bytes_total", dto.MetricType_COUNTER, nil},
	{"etcd_network_client_grpc_received_bytes_total", dto.MetricType_COUNTER, nil},

	{"etcd_disk_wal_fsync_duration_seconds", dto.MetricType_HISTOGRAM, nil},
	// A gauge in etcd, despite its name.
	{"etcd_disk_wal_write_bytes_total", dto.MetricType_GAUGE, nil},
	{"etcd_disk_backend_commit_duration_seconds", dto.MetricType_HISTOGRAM, nil},
	{"etcd_disk_backend_defrag_duration_seconds", dto.MetricType_HISTOGRAM, nil},
	{"etcd_disk_backend_snapshot_duration_seconds", dto.MetricType_HISTOGRAM, nil},

	{"etcd_mvcc_db_total_size_in_bytes", dto.MetricType_GAUGE, nil},
	{"etcd_mvcc_db_total_size_in_use_in_bytes", dto.MetricType_GAUGE, nil},
	{"etcd_mvcc_put_total", dto.MetricType_COUNTER, nil},
	{"etcd_mvcc_range_total", dto.MetricType_COUNTER, nil},
	{"etcd_mvcc_txn_total", dto.MetricType_COUNTER, nil},
	{"etcd_mvcc_delete_total", dto.MetricType_COUNTER, nil},
	{"etcd_debugging_mvcc_keys_total", dto.MetricType_GAUGE, nil},

	{"etcd_debugging_lease_granted_total", dto.MetricType_COUNTER, nil},
	{"etcd_debugging_lease_revoked_total", dto.MetricType_COUNTER, nil},
	{"etcd_debugging_lease_renewed_total", dto.MetricType_COUNTER, nil},
	{"etcd_debugging_lease_ttl_total", dto.MetricType_HISTOGRAM, nil},
	{"etcd_debugging_server_lease_expired_total", dto.MetricType_COUNTER, nil},

	{"os_fd_used", dto.MetricType_GAUGE, nil},
	{"os_fd_limit", dto.MetricType_GAUGE, nil},
	{"process_open_fds", dto.MetricType_GAUGE, nil},
}

// scrape reads url's /metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value returns the value of the first series of family name whose
// labels include want, summed over matching series for counters.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
series:
	for _, m := range mf.GetMetric() {
		for k, v := range want {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
				continue series
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}

// startMetricsCluster starts n members in one process, with --metrics=extensive.
func startMetricsCluster(t *testing.T, n int) []*Member {
	t.Helper()
	var initial []string
	peers := make([]string, n)
	for i := range n {
		peers[i] = "http://" + freeport.Addr(t)
		initial = append(initial, "m"+string(rune('1'+i))+"="+peers[i])
	}
	ms := make([]*Member, n)
	for i := range n {
		cfg := testConfig(t, filepath.Join(t.TempDir(), "data"))
		cfg.Name = "m" + string(rune('1'+i))
		cfg.ListenPeerURLs = []string{peers[i]}
		cfg.InitialAdvertisePeerURLs = []string{peers[i]}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.HeartbeatMs, cfg.ElectionMs = 20, 200
		cfg.ExtensiveMetrics = true
		ms[i] = start(t, cfg)
	}
	return ms
}

// TestMetricsFamilies scrapes a member of a 3-member cluster that served
// some traffic and checks every family dashboards and alerts query for
// etcd: present, with etcd's type and label names, and a few values that
// say the counting is wired.
func TestMetricsFamilies(t *testing.T) {
	ms := startMetricsCluster(t, 3)
	ctx := ctxT(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: ms[0].ClientURLs(), DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, k := range []string{"a", "b", "c"} {
		if _, err := c.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version("a"), "=", 1)).Then(clientv3.OpPut("d", "v")).Commit(); err != nil {
		t.Fatal(err)
	}
	lease, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	url := ms[0].ClientURLs()[0]
	if resp, err := http.Get(url + "/health"); err == nil {
		resp.Body.Close()
	}

	// Peers measure round trips on their streams' keepalives: wait for
	// one, and for the member to have counted its keys.
	var mfs map[string]*dto.MetricFamily
	kit.WaitFor(t, "a peer round trip measured", func() bool {
		mfs = scrape(t, url)
		v, _ := value(mfs, "etcd_network_peer_round_trip_time_seconds", nil)
		return v > 0
	})

	for _, want := range etcdFamilies {
		mf, ok := mfs[want.name]
		if !ok {
			t.Errorf("%s: missing", want.name)
			continue
		}
		if mf.GetType() != want.typ {
			t.Errorf("%s: type %v, want %v", want.name, mf.GetType(), want.typ)
		}
		if len(mf.GetMetric()) == 0 {
			t.Errorf("%s: no series", want.name)
			continue
		}
		for _, m := range mf.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
			}
			slices.Sort(got)
			if !slices.Equal(got, want.labels) {
				t.Errorf("%s: labels %v, want %v", want.name, got, want.labels)
				break
			}
		}
	}

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   func(float64) bool
		what   string
	}{
		// a, b and d live; c deleted.
		{"etcd_debugging_mvcc_keys_total", nil, func(v float64) bool { return v == 3 }, "3"},
		// Three puts and the txn's.
		{"etcd_mvcc_put_total", nil, func(v float64) bool { return v == 4 }, "4"},
		{"etcd_mvcc_delete_total", nil, func(v float64) bool { return v == 1 }, "1"},
		{"etcd_mvcc_txn_total", nil, func(v float64) bool { return v == 1 }, "1"},
		{"etcd_mvcc_range_total", nil, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"etcd_debugging_lease_granted_total", nil, func(v float64) bool { return v == 1 }, "1"},
		{"etcd_debugging_lease_revoked_total", nil, func(v float64) bool { return v == 1 }, "1"},
		{"etcd_debugging_lease_ttl_total", nil, func(v float64) bool { return v == 1 }, "1 observation"},
		{"etcd_server_is_learner", nil, func(v float64) bool { return v == 0 }, "0"},
		{"etcd_disk_wal_write_bytes_total", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"etcd_network_client_grpc_received_bytes_total", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"etcd_network_client_grpc_sent_bytes_total", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"os_fd_used", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"os_fd_limit", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"grpc_server_handling_seconds", map[string]string{"grpc_method": "Put"}, func(v float64) bool { return v == 3 }, "3 observations"},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Put", "grpc_code": "OK"}, func(v float64) bool { return v == 3 }, "3"},
	} {
		v, ok := value(mfs, c.name, c.labels)
		if !ok || !c.want(v) {
			t.Errorf("%s%v = %v (found %v), want %s", c.name, c.labels, v, ok, c.what)
		}
	}
}

// TestMetricsBasicHasNoHistogram checks etcd's default --metrics=basic:
// no grpc_server_handling_seconds.
func TestMetricsBasicHasNoHistogram(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	if _, err := c.Put(ctxT(t), "k", "v"); err != nil {
		t.Fatal(err)
	}
	mfs := scrape(t, m.ClientURLs()[0])
	if _, ok := mfs["grpc_server_handling_seconds"]; ok {
		t.Error("grpc_server_handling_seconds without --metrics=extensive")
	}
	if _, ok := mfs["grpc_server_handled_total"]; !ok {
		t.Error("grpc_server_handled_total missing")
	}
}

// TestMetricsSelfClientNotCounted checks that a Lock call counts as one
// Lock, not also as the txns and watches the lock service makes through
// the member's self-client.
func TestMetricsSelfClientNotCounted(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	ctx := ctxT(t)
	url := m.ClientURLs()[0]
	started := func(method string) float64 {
		v, _ := value(scrape(t, url), "grpc_server_started_total", map[string]string{"grpc_method": method})
		return v
	}
	lease, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	txns, ranges := started("Txn"), started("Range")
	lc := v3lockpb.NewLockClient(c.ActiveConnection())
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := lc.Lock(lctx, &v3lockpb.LockRequest{Name: []byte("l"), Lease: int64(lease.ID)}); err != nil {
		t.Fatal(err)
	}
	if got := started("Lock"); got != 1 {
		t.Errorf("started{Lock} = %v, want 1", got)
	}
	if got := started("Txn"); got != txns {
		t.Errorf("started{Txn} went from %v to %v: the self-client's calls were counted", txns, got)
	}
	if got := started("Range"); got != ranges {
		t.Errorf("started{Range} went from %v to %v: the self-client's calls were counted", ranges, got)
	}
}
