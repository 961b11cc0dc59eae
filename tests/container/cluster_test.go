//go:build docker

package container

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/tests/kit"
)

const (
	// readyTimeout bounds waits for a leader, an election and convergence;
	// reaching it means the cluster stopped making progress.
	readyTimeout = 90 * time.Second
	// rpcTimeout bounds one request.
	rpcTimeout = 3 * time.Second
)

// cluster is the test's view of the members: a client per member.
type cluster struct {
	t       testing.TB
	clients map[*container]*clientv3.Client
	ids     map[uint64]*container
}

func newCluster(t testing.TB, members []*container) *cluster {
	c := &cluster{t: t, clients: map[*container]*clientv3.Client{}, ids: map[uint64]*container{}}
	for _, m := range members {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{m.clientURL()},
			DialTimeout: 2 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			t.Fatalf("client of %s: %v", m.name, err)
		}
		t.Cleanup(func() { cli.Close() })
		c.clients[m] = cli
	}
	return c
}

func (c *cluster) client(m *container) *clientv3.Client { return c.clients[m] }

// waitFor polls cond until it returns nil, failing with cond's last error
// past readyTimeout.
func (c *cluster) waitFor(what string, cond func() error) {
	c.t.Helper()
	if err := kit.Poll(readyTimeout, cond); err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
}

// waitLeader waits until every member of group names the same leader, one
// of them, and returns it.
func (c *cluster) waitLeader(group []*container) *container {
	c.t.Helper()
	var lead *container
	c.waitFor("a leader the members agree on", func() error {
		var leader uint64
		for _, m := range group {
			ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
			st, err := c.client(m).Status(ctx, m.clientURL())
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			c.ids[st.Header.MemberId] = m
			if st.Leader == 0 || leader != 0 && st.Leader != leader {
				return fmt.Errorf("%s names leader %x, another member %x", m.name, st.Leader, leader)
			}
			leader = st.Leader
		}
		lead = c.ids[leader]
		for _, m := range group {
			if m == lead {
				return nil
			}
		}
		return fmt.Errorf("the leader %x is not among the group", leader)
	})
	return lead
}

// putN writes n keys under prefix through a client of group's members,
// each write acknowledged (with retries across the group while a leader
// settles).
func (c *cluster) putN(group []*container, prefix string, n int) {
	c.t.Helper()
	for i := range n {
		key := fmt.Sprintf("%s%03d", prefix, i)
		c.waitFor("put "+key, func() error {
			m := group[i%len(group)]
			ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
			defer cancel()
			_, err := c.client(m).Put(ctx, key, "v")
			return err
		})
	}
}

// checkConverged checks that every member hashes its keyspace to the same
// value at the same revision.
func (c *cluster) checkConverged(members []*container) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	st, err := c.client(members[0]).Status(ctx, members[0].clientURL())
	cancel()
	if err != nil {
		c.t.Fatalf("status: %v", err)
	}
	rev := st.Header.Revision
	var first *clientv3.HashKVResponse
	for _, m := range members {
		var h *clientv3.HashKVResponse
		c.waitFor(fmt.Sprintf("%s hashes revision %d", m.name, rev), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
			defer cancel()
			h, err = c.client(m).HashKV(ctx, m.clientURL(), rev)
			return err
		})
		if first == nil {
			first = h
			continue
		}
		if h.Hash != first.Hash || h.CompactRevision != first.CompactRevision {
			c.t.Fatalf("%s hashes revision %d to %08x (compacted at %d), %s to %08x (compacted at %d)",
				m.name, rev, h.Hash, h.CompactRevision, members[0].name, first.Hash, first.CompactRevision)
		}
	}
	c.t.Logf("all members hash revision %d to %08x", rev, first.Hash)
}
