package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

const quota2MB = 2 << 20

// fillToQuota puts 1 KiB values under prefix until a put is refused, and
// returns how many went in and the error of the refused one.
func fillToQuota(t *testing.T, s *Server, prefix string) (int, error) {
	t.Helper()
	// Random values: Pebble's compression would shrink repeated bytes.
	rnd := rand.New(rand.NewPCG(1, 2))
	val := make([]byte, 1024)
	for i := 0; ; i++ {
		for j := range val {
			val[j] = byte(rnd.Uint32())
		}
		_, err := s.Put(context.Background(), &pb.PutRequest{Key: fmt.Appendf(nil, "%s%06d", prefix, i), Value: val})
		if err != nil {
			return i, err
		}
		if i > 100_000 {
			t.Fatalf("%d KiB accepted under a %d-byte quota", i, quota2MB)
		}
	}
}

// TestQuotaHonoured: with a 2 MiB quota, a loop of puts is refused with
// etcd's error before the accounted size passes the quota (a few percent
// at most), the refusal raises the NOSPACE alarm, and the engine, once
// settled, holds little more than the quota.
func TestQuotaHonoured(t *testing.T) {
	s := startServer(t, t.TempDir(), func(c *Config) {
		c.QuotaBackendBytes = quota2MB
		c.UnsafeNoFsync = true
	})
	n, err := fillToQuota(t, s, "k")
	acc := s.quota.accounted()
	if !errors.Is(err, ErrNoSpace) || err.Error() != "etcdserver: mvcc: database space exceeded" {
		t.Fatalf("put %d: %v, want etcd's database space exceeded", n, err)
	}
	t.Logf("%d puts of 1 KiB accepted; %d bytes accounted at the refusal, engine size %d", n, acc, s.eng.Size())
	// A measure may find one more write-ahead log than the last one did.
	if acc > quota2MB*105/100 {
		t.Errorf("%d bytes accounted at the first refusal, more than 5%% over the %d-byte quota", acc, quota2MB)
	}
	// Every put is kept twice (the raft log and the store), and the logs
	// take their share: at least a fifth of the quota is data.
	if n < quota2MB/5/1024 {
		t.Errorf("only %d KiB accepted under a %d-byte quota", n, quota2MB)
	}
	waitUntil(t, "the NOSPACE alarm", func() bool { return len(s.Alarms()) == 1 })
	if a := s.Alarms()[0]; a.MemberID != s.MemberID() || a.Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarm = %v", a)
	}
	// Once the engine settles (its memtable flushed, its compactions
	// done) it holds no more than a few percent over the quota.
	if err := s.eng.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the compactions to finish", func() bool {
		m := s.eng.DB().Metrics()
		return m.Compact.NumInProgress == 0 && m.Table.Local.ObsoleteSize+m.Table.Local.ZombieSize == 0
	})
	settled := s.eng.Size()
	t.Logf("settled size %d, in use %d", settled, s.eng.SizeInUse())
	if settled > quota2MB*105/100 {
		t.Errorf("engine size %d once settled, more than 5%% over the %d-byte quota", settled, quota2MB)
	}
}

// sstWritesFail is an errorfs injector that, while on, fails every write
// to a table with ENOSPC: flushes and compactions fail as on a full
// device, while the write-ahead log (preallocated and reused) goes on.
type sstWritesFail struct{ on atomic.Bool }

func (f *sstWritesFail) String() string { return "table writes fail with ENOSPC" }

func (f *sstWritesFail) MaybeError(op errorfs.Op) error {
	if f.on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".sst") {
		return syscall.ENOSPC
	}
	return nil
}

