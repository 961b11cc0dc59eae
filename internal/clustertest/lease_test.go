package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/lease"
	"github.com/cairn-db/cairn/internal/server"
)

// The lease tests run on simulated time: TTLs are simulated seconds, and
// the tests wait for conditions, never for the wall clock.

func grant(t *testing.T, m *Member, id, ttl int64) int64 {
	t.Helper()
	r, err := m.Server().LeaseGrant(context.Background(), &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	if err != nil {
		t.Fatalf("grant %x on %s: %v", id, m, err)
	}
	return r.ID
}

func putLeased(t *testing.T, m *Member, key string, id int64) *pb.PutResponse {
	t.Helper()
	r, err := m.Server().Put(context.Background(), &pb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: id})
	if err != nil {
		t.Fatalf("put %s with lease %x on %s: %v", key, id, m, err)
	}
	return r
}

func timeToLive(t *testing.T, m *Member, id int64) *pb.LeaseTimeToLiveResponse {
	t.Helper()
	r, err := m.Server().LeaseTimeToLive(context.Background(), &pb.LeaseTimeToLiveRequest{ID: id, Keys: true})
	if err != nil {
		t.Fatalf("TimeToLive %x on %s: %v", id, m, err)
	}
	return r
}

func keyStrings(keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = string(k)
	}
	return out
}

// TestLeaseFollowerKeepAliveAndExpiry: keep-alives and TimeToLive sent to
// a follower reach the leader, whose clock is the one that counts; when
// the keep-alives stop, the lease expires and every member deletes its
// keys at the same revision.
func TestLeaseFollowerKeepAliveAndExpiry(t *testing.T) {
	c := New(t, 3, Options{})
	lead := c.WaitLeader()
	f := followers(c, lead)[0]
	const ttl = 3
	id := grant(t, f, 0, ttl)
	if id <= 0 {
		t.Fatalf("server-chosen lease ID %d", id)
	}
	for _, k := range []string{"k/1", "k/2", "k/3"} {
		putLeased(t, followers(c, lead)[1], k, id)
	}
	putLeased(t, lead, "k/other", 0)

	r := timeToLive(t, f, id)
	if r.GrantedTTL != ttl || r.TTL < 0 || r.TTL > ttl || !slices.Equal(keyStrings(r.Keys), []string{"k/1", "k/2", "k/3"}) {
		t.Fatalf("TimeToLive through a follower: %+v", r)
	}
	if r.Header.GetMemberId() != f.ID() {
		t.Fatalf("TimeToLive header from %x, want the follower %x", r.Header.GetMemberId(), f.ID())
	}

	// Renewing through the follower for three TTLs keeps the lease.
	until := c.Clock.Now().Add(3 * ttl * time.Second)
	for c.Clock.Now().Before(until) {
		got, err := f.Server().LeaseRenew(context.Background(), id)
		if err != nil || got != ttl {
			t.Fatalf("renew through the follower: %d %v, want %d", got, err, ttl)
		}
		c.Elapse(ttl * time.Second / 3)
	}
	if v := value(get(t, lead, "k/1", false)); v != "v" {
		t.Fatalf("k/1 is %s after three TTLs of keep-alives through a follower", v)
	}
	if _, err := f.Server().LeaseRenew(context.Background(), 0x5eed); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("renewing an unknown lease through a follower: %v, want %v", err, lease.ErrLeaseNotFound)
	}

	before := lead.Server().Rev()
	c.WaitFor("the lease to expire", func() bool {
		r, err := lead.Server().Range(context.Background(), &pb.RangeRequest{Key: []byte("k/1")})
		return err == nil && len(r.Kvs) == 0
	})
	c.WaitConverged()
	for _, m := range c.Running() {
		s := m.Server()
		if rev := s.Rev(); rev != before+1 {
			t.Errorf("%s is at revision %d after the expiry, want %d (one revision for every key)", m, rev, before+1)
		}
		all := &pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0"), Serializable: true}
		r, err := s.Range(context.Background(), all)
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Key) != "k/other" {
			t.Errorf("%s after the expiry: %v %v, want only k/other", m, r, err)
		}
		all.Revision = before
		if r, err := s.Range(context.Background(), all); err != nil || len(r.Kvs) != 4 {
			t.Errorf("%s just before the expiry: %v %v, want 4 keys", m, r, err)
		}
		if ls, err := s.LeaseLeases(context.Background(), &pb.LeaseLeasesRequest{}); err != nil || len(ls.Leases) != 0 {
			t.Errorf("%s still lists leases %v (%v)", m, ls, err)
		}
	}
	if _, err := f.Server().LeaseRenew(context.Background(), id); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("renewing the expired lease: %v, want %v", err, lease.ErrLeaseNotFound)
	}
}

