package lease

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func TestRenew(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	m.grant(1, 10)
	if _, _, err := m.renew(1); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("Renew on a follower: %v, want ErrNotPrimary", err)
	}
	m.le.Promote(0)
	if _, _, err := m.renew(2); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("Renew of an unknown lease: %v, want ErrLeaseNotFound", err)
	}
	m.clock.Advance(6 * time.Second)
	if ttl := m.ttl(1); ttl != 4 {
		t.Fatalf("TTL after 6 s = %d, want 4", ttl)
	}
	ttl, reset, err := m.renew(1)
	if err != nil || ttl != 10 || reset {
		t.Fatalf("Renew = %d, %v, %v; want 10, no checkpoint to reset", ttl, reset, err)
	}
	if ttl := m.ttl(1); ttl != 10 {
		t.Fatalf("TTL after renew = %d, want 10", ttl)
	}
	// Renewed at 6 s, so it lives until 16 s, not 10 s.
	m.clock.Advance(9 * time.Second)
	if ids := m.le.Expired(10); len(ids) != 0 {
		t.Fatalf("renewed lease reported expired: %v", ids)
	}
	m.clock.Advance(time.Second)
	if ids := m.le.Expired(10); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("Expired = %v, want [1]", ids)
	}
	m.le.Demote()
	if _, _, err := m.renew(1); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("Renew after Demote: %v, want ErrNotPrimary", err)
	}
}

// TestRenewExpiredWaitsForRevoke checks that a keep-alive of a lease past
// its deadline does not bring it back: it waits until the revoke, then
// reports the lease gone (so a client that sees TTL 0 finds the keys
// deleted), or until this member stops leading, or the caller gives up.
func TestRenewExpiredWaitsForRevoke(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release func(m *member, cancel context.CancelFunc)
		want    error
	}{
		{"revoked", func(m *member, _ context.CancelFunc) { m.revoke(1) }, ErrLeaseNotFound},
		{"demoted", func(m *member, _ context.CancelFunc) { m.le.Demote() }, ErrNotPrimary},
		{"canceled", func(_ *member, cancel context.CancelFunc) { cancel() }, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMember(t, Options{MinTTL: 1})
			m.grant(1, 5)
			m.put("k", 1)
			m.le.Promote(0)
			m.clock.Advance(5 * time.Second)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, _, err := m.le.Renew(ctx, 1)
				errc <- err
			}()
			select {
			case err := <-errc:
				t.Fatalf("Renew of an expired lease returned %v before anything happened", err)
			default:
			}
			tc.release(m, cancel)
			select {
			case err := <-errc:
				if !errors.Is(err, tc.want) {
					t.Fatalf("Renew = %v, want %v", err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Renew still waiting after its release")
			}
		})
	}
}

func TestExpiredOrderAndRetry(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1, ExpiredRetry: 3 * time.Second})
	for _, g := range [][2]int64{{10, 5}, {11, 3}, {12, 8}, {13, 3}, {14, 4}, {15, 100}} {
		m.grant(g[0], g[1])
	}
	if ids := m.le.Expired(100); ids != nil {
		t.Fatalf("follower reported expired leases %v", ids)
	}
	m.le.Promote(0)
	m.clock.Advance(2 * time.Second)
	if ids := m.le.Expired(100); len(ids) != 0 {
		t.Fatalf("Expired at 2 s = %v, want none", ids)
	}
	m.clock.Advance(6 * time.Second) // 8 s: all but lease 15 are due
	if ids := m.le.Expired(3); !slices.Equal(ids, []int64{11, 13, 14}) {
		t.Fatalf("Expired(3) = %v, want [11 13 14] (deadline, then ID order, at most 3)", ids)
	}
	if ids := m.le.Expired(100); !slices.Equal(ids, []int64{10, 12}) {
		t.Fatalf("Expired = %v, want the rest [10 12]", ids)
	}
	if ids := m.le.Expired(100); len(ids) != 0 {
		t.Fatalf("reported again before the retry interval: %v", ids)
	}
	m.revoke(11)
	m.revoke(13)
	m.revoke(10)
	m.clock.Advance(3 * time.Second)
	// 12 and 14 were not revoked (a lost proposal): reported again.
	if ids := m.le.Expired(100); !slices.Equal(ids, []int64{12, 14}) {
		t.Fatalf("after the retry interval Expired = %v, want [12 14]", ids)
	}
}

