//go:build docker

package container

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPartition cuts the leader off its peers and checks that the majority
// carries on, that the isolated member refuses to answer linearizably, and
// that it rejoins and converges once reconnected.
func TestPartition(t *testing.T) {
	e := newEnv(t)
	peerNet, peerPrefix := e.network("peers")
	clientNet, clientPrefix := e.network("clients")
	members := e.startMembers(3, peerNet, peerPrefix, clientNet, clientPrefix)
	c := newCluster(t, members)

	lead := c.waitLeader(members)
	t.Logf("%s leads; writing before the partition", lead.name)
	c.putN(members, "before/", 50)

	mustDocker(t, "network", "disconnect", peerNet, lead.docker)
	t.Logf("disconnected %s from the peer network", lead.name)
	var majority []*container
	for _, m := range members {
		if m != lead {
			majority = append(majority, m)
		}
	}
	newLead := c.waitLeader(majority)
	t.Logf("the majority elected %s", newLead.name)
	c.putN(majority, "during/", 50)

	// The isolated member keeps its client network: it must refuse, not
	// answer from a state that misses the majority's writes.
	c.expectRefused(lead)

	mustDocker(t, "network", "connect", "--ip", lead.peerIP, peerNet, lead.docker)
	t.Logf("reconnected %s", lead.name)
	c.waitLeader(members)
	c.waitFor(fmt.Sprintf("%s serves the writes made while it was away", lead.name), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		resp, err := c.client(lead).Get(ctx, "during/", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count != 50 {
			return fmt.Errorf("it has %d of the 50 keys", resp.Count)
		}
		return nil
	})
	c.putN(members, "after/", 50)
	c.checkConverged(members)
}

// expectRefused checks that the isolated member m refuses a linearizable
// read and a write with one of etcd's answers for a member cut off from
// its quorum.
func (c *cluster) expectRefused(m *container) {
	c.t.Helper()
	cli := c.client(m)
	check := func(what string, err error) {
		c.t.Helper()
		if err == nil {
			c.t.Fatalf("the isolated member %s answered a %s", m.name, what)
		}
		if !refusal(err) {
			c.t.Fatalf("the isolated member %s failed a %s with %v; want a timeout or no-leader error", m.name, what, err)
		}
		c.t.Logf("isolated %s refused a %s: %v", m.name, what, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*rpcTimeout)
	_, err := cli.Get(ctx, "before/000")
	cancel()
	check("linearizable read", err)
	ctx, cancel = context.WithTimeout(context.Background(), 2*rpcTimeout)
	_, err = cli.Put(ctx, "isolated", "v")
	cancel()
	check("write", err)
}

// refusal reports whether err is how etcd refuses a request it cannot
// serve without a quorum.
func refusal(err error) bool {
	for _, want := range []error{rpctypes.ErrTimeout, rpctypes.ErrNoLeader, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrLeaderChanged, context.DeadlineExceeded} {
		if errors.Is(err, want) {
			return true
		}
	}
	return status.Code(err) == codes.DeadlineExceeded
}