// TestFullDeviceRaisesAlarmAndClears: a flush that fails for a full device
// raises the NOSPACE alarm through raft and refuses writes that add data
// while reads and deletes go on; once a flush succeeds again, the member
// accepts writes and the alarm clears itself.
func TestFullDeviceRaisesAlarmAndClears(t *testing.T) {
	inj := &sstWritesFail{}
	reg := prometheus.NewRegistry()
	s := startServerWith(t, "data", testingKnobs{}, func(c *Config) {
		c.FS = errorfs.Wrap(vfs.NewMem(), inj)
		c.Metrics = reg
	})
	putN(t, s, "k", 10)
	inj.on.Store(true)
	if _, err := s.eng.DB().AsyncFlush(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the NOSPACE alarm", func() bool { return len(s.Alarms()) == 1 })
	if a := s.Alarms()[0]; a.MemberID != s.MemberID() || a.Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarm = %v", a)
	}
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k0"), Value: []byte("v")}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("put on a full device: %v, want ErrNoSpace", err)
	}
	if r := get(t, s, "k1", false); len(r.Kvs) != 1 {
		t.Fatalf("read on a full device: %v", r)
	}
	if _, err := s.DeleteRange(context.Background(), &pb.DeleteRangeRequest{Key: []byte("k1")}); err != nil {
		t.Fatalf("delete on a full device: %v", err)
	}
	if v := metricValue(t, reg, "cairn_server_read_only"); v != 1 {
		t.Errorf("cairn_server_read_only = %v on a full device", v)
	}
	if v := metricValue(t, reg, "cairn_storage_background_errors_total"); v < 1 {
		t.Errorf("cairn_storage_background_errors_total = %v after a failed flush", v)
	}
	if v := metricValue(t, reg, "cairn_server_nospace_alarms_raised_total"); v != 1 {
		t.Errorf("cairn_server_nospace_alarms_raised_total = %v", v)
	}

	inj.on.Store(false) // space freed: Pebble's retried flush succeeds
	waitUntil(t, "the NOSPACE alarm to clear itself", func() bool { return len(s.Alarms()) == 0 })
	put(t, s, "k0", "again")
	if v := metricValue(t, reg, "cairn_server_read_only"); v != 0 {
		t.Errorf("cairn_server_read_only = %v once space is back", v)
	}
	if v := metricValue(t, reg, "cairn_server_nospace_alarms_cleared_total"); v != 1 {
		t.Errorf("cairn_server_nospace_alarms_cleared_total = %v", v)
	}
}

// metricValue returns the value of the gauge or counter name in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if mf.GetType() == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// TestFullDeviceReadOnlyWithoutRaft: when the NOSPACE alarm cannot be
// committed, a member told of a full device still refuses writes that add
// data, at once, on its own.
func TestFullDeviceReadOnlyWithoutRaft(t *testing.T) {
	s := startServerWith(t, t.TempDir(), testingKnobs{skipPropose: true}, nil)
	s.quota.onBackgroundError(fmt.Errorf("flush: %w", syscall.ENOSPC))
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("put on a full device: %v, want ErrNoSpace", err)
	}
	if n := len(s.Alarms()); n != 0 {
		t.Fatalf("alarms = %v with no proposal committing", s.Alarms())
	}
	// Another background error (EIO in a compaction) is no full device:
	// the member stops with it instead of serving from a failing disk.
	s2 := startServer(t, t.TempDir(), nil)
	s2.quota.onBackgroundError(fmt.Errorf("compaction: %w", syscall.EIO))
	<-s2.Done()
	if err := s2.Err(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("member after a compaction's EIO: %v, want it stopped with the EIO", err)
	}
}

