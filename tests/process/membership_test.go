package process

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
)

// TestMembershipChanges changes the cluster under load as an operator
// would: a fourth member joins as a learner, catches up and is promoted; an
// original member is removed; the leadership moves to a chosen member.
func TestMembershipChanges(t *testing.T) {
	s := newSchedule(t)
	c := newCluster(t, 3)
	l := startLoad(t, c.endpoints(), s.workers, s.seed)
	admin := newClient(t, c.endpoints()...)
	l.waitProgress(c, s.progress, "warm-up")

	passes := max(s.passes, 1)
	for pass := range passes {
		// Join: MemberAdd as a learner, then start the process with
		// --initial-cluster-state existing and the new member list.
		joiner := newMember(t, fmt.Sprintf("m%d", 4+pass))
		var added *clientv3.MemberAddResponse
		c.reconfigure("MemberAddAsLearner "+joiner.peerURL, func(ctx context.Context) (err error) {
			added, err = admin.MemberAddAsLearner(ctx, []string{joiner.peerURL})
			return err
		})
		if !added.Member.IsLearner || !slices.Equal(added.Member.PeerURLs, []string{joiner.peerURL}) {
			c.fatalf("MemberAddAsLearner answered member %+v", added.Member)
		}
		if findMember(added.Members, added.Member.ID) == nil {
			c.fatalf("MemberAddAsLearner's member list %v lacks the new member %x", added.Members, added.Member.ID)
		}
		t.Logf("pass %d: added %s as learner %x", pass, joiner.name, added.Member.ID)
		c.add(joiner)
		joiner.start(t, c.initialCluster(), "existing", c.token)
		c.waitCaughtUp(joiner)
		if st, err := c.status(joiner); err != nil || !st.IsLearner || st.Header.MemberId != added.Member.ID {
			c.fatalf("the joined member's status: %+v, %v; want learner %x", st, err, added.Member.ID)
		}
		c.promote(admin, added.Member.ID)
		l.setEndpoints(c.endpoints())
		admin.SetEndpoints(c.endpoints()...)
		c.expectMembers(admin)
		l.waitProgress(c, s.progress, "after the promotion")

		// Remove an original member that is not the leader.
		lead := c.waitLeader()
		var gone *member
		for _, m := range c.current() {
			if m != lead && m != joiner {
				gone = m
				break
			}
		}
		goneID := c.idOf(gone)
		var removed *clientv3.MemberRemoveResponse
		c.reconfigure(fmt.Sprintf("MemberRemove %s (%x)", gone.name, goneID), func(ctx context.Context) (err error) {
			// Asked through the leader: the member being removed stops
			// soon after it applies its removal, which may beat its
			// answer.
			removed, err = c.client(lead).MemberRemove(ctx, goneID)
			return err
		})
		if findMember(removed.Members, goneID) != nil {
			c.fatalf("MemberRemove's member list still has %x: %v", goneID, removed.Members)
		}
		t.Logf("pass %d: removed %s (%x)", pass, gone.name, goneID)
		c.remove(gone)
		l.setEndpoints(c.endpoints())
		admin.SetEndpoints(c.endpoints()...)
		c.expectRemovedExits(gone)
		c.expectMembers(admin)
		l.waitProgress(c, s.progress, "after the removal")

		// Move the leadership to the newest member.
		c.moveLeader(joiner)
		l.waitProgress(c, s.progress, "after the leadership moved")
	}

	l.stop()
	c.logSnapshots()
	c.checkConverged()
	l.checkLedger(c, admin)
	l.checkLinearizable(c, admin)
}

