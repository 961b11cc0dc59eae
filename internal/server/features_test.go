package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
)

func putN(t *testing.T, s *Server, prefix string, n int) {
	t.Helper()
	for i := range n {
		put(t, s, fmt.Sprintf("%s%d", prefix, i), "v")
	}
}

// TestAutoCompactionPeriodic follows etcd's periodic compactor with a 10m
// retention: revisions are sampled every minute; the first compaction comes
// 10 minutes after start (to the revision sampled at start), the next 10
// minutes later (to the revision sampled 10 minutes before it).
func TestAutoCompactionPeriodic(t *testing.T) {
	clock := clocktest.NewFake()
	s := startServer(t, t.TempDir(), func(c *Config) {
		c.Clock = clock
		c.AutoCompactionRetention = "10m"
	})
	tick := func() {
		clock.Advance(time.Minute)
		waitForTimer(t, clock, time.Minute)
	}
	waitForTimer(t, clock, time.Minute) // sampled revision 1 at t=0
	putN(t, s, "a", 10)                 // revision 11
	for range 9 {
		tick()
	}
	if rev := s.kv.CompactRev(); rev != -1 {
		t.Fatalf("compacted to %d before a full period passed", rev)
	}
	tick() // t=10m
	if rev := s.kv.CompactRev(); rev != 1 {
		t.Fatalf("at 10m compacted to %d, want 1 (the revision at start)", rev)
	}
	putN(t, s, "b", 10) // revisions 12..21, written at t=10m
	for range 9 {
		tick()
	}
	if rev := s.kv.CompactRev(); rev != 1 {
		t.Fatalf("at 19m compacted to %d, want still 1", rev)
	}
	tick() // t=20m
	if rev := s.kv.CompactRev(); rev != 11 {
		t.Fatalf("at 20m compacted to %d, want 11 (the revision 10 minutes ago)", rev)
	}
	if _, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("b0"), Revision: 12}); err != nil {
		t.Fatalf("history newer than the retention was compacted: %v", err)
	}
}

// TestAutoCompactionRevision follows etcd's revision compactor: every five
// minutes, keep the last `retention` revisions.
func TestAutoCompactionRevision(t *testing.T) {
	clock := clocktest.NewFake()
	s := startServer(t, t.TempDir(), func(c *Config) {
		c.Clock = clock
		c.AutoCompactionMode = CompactionModeRevision
		c.AutoCompactionRetention = "5"
	})
	tick := func() {
		clock.Advance(5 * time.Minute)
		waitForTimer(t, clock, 5*time.Minute)
	}
	waitForTimer(t, clock, 5*time.Minute)
	putN(t, s, "a", 20) // revision 21
	tick()
	if rev := s.kv.CompactRev(); rev != 16 {
		t.Fatalf("compacted to %d, want 16", rev)
	}
	tick() // nothing new: no compaction
	if rev := s.kv.CompactRev(); rev != 16 {
		t.Fatalf("compacted to %d without new writes, want 16", rev)
	}
	putN(t, s, "b", 3)
	tick()
	if rev := s.kv.CompactRev(); rev != 19 {
		t.Fatalf("compacted to %d, want 19", rev)
	}
}

func TestRetentionParsing(t *testing.T) {
	for _, c := range []struct {
		mode, in string
		want     time.Duration
	}{
		{CompactionModePeriodic, "", 0},
		{CompactionModePeriodic, "2", 2 * time.Hour},
		{CompactionModePeriodic, "30m", 30 * time.Minute},
		{CompactionModeRevision, "1000", 1000},
	} {
		got, err := parseRetention(c.mode, c.in)
		if err != nil || got != c.want {
			t.Errorf("parseRetention(%q, %q) = %v, %v; want %v", c.mode, c.in, got, err, c.want)
		}
	}
}