// TestDefragmentReclaims follows etcd's NOSPACE runbook on a member whose
// 2 MiB quota is exhausted: after the keys are deleted and the history
// compacted, Defragment brings the size well under what it was when the
// alarm was raised and the size in use and the size together (Pebble's own
// compactions may have shrunk it part of the way already; etcd's file
// would not), and the alarm then clears itself.
func TestDefragmentReclaims(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	s := startServer(t, dir, func(c *Config) {
		c.QuotaBackendBytes = quota2MB
		c.UnsafeNoFsync = true
		c.Metrics = reg
	})
	ctx := context.Background()
	if _, err := fillToQuota(t, s, "k"); !errors.Is(err, ErrNoSpace) {
		t.Fatal(err)
	}
	waitUntil(t, "the NOSPACE alarm", func() bool { return len(s.Alarms()) == 1 })
	full := s.Status()
	del, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || del.Deleted == 0 {
		t.Fatalf("delete = %v, %v", del, err)
	}
	if _, err := s.Compact(ctx, &pb.CompactionRequest{Revision: del.Header.Revision, Physical: true}); err != nil {
		t.Fatal(err)
	}
	before := s.Status()
	if err := s.Defragment(ctx); err != nil {
		t.Fatalf("Defragment: %v", err)
	}
	after := s.Status()
	t.Logf("at the alarm: size %d; before defragment: size %d, in use %d; after: size %d, in use %d", full.DBSize, before.DBSize, before.DBSizeInUse, after.DBSize, after.DBSizeInUse)
	if after.DBSize >= full.DBSize*3/4 {
		t.Errorf("the size was %d at the alarm and %d after Defragment", full.DBSize, after.DBSize)
	}
	// What is left above the data in use is the logs kept for reuse:
	// about 4.4 times the 64 KiB memtable.
	if slack := after.DBSize - after.DBSizeInUse; slack > 400<<10 {
		t.Errorf("after Defragment the size %d is %d over the size in use %d", after.DBSize, slack, after.DBSizeInUse)
	}
	if v := metricValue(t, reg, "etcd_mvcc_db_total_size_in_bytes"); v > float64(full.DBSize*3/4) {
		t.Errorf("etcd_mvcc_db_total_size_in_bytes = %v after Defragment", v)
	}
	waitUntil(t, "the NOSPACE alarm to clear itself", func() bool { return len(s.Alarms()) == 0 })
	put(t, s, "k", "v")
	if v := metricValue(t, reg, "cairn_server_nospace_alarms_cleared_total"); v != 1 {
		t.Errorf("cairn_server_nospace_alarms_cleared_total = %v", v)
	}
	if v := metricValue(t, reg, "etcd_disk_defrag_inflight"); v != 0 {
		t.Errorf("etcd_disk_defrag_inflight = %v once done", v)
	}

	// Restarted, the member measures itself afresh: no alarm, and it
	// takes writes again up to its quota.
	s.Stop()
	s = startServer(t, dir, func(c *Config) {
		c.QuotaBackendBytes = quota2MB
		c.UnsafeNoFsync = true
	})
	if n, err := fillToQuota(t, s, "again"); n < 100 {
		t.Fatalf("after a restart, put %d refused: %v", n, err)
	}
}

// TestDefragmentOnline: reads and writes go on while Defragment runs, and
// none of them fails or loses data.
func TestDefragmentOnline(t *testing.T) {
	s := startServer(t, t.TempDir(), func(c *Config) { c.UnsafeNoFsync = true })
	putN(t, s, "k", 2000)
	if _, err := s.DeleteRange(context.Background(), &pb.DeleteRangeRequest{Key: []byte("k1"), RangeEnd: []byte("k2")}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		var err error
		for i := 0; err == nil; i++ {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			key := fmt.Appendf(nil, "w%06d", i)
			if _, err = s.Put(context.Background(), &pb.PutRequest{Key: key, Value: []byte("v")}); err == nil {
				var r *pb.RangeResponse
				r, err = s.Range(context.Background(), &pb.RangeRequest{Key: key})
				if err == nil && len(r.Kvs) != 1 {
					err = fmt.Errorf("%s not found right after its put", key)
				}
			}
		}
		errc <- err
	}()
	if err := s.Defragment(context.Background()); err != nil {
		t.Fatalf("Defragment: %v", err)
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("during Defragment: %v", err)
	}
	r, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true})
	if err != nil || r.Count != 2000-1111 {
		t.Fatalf("keys k* after Defragment: %v, %v; want %d", r.GetCount(), err, 2000-1111)
	}
}
