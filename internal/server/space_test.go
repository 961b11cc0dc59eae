package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

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