func TestQuotaNoSpaceAlarm(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, func(c *Config) { c.QuotaBackendBytes = 1 })
	_, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if !errors.Is(err, ErrNoSpace) || err.Error() != "etcdserver: mvcc: database space exceeded" {
		t.Fatalf("put over quota: %v, want ErrNoSpace", err)
	}
	waitUntil(t, "the NOSPACE alarm", func() bool { return len(s.Alarms()) == 1 })
	if a := s.Alarms()[0]; a.MemberID != s.MemberID() || a.Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarm = %v", a)
	}
	txnPut := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k")}}}}}
	if _, err := s.Txn(context.Background(), txnPut); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("txn with a put over quota: %v, want ErrNoSpace", err)
	}
	// Freeing space stays possible.
	if _, err := s.DeleteRange(context.Background(), &pb.DeleteRangeRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("delete over quota: %v", err)
	}
	txnDel := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}}}}
	if _, err := s.Txn(context.Background(), txnDel); err != nil {
		t.Fatalf("txn without puts over quota: %v", err)
	}
	get(t, s, "k", false)
	s.Stop()

	// The alarm is part of the replicated state: it survives a restart
	// while the member is still over its quota, and writes stay refused
	// until it is disarmed, which answers as etcd's does.
	s = startServer(t, dir, func(c *Config) { c.QuotaBackendBytes = 1 })
	if len(s.Alarms()) != 1 {
		t.Fatalf("alarms after restart = %v", s.Alarms())
	}
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k")}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("put with the alarm raised: %v, want ErrNoSpace", err)
	}
	resp, err := s.Alarm(context.Background(), &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: s.MemberID(), Alarm: pb.AlarmType_NOSPACE})
	if err != nil || len(resp.Alarms) != 1 || resp.Header.GetMemberId() != s.MemberID() {
		t.Fatalf("disarm = %v, %v", resp, err)
	}
	resp, err = s.Alarm(context.Background(), &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
	if err != nil || len(resp.Alarms) != 0 {
		t.Fatalf("alarms after disarm = %v, %v", resp, err)
	}
	// Still over the quota: the next write that adds data raises it again.
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k")}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("put over quota after disarm: %v, want ErrNoSpace", err)
	}
	waitUntil(t, "the NOSPACE alarm raised again", func() bool { return len(s.Alarms()) == 1 })
	s.Stop()

	// Restarted with room to spare, the member clears its alarm itself:
	// nobody has to disarm it.
	s = startServer(t, dir, nil)
	waitUntil(t, "the NOSPACE alarm to clear itself", func() bool { return len(s.Alarms()) == 0 })
	put(t, s, "k", "v")
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	s := startServer(t, dir, func(c *Config) { c.Metrics = reg })
	putN(t, s, "k", 3)
	values := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			values[mf.GetName()] = m.GetGauge().GetValue()
		case dto.MetricType_COUNTER:
			values[mf.GetName()] = m.GetCounter().GetValue()
		case dto.MetricType_HISTOGRAM:
			values[mf.GetName()] = float64(m.GetHistogram().GetSampleCount())
		}
	}
	for name, check := range map[string]func(float64) bool{
		"etcd_server_has_leader":                    func(v float64) bool { return v == 1 },
		"etcd_server_is_leader":                     func(v float64) bool { return v == 1 },
		"etcd_server_leader_changes_seen_total":     func(v float64) bool { return v == 1 },
		"etcd_server_proposals_committed_total":     func(v float64) bool { return v >= 4 },
		"etcd_server_proposals_applied_total":       func(v float64) bool { return v >= 4 },
		"etcd_server_proposals_pending":             func(v float64) bool { return v == 0 },
		"etcd_server_proposals_failed_total":        func(v float64) bool { return v == 0 },
		"etcd_mvcc_db_total_size_in_bytes":          func(v float64) bool { return v > 0 },
		"etcd_mvcc_db_total_size_in_use_in_bytes":   func(v float64) bool { return v >= 0 },
		"etcd_disk_wal_fsync_duration_seconds":      func(v float64) bool { return v >= 3 },
		"etcd_disk_backend_commit_duration_seconds": func(v float64) bool { return v >= 3 },
		"etcd_server_id":                            func(v float64) bool { return v == 1 },
		"etcd_server_quota_backend_bytes":           func(v float64) bool { return v == DefaultQuotaBackendBytes },
		"etcd_disk_defrag_inflight":                 func(v float64) bool { return v == 0 },
		"cairn_storage_background_errors_total":     func(v float64) bool { return v == 0 },
		"cairn_storage_write_stalls_total":          func(v float64) bool { return v >= 0 },
		"cairn_storage_disk_slow_total":             func(v float64) bool { return v == 0 },
		"cairn_server_read_only":                    func(v float64) bool { return v == 0 },
		"cairn_server_nospace_alarms_raised_total":  func(v float64) bool { return v == 0 },
		"cairn_server_nospace_alarms_cleared_total": func(v float64) bool { return v == 0 },
	} {
		v, ok := values[name]
		if !ok {
			t.Errorf("metric %s missing", name)
		} else if !check(v) {
			t.Errorf("metric %s = %v", name, v)
		}
	}
	// A restarted member registers on the same registry again.
	s.Stop()
	startServer(t, dir, func(c *Config) { c.Metrics = reg })
}