// TestLeaseCheckpointSurvivesLeaderChange: with checkpoints every 2 s, a
// lease keeps its remaining TTL when the leadership moves (MoveLeader) or
// the leader is lost: it neither expires early nor regains its full TTL.
// A member restarted from its data directory keeps the lease.
func TestLeaseCheckpointSurvivesLeaderChange(t *testing.T) {
	c := New(t, 3, Options{Configure: func(cfg *server.Config) {
		cfg.LeaseCheckpointInterval = 2 * time.Second
	}})
	lead := c.WaitLeader()
	const ttl = 30
	id := grant(t, lead, 0x77, ttl)
	putLeased(t, lead, "held", id)

	// observe checks the leader's view of the lease against the last one:
	// since then at least the simulated time that passed has gone from the
	// lease (it has not regained its TTL), and at most that plus a stale
	// checkpoint's 2 s and an election timeout of grace (it has not
	// expired early). TTLs are whole seconds, truncated.
	lastTTL, lastAt := int64(ttl), c.Clock.Now()
	observe := func(what string) {
		t.Helper()
		l := c.WaitLeader()
		var (
			r   *pb.LeaseTimeToLiveResponse
			err error
		)
		c.WaitFor("TimeToLive on the leader "+what, func() bool {
			r, err = l.Server().LeaseTimeToLive(context.Background(), &pb.LeaseTimeToLiveRequest{ID: id})
			// A leader that has not taken up its leases yet says so.
			return !errors.Is(err, server.ErrLeaderChanged)
		})
		if err != nil {
			t.Fatalf("%s: TimeToLive: %v", what, err)
		}
		now := c.Clock.Now()
		passed := now.Sub(lastAt)
		hi := lastTTL - int64(passed/time.Second) + 3
		lo := lastTTL - int64((passed+time.Second-1)/time.Second) - 1
		if r.TTL > hi || r.TTL < max(lo, 1) {
			t.Fatalf("%s: the lease has %d s left, %v after %d s were left: want %d..%d", what, r.TTL, passed, lastTTL, max(lo, 1), hi)
		}
		if v := value(get(t, l, "held", false)); v != "v" {
			t.Fatalf("%s: the lease's key is %s", what, v)
		}
		lastTTL, lastAt = r.TTL, now
	}

	c.Elapse(10 * time.Second)
	old := c.WaitLeader()
	target := followers(c, old)[0]
	if err := old.Server().MoveLeader(context.Background(), target.ID()); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the new leader", func() bool { return c.Leader() == target })
	observe("after MoveLeader")

	c.Elapse(10 * time.Second)
	lost := c.WaitLeader()
	lost.Stop()
	c.WaitFor("a leader among the others", func() bool { l := c.Leader(); return l != nil && l != lost })
	observe("after the leader was lost")

	// A renewal makes the checkpoint stale: it is cleared through raft, so
	// the next leader starts from the full TTL, not from the old
	// checkpoint.
	renewer := followers(c, c.WaitLeader())[0]
	if got, err := renewer.Server().LeaseRenew(context.Background(), id); err != nil || got != ttl {
		t.Fatalf("renew: %d %v", got, err)
	}
	lastTTL, lastAt = ttl, c.Clock.Now()
	old = c.WaitLeader()
	if err := old.Server().MoveLeader(context.Background(), renewer.ID()); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the renewer to lead", func() bool { return c.Leader() == renewer })
	observe("after a renewal and MoveLeader")

	// The stopped member restarts with the lease.
	if err := lost.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged()
	ls, err := lost.Server().LeaseLeases(context.Background(), &pb.LeaseLeasesRequest{})
	if err != nil || len(ls.Leases) != 1 || ls.Leases[0].ID != id {
		t.Fatalf("the restarted member's leases: %v %v", ls, err)
	}

	// It runs out on time after all: before, it was never seen expired.
	c.WaitFor("the lease to expire", func() bool {
		r, err := c.WaitLeader().Server().Range(context.Background(), &pb.RangeRequest{Key: []byte("held")})
		return err == nil && len(r.Kvs) == 0
	})
	c.WaitConverged()
}