// TestCheckpointSurvivesLeaderChange follows a long lease through a leader
// change: the remaining TTL checkpointed through raft is what the new
// leader restarts the lease's clock from, plus the election timeout.
func TestCheckpointSurvivesLeaderChange(t *testing.T) {
	const extend = time.Second
	m := newMember(t, Options{MinTTL: 1, CheckpointInterval: 5 * time.Minute})
	m.le.Promote(extend)
	m.grant(1, 1000) // long enough to be checkpointed
	m.grant(2, 100)  // too short to be
	m.clock.Advance(5*time.Minute - time.Second)
	if cps := m.le.Checkpoints(10); len(cps) != 0 {
		t.Fatalf("checkpoints before the interval: %v", cps)
	}
	m.clock.Advance(time.Second)
	cps := m.le.Checkpoints(10)
	if len(cps) != 1 || cps[0].ID != 1 || cps[0].Remaining_TTL != 700 {
		t.Fatalf("Checkpoints at 5 min = %v, want lease 1 with 700 s left", cps)
	}
	m.checkpoint(1, 700)

	// Leadership moves away, 100 s pass, and it comes back (or another
	// member with the same applied state takes over).
	m.le.Demote()
	m.clock.Advance(100 * time.Second)
	m.le.Promote(extend)
	if ttl := m.ttl(1); ttl != 701 {
		t.Fatalf("TTL after leader change = %d, want 701 (checkpointed 700 + 1 s election)", ttl)
	}
	if ttl := m.ttl(2); ttl != 101 {
		t.Fatalf("TTL of the unchecked lease = %d, want its full 100 + 1", ttl)
	}

	// A renewal makes the checkpoint stale: the server must clear it.
	ttl, reset, err := m.renew(1)
	if err != nil || ttl != 1000 || !reset {
		t.Fatalf("Renew = %d, %v, %v; want 1000 and a checkpoint to reset", ttl, reset, err)
	}
	m.checkpoint(1, 0)
	if _, reset, _ := m.renew(1); reset {
		t.Fatal("Renew still asks for a reset after the checkpoint was cleared")
	}
	m.le.Demote()
	m.le.Promote(extend)
	if ttl := m.ttl(1); ttl != 1001 {
		t.Fatalf("TTL after a cleared checkpoint and leader change = %d, want 1001", ttl)
	}
}

func TestCheckpointPersistsAcrossRestart(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1, CheckpointInterval: time.Minute})
	m.grant(1, 600)
	m.grant(2, 600)
	m.put("x", 1)
	m.put("y", 2)
	m.le.Promote(0)
	m.clock.Advance(time.Minute)
	cps := m.le.Checkpoints(10)
	if len(cps) != 2 {
		t.Fatalf("Checkpoints = %v, want both leases", cps)
	}
	m.apply(func(a *applier) {
		for _, cp := range cps {
			if err := m.le.Checkpoint(a.b, cp.ID, cp.Remaining_TTL); err != nil {
				t.Fatal(err)
			}
		}
	})
	m.revoke(2)
	m.reopen()

	if m.le.IsPrimary() {
		t.Fatal("a reopened lessor is primary before Promote")
	}
	inf, ok := m.le.Lookup(1)
	if !ok || inf.TTL != 600 || inf.CheckpointedTTL != 540 || inf.Remaining != -1 {
		t.Fatalf("Lookup after reopen = %+v, %v; want TTL 600, checkpoint 540, stopped clock", inf, ok)
	}
	if m.le.Exists(2) {
		t.Fatal("revoked lease back after reopen")
	}
	if ks := m.keys(1); !slices.Equal(ks, []string{"x"}) {
		t.Fatalf("keys after reopen = %q, want [x]", ks)
	}
	m.le.Promote(0)
	if ttl := m.ttl(1); ttl != 540 {
		t.Fatalf("TTL after restart = %d, want the checkpointed 540", ttl)
	}
}