func findMember(ms []*pb.Member, id uint64) *pb.Member {
	for _, m := range ms {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// reconfigure runs a membership change, retrying while etcd's checks
// refuse it for the time being: the strict reconfiguration check wants the
// members connected for a while ("unhealthy cluster"), and a learner must
// have caught up before its promotion. Any other error fails the test.
func (c *cluster) reconfigure(what string, change func(context.Context) error) {
	c.t.Helper()
	c.waitFor(readyTimeout, what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		err := change(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, rpctypes.ErrUnhealthy), errors.Is(err, rpctypes.ErrMemberLearnerNotReady),
			errors.Is(err, rpctypes.ErrMemberNotEnoughStarted):
			return err
		}
		c.fatalf("%s: %v", what, err)
		return nil
	})
}

// promote promotes learner id.
func (c *cluster) promote(admin *clientv3.Client, id uint64) {
	c.t.Helper()
	var resp *clientv3.MemberPromoteResponse
	c.reconfigure(fmt.Sprintf("MemberPromote %x", id), func(ctx context.Context) (err error) {
		resp, err = admin.MemberPromote(ctx, id)
		return err
	})
	if m := findMember(resp.Members, id); m == nil || m.IsLearner {
		c.fatalf("after MemberPromote the member list has %+v", m)
	}
	c.t.Logf("promoted %x", id)
}

// expectMembers checks that a linearizable MemberList names exactly the
// current members, all voters, with their peer and client URLs.
func (c *cluster) expectMembers(admin *clientv3.Client) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := admin.MemberList(ctx) // linearizable unless WithSerializable
	if err != nil {
		c.fatalf("MemberList: %v", err)
	}
	cur := c.current()
	if len(resp.Members) != len(cur) {
		c.fatalf("MemberList has %d members, want %d: %v", len(resp.Members), len(cur), resp.Members)
	}
	for _, m := range cur {
		pm := findMember(resp.Members, c.idOf(m))
		if pm == nil {
			c.fatalf("MemberList lacks %s: %v", m.name, resp.Members)
		}
		if pm.Name != m.name || pm.IsLearner || !slices.Equal(pm.PeerURLs, []string{m.peerURL}) || !slices.Equal(pm.ClientURLs, []string{m.clientURL}) {
			c.fatalf("MemberList has %+v for %s (peer %s, client %s)", pm, m.name, m.peerURL, m.clientURL)
		}
	}
}

// expectRemovedExits waits for a removed member's process to notice its
// removal and exit, as etcd's does; it is stopped if it has not exited by
// the deadline, and the test fails.
func (c *cluster) expectRemovedExits(m *member) {
	c.t.Helper()
	p := m.running()
	if p == nil {
		return
	}
	select {
	case <-p.Exited():
		c.t.Logf("removed member %s exited (%v)", m.name, p.Err())
	case <-time.After(readyTimeout):
		out := m.output()
		m.kill(c.t)
		c.t.Fatalf("removed member %s still runs %v after its removal; its output:\n%s", m.name, readyTimeout, out)
	}
}

// moveLeader asks the leader to hand the leadership to target and checks
// that every member then names target; asking a follower fails as etcd's
// does, with "not leader".
func (c *cluster) moveLeader(target *member) {
	c.t.Helper()
	lead := c.waitLeader()
	targetID := c.idOf(target)
	if lead == target {
		c.t.Logf("%s already leads", target.name)
		return
	}
	for _, m := range c.running() {
		if m == lead || m == target {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		_, err := c.client(m).MoveLeader(ctx, targetID)
		cancel()
		if !errors.Is(err, rpctypes.ErrNotLeader) {
			c.fatalf("MoveLeader sent to follower %s: %v, want %v", m.name, err, rpctypes.ErrNotLeader)
		}
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	_, err := c.client(lead).MoveLeader(ctx, targetID)
	cancel()
	if err != nil {
		c.fatalf("MoveLeader from %s to %s: %v", lead.name, target.name, err)
	}
	if now := c.waitLeader(); now != target {
		c.fatalf("after MoveLeader to %s the members name %s", target.name, now.name)
	}
	c.t.Logf("moved the leadership from %s to %s", lead.name, target.name)
}
