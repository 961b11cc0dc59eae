package embed

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestNoSpaceRunbook follows etcd's runbook for a member out of space,
// through clientv3: puts are refused with etcd's error and the NOSPACE
// alarm listed; deleting the keys, compacting the history, defragmenting
// and disarming give a member that accepts writes again, with a database
// that shrank.
func TestNoSpaceRunbook(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.QuotaBackendBytes = 2 << 20
	m := start(t, cfg)
	c := client(t, m)
	ctx := ctxT(t)
	ep := m.ClientURLs()[0]

	rnd := rand.New(rand.NewPCG(3, 4))
	val := make([]byte, 1024)
	var err error
	for i := 0; err == nil; i++ {
		if i > 20_000 {
			t.Fatalf("%d KiB accepted under a 2 MiB quota", i)
		}
		for j := range val {
			val[j] = byte(rnd.Uint32())
		}
		_, err = c.Put(ctx, fmt.Sprintf("k%06d", i), string(val))
	}
	if !errors.Is(err, rpctypes.ErrNoSpace) || err.Error() != "etcdserver: mvcc: database space exceeded" {
		t.Fatalf("put over quota: %v, want %v", err, rpctypes.ErrNoSpace)
	}
	alarms, err := c.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) != 1 || alarms.Alarms[0].Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("AlarmList = %v, %v; want NOSPACE", alarms, err)
	}
	full, err := c.Status(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Errors) == 0 {
		t.Errorf("Status lists no errors with the NOSPACE alarm raised")
	}

	del, err := c.Delete(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	before, err := c.Status(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Defragment(ctx, ep); err != nil {
		t.Fatalf("Defragment: %v", err)
	}
	after, err := c.Status(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dbSize %d (in use %d) before Defragment, %d (in use %d) after", before.DbSize, before.DbSizeInUse, after.DbSize, after.DbSizeInUse)
	if after.DbSize >= before.DbSize*3/4 {
		t.Errorf("Defragment took dbSize from %d to %d only", before.DbSize, after.DbSize)
	}
	if after.DbSize-after.DbSizeInUse > 400<<10 {
		t.Errorf("after Defragment dbSize %d is far above dbSizeInUse %d", after.DbSize, after.DbSizeInUse)
	}
	// etcd's runbook disarms by hand; cairn may have cleared the alarm
	// itself by now, and the disarm succeeds either way.
	if _, err := c.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: m.Server().MemberID(), Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatalf("AlarmDisarm: %v", err)
	}
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put after the runbook: %v", err)
	}
	alarms, err = c.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) != 0 {
		t.Fatalf("AlarmList after the runbook = %v, %v", alarms, err)
	}
}