// TestLeasesUnderFaults grants short leases with keys, renews and revokes
// them from random members while the network drops, delays and partitions
// messages and the leadership moves. Then every member must agree on the
// leases and on every key's lease, no key may name a lease that is gone,
// and once the keep-alives stop every lease must expire, with its keys, on
// every member.
func TestLeasesUnderFaults(t *testing.T) {
	c := New(t, 3, Options{Seed: 7, Configure: func(cfg *server.Config) {
		cfg.LeaseCheckpointInterval = time.Second
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var grants, puts, renews, revokes int
	go func() {
		defer close(done)
		var granted []int64
		for n := 0; ctx.Err() == nil; n++ {
			run := c.Running()
			s := run[n%len(run)].Server()
			if s == nil {
				continue
			}
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			switch n % 5 {
			case 0:
				if r, err := s.LeaseGrant(rctx, &pb.LeaseGrantRequest{TTL: int64(1 + n%3)}); err == nil {
					granted = append(granted, r.ID)
					grants++
				}
			case 1, 2:
				if len(granted) > 0 {
					id := granted[n%len(granted)]
					if _, err := s.Put(rctx, &pb.PutRequest{Key: fmt.Appendf(nil, "l/%d", n), Value: []byte("v"), Lease: id}); err == nil {
						puts++
					}
				}
			case 3:
				if len(granted) > 0 {
					if _, err := s.LeaseRenew(rctx, granted[(n/5)%len(granted)]); err == nil {
						renews++
					}
				}
			case 4:
				if len(granted) > 1 {
					if _, err := s.LeaseRevoke(rctx, &pb.LeaseRevokeRequest{ID: granted[0]}); err == nil {
						revokes++
					}
					granted = granted[1:]
				}
			}
			rcancel()
			select {
			case <-c.Clock.After(20 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}()

	for step := 0; step < 16; step++ {
		c.Elapse(700 * time.Millisecond)
		switch step % 4 {
		case 0:
			c.Net.SetFaults(Faults{Drop: 0.05, MaxDelay: 30 * time.Millisecond})
		case 1:
			if l := c.Leader(); l != nil {
				l.Server().MoveLeader(ctx, followers(c, l)[0].ID())
			}
		case 2:
			c.Isolate(c.Members()[step%3])
		case 3:
			c.Heal()
			c.Net.SetFaults(Faults{})
		}
	}
	c.Heal()
	c.Net.SetFaults(Faults{})
	cancel()
	<-done
	c.WaitLeader()
	c.WaitConverged()

	check := func() (leases int) {
		var first []int64
		for i, m := range c.Running() {
			s := m.Server()
			ls, err := s.LeaseLeases(context.Background(), &pb.LeaseLeasesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var ids []int64
			for _, l := range ls.Leases {
				ids = append(ids, l.ID)
			}
			slices.Sort(ids)
			if i == 0 {
				first = ids
			} else if !slices.Equal(ids, first) {
				t.Fatalf("%s has leases %x, another member %x", m, ids, first)
			}
			r, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("l/"), RangeEnd: []byte("l0"), Serializable: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range r.Kvs {
				if _, ok := slices.BinarySearch(ids, kv.Lease); !ok {
					t.Fatalf("%s: key %s names lease %x, which is gone", m, kv.Key, kv.Lease)
				}
			}
		}
		return len(first)
	}
	n := check()
	t.Logf("%d grants, %d leased puts, %d renewals, %d revokes; %d leases left after the faults", grants, puts, renews, revokes, n)
	c.WaitFor("every lease to expire", func() bool {
		r, err := c.WaitLeader().Server().LeaseLeases(context.Background(), &pb.LeaseLeasesRequest{})
		return err == nil && len(r.Leases) == 0
	})
	c.WaitConverged()
	if n := check(); n != 0 {
		t.Fatalf("%d leases left", n)
	}
	for _, m := range c.Running() {
		r, err := m.Server().Range(context.Background(), &pb.RangeRequest{Key: []byte("l/"), RangeEnd: []byte("l0"), Serializable: true, CountOnly: true})
		if err != nil || r.Count != 0 {
			t.Fatalf("%s keeps %d leased keys after every lease expired (%v)", m, r.GetCount(), err)
		}
	}
}

// TestLeaseIsolatedLeaderRefusesRenewal cuts the leader off before it has
// noticed: it must not renew a lease (the majority's new leader would
// expire it while the client believes it renewed), as etcd's leader, which
// first confirms its leadership with a quorum, does not.
func TestLeaseIsolatedLeaderRefusesRenewal(t *testing.T) {
	c := New(t, 3, Options{})
	lead := c.WaitLeader()
	id := grant(t, lead, 0, 30)
	if _, err := lead.Server().LeaseRenew(context.Background(), id); err != nil {
		t.Fatalf("renewal on the connected leader: %v", err)
	}
	c.Isolate(lead)
	ttl, err := lead.Server().LeaseRenew(context.Background(), id)
	if err == nil {
		t.Fatalf("the isolated leader renewed lease %x (TTL %d)", id, ttl)
	}
	t.Logf("the isolated leader refused the renewal: %v", err)
	c.Heal()
	c.WaitFor("a leader again", func() bool { return c.Leader() != nil })
	if _, err := lead.Server().LeaseRenew(context.Background(), id); err != nil {
		t.Fatalf("renewal through the rejoined member: %v", err)
	}
}
