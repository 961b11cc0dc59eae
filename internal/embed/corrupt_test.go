package embed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/tests/kit"
)

// corruptEngine writes key=value into the stopped member's store behind
// raft's back: the member's history now holds a revision no other member
// has.
func corruptEngine(t *testing.T, dir, key, value string) {
	t.Helper()
	eng, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	kv, err := mvcc.Open(eng, mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	b := eng.NewBatch()
	w := kv.Write(b)
	if _, err := w.Put(&pb.PutRequest{Key: []byte(key), Value: []byte(value)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	w.Done()
}

// leaderAndFollowers returns the index of the leader of ms and of the
// others.
func leaderAndFollowers(t *testing.T, ms []*Member) (int, []int) {
	t.Helper()
	var lead uint64
	kit.WaitFor(t, "a leader", func() bool {
		lead = ms[0].Server().Leader()
		return lead != 0
	})
	li, followers := -1, []int(nil)
	for i, m := range ms {
		if m.Server().MemberID() == lead {
			li = i
		} else {
			followers = append(followers, i)
		}
	}
	if li < 0 {
		t.Fatalf("leader %x is not a member", lead)
	}
	return li, followers
}

// waitCorruptAlarm waits until c lists the CORRUPT alarm for member id,
// and checks that no other member is blamed: with unknownToo, an alarm for
// member 0 (raised, as etcd does, when the compaction hash check finds a
// mismatch while a peer that has not reached the compaction is skipped,
// so no hash has a majority) may be raised as well.
func waitCorruptAlarm(t *testing.T, c *clientv3.Client, id uint64, unknownToo bool) {
	t.Helper()
	want := &pb.AlarmMember{MemberID: id, Alarm: pb.AlarmType_CORRUPT}
	var alarms []*pb.AlarmMember
	kit.WaitFor(t, "the CORRUPT alarm", func() bool {
		resp, err := c.AlarmList(ctxT(t))
		if err != nil {
			return false
		}
		alarms = resp.Alarms
		return slices.ContainsFunc(alarms, func(a *pb.AlarmMember) bool {
			return a.MemberID == want.MemberID && a.Alarm == want.Alarm
		})
	})
	for _, a := range alarms {
		if a.Alarm != pb.AlarmType_CORRUPT || (a.MemberID != id && (a.MemberID != 0 || !unknownToo)) {
			t.Fatalf("alarms %v, want only %v", alarms, want)
		}
	}
}

// TestCorruptCheckInitialAndPeriodic corrupts a stopped follower's store:
// restarted with the initial check it refuses to start; restarted without
// it, the leader's periodic check raises the CORRUPT alarm for it, after
// which writes fail as in etcd. A healthy member passes the initial check.
func TestCorruptCheckInitialAndPeriodic(t *testing.T) {
	ms := startCluster(t, 3, "http", func(c *Config) { c.Recovery.CorruptCheckTime = 100 * time.Millisecond })
	li, fs := leaderAndFollowers(t, ms)
	lc := client(t, ms[li])
	ctx := ctxT(t)
	if _, err := lc.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}

	// A healthy follower restarts through the initial check.
	healthy := ms[fs[1]]
	if _, err := client(t, healthy).Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	healthy.Close()
	hcfg := *healthy.cfg
	hcfg.Recovery.InitialCorruptCheck = true
	ms[fs[1]] = start(t, &hcfg)

	bad := ms[fs[0]]
	if _, err := client(t, bad).Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	badID := bad.Server().MemberID()
	bad.Close()
	corruptEngine(t, bad.cfg.DataDir, "evil", "x")
	// The others catch up with the corrupted member's revision.
	if _, err := lc.Put(ctx, "k2", "v"); err != nil {
		t.Fatal(err)
	}

	// The refused start listens for peers on a port of its own. On the
	// member's port, a peer redialing while the refused start held it
	// would wait on a connection nobody serves until the transport gives
	// up on it (DialTimeout + WriteTimeout), which only slows the test.
	cfg := *bad.cfg
	cfg.Recovery.InitialCorruptCheck = true
	refused := cfg
	refused.ListenPeerURLs = []string{fmt.Sprintf("http://127.0.0.1:%d", freeport.Port(t))}
	if m, err := Start(&refused); !errors.Is(err, server.ErrInitialCorruptCheck) {
		if err == nil {
			m.Close()
		}
		t.Fatalf("restart of the corrupted member with the initial check: %v, want %v", err, server.ErrInitialCorruptCheck)
	}
	resp, err := lc.AlarmList(ctx)
	if err != nil || len(resp.Alarms) != 0 {
		t.Fatalf("alarms before the corrupted member is back: %v, %v; want none", resp, err)
	}

	cfg.Recovery.InitialCorruptCheck = false
	ms[fs[0]] = start(t, &cfg)
	waitCorruptAlarm(t, lc, badID, false)
	for i, m := range ms {
		mc := client(t, m)
		// The restarted member may take a while to hear from the leader
		// again (its peers' streams to it reconnect); a linearizable read
		// shows it has.
		kit.WaitFor(t, fmt.Sprintf("member %d to serve a linearizable read", i), func() bool {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := mc.Get(rctx, "k")
			return err == nil
		})
		_, err := mc.Put(ctx, "refused", "v")
		if err == nil || err.Error() != rpctypes.ErrCorrupt.Error() {
			t.Errorf("put through member %d with CORRUPT raised: %v, want %v", i, err, rpctypes.ErrCorrupt)
		}
	}
	// Reads still work, as in etcd.
	if _, err := lc.Get(ctx, "k"); err != nil {
		t.Errorf("get with CORRUPT raised: %v", err)
	}
}

// TestCompactHashCheck corrupts a stopped follower's store and compacts
// past the corrupted revision: the leader's compaction hash check finds the
// follower's hash in the minority and raises the CORRUPT alarm for it.
func TestCompactHashCheck(t *testing.T) {
	ms := startCluster(t, 3, "http", func(c *Config) { c.Recovery.CompactHashCheckTime = 100 * time.Millisecond })
	li, fs := leaderAndFollowers(t, ms)
	lc := client(t, ms[li])
	ctx := ctxT(t)
	if _, err := lc.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	bad := ms[fs[0]]
	if _, err := client(t, bad).Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	badID := bad.Server().MemberID()
	bad.Close()
	corruptEngine(t, bad.cfg.DataDir, "evil", "x")
	cfg := *bad.cfg
	ms[fs[0]] = start(t, &cfg)

	put, err := lc.Put(ctx, "k2", "v")
	if err != nil {
		t.Fatal(err)
	}
	// No periodic check runs here, and until a compaction there is no
	// compaction hash to compare.
	resp, err := lc.AlarmList(ctx)
	if err != nil || len(resp.Alarms) != 0 {
		t.Fatalf("alarms before the compaction: %v, %v; want none", resp, err)
	}
	if _, err := lc.Compact(ctx, put.Header.Revision); err != nil {
		t.Fatal(err)
	}
	waitCorruptAlarm(t, lc, badID, true)
}