func TestCheckpointsRearmAndSkip(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1, CheckpointInterval: time.Minute})
	m.le.Promote(0)
	m.grant(1, 120)
	m.clock.Advance(time.Minute)
	m.renew(1) // renewed just as its checkpoint falls due
	if cps := m.le.Checkpoints(10); len(cps) != 0 {
		t.Fatalf("Checkpoints = %v, want none: the lease has its full TTL", cps)
	}
	// The next one is still armed (etcd would drop it).
	m.clock.Advance(time.Minute - 500*time.Millisecond)
	m.clock.Advance(500 * time.Millisecond)
	cps := m.le.Checkpoints(10)
	if len(cps) != 1 || cps[0].Remaining_TTL != 60 {
		t.Fatalf("next interval's Checkpoints = %v, want lease 1 with 60 s left", cps)
	}
	// Renewed half a second into a second: the remaining TTL rounds up.
	m.clock.Advance(500 * time.Millisecond)
	m.renew(1)
	m.clock.Advance(time.Minute - 500*time.Millisecond)
	if cps := m.le.Checkpoints(10); len(cps) != 1 || cps[0].Remaining_TTL != 61 {
		t.Fatalf("Checkpoints = %v, want lease 1 with 61 s left (60.5 s rounded up)", cps)
	}
	m.clock.Advance(2 * time.Minute) // expired: no checkpoint for it
	if cps := m.le.Checkpoints(10); len(cps) != 0 {
		t.Fatalf("checkpoint of an expired lease: %v", cps)
	}
	// Checkpoints can be turned off.
	off := newMember(t, Options{MinTTL: 1, CheckpointInterval: -1})
	off.le.Promote(0)
	off.grant(1, 10000)
	off.clock.Advance(time.Hour)
	if cps := off.le.Checkpoints(10); len(cps) != 0 {
		t.Fatalf("checkpoints while disabled: %v", cps)
	}
}

func TestCheckpointUnknownLeaseIsIgnored(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	m.checkpoint(99, 10)
	if m.le.Exists(99) {
		t.Fatal("a checkpoint created a lease")
	}
}

// TestPromoteSpreadsExpiries checks that a new leader does not expire more
// leases in one second than 3/4 of the revoke rate.
func TestPromoteSpreadsExpiries(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1, RevokeRate: 8}) // 6 a second
	m.apply(func(a *applier) {
		for id := int64(1); id <= 20; id++ {
			if _, err := a.grant(id, 10); err != nil {
				t.Fatal(err)
			}
		}
	})
	m.le.Promote(0)
	perSecond := map[int64]int{}
	for _, id := range m.le.Leases() {
		inf, _ := m.le.Lookup(id)
		perSecond[int64(inf.Remaining/time.Second)]++
	}
	want := map[int64]int{10: 6, 11: 6, 12: 6, 13: 2}
	for s, n := range want {
		if perSecond[s] != n {
			t.Fatalf("expiries per second = %v, want %v", perSecond, want)
		}
	}
	m.clock.Advance(10 * time.Second)
	if ids := m.le.Expired(100); !slices.Equal(ids, []int64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("Expired at 10 s = %v, want the first 6 by ID", ids)
	}
}

func TestRun(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1, CheckpointInterval: time.Minute, RevokeRate: 4})
	m.grant(1, 1)
	m.grant(2, 1)
	m.grant(3, 1)
	m.grant(4, 600)
	m.le.Promote(0)

	var mu sync.Mutex
	var revoked []int64
	var cps []*pb.LeaseCheckpoint
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.le.Run(stop,
			func(ids []int64) { mu.Lock(); revoked = append(revoked, ids...); mu.Unlock() },
			func(c []*pb.LeaseCheckpoint) { mu.Lock(); cps = append(cps, c...); mu.Unlock() })
	}()
	defer func() { close(stop); <-done }()

	// tick advances the fake clock one tick once Run waits on it.
	tick := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for len(m.clock.Timers()) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("Run is not waiting for its next tick")
			}
			time.Sleep(time.Millisecond)
		}
		m.clock.Advance(TickInterval)
	}
	got := func() ([]int64, int) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(revoked), len(cps)
	}
	tick()
	tick() // 1 s: three leases expired, two per tick at 4 a second
	tick()
	tick()
	if ids, _ := got(); !slices.Equal(ids, []int64{1, 2, 3}) {
		t.Fatalf("Run revoked %v, want [1 2 3]", ids)
	}
	for i := 0; i < 120; i++ {
		tick()
	}
	if _, n := got(); n != 1 {
		t.Fatalf("Run proposed %d checkpoints after a minute, want 1", n)
	}
}
