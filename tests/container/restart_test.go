//go:build docker

package container

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestNodeLossAndRollingRestart loses the leader's container (docker kill,
// SIGKILL) and brings it back on its own data, then restarts every member
// in turn as an upgrade would (docker restart: SIGTERM, then start), all
// under a write load: every acknowledged write survives and the members
// converge.
func TestNodeLossAndRollingRestart(t *testing.T) {
	e := newEnv(t)
	peerNet, peerPrefix := e.network("peers")
	clientNet, clientPrefix := e.network("clients")
	members := e.startMembers(3, peerNet, peerPrefix, clientNet, clientPrefix)
	c := newCluster(t, members)
	c.waitLeader(members)

	w := startWriter(t, members)
	w.waitProgress(c, 50, "warm-up")

	lead := c.waitLeader(members)
	mustDocker(t, "kill", "--signal", "KILL", lead.docker)
	t.Logf("killed the leader %s's container", lead.name)
	var rest []*container
	for _, m := range members {
		if m != lead {
			rest = append(rest, m)
		}
	}
	c.waitLeader(rest)
	w.waitProgress(c, 50, "two members serve writes")
	mustDocker(t, "start", lead.docker)
	c.waitCaughtUp(members, lead)
	t.Logf("%s is back and caught up", lead.name)

	for _, m := range members {
		mustDocker(t, "restart", "--time", "10", m.docker)
		c.waitCaughtUp(members, m)
		w.waitProgress(c, 30, "after restarting "+m.name)
		t.Logf("restarted %s", m.name)
	}

	w.stop()
	c.checkConverged(members)
	w.checkAcknowledged(c, members)
}

// waitCaughtUp waits until every member names the same leader and m has
// applied what the leader had committed when the wait began.
func (c *cluster) waitCaughtUp(members []*container, m *container) {
	c.t.Helper()
	lead := c.waitLeader(members)
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	st, err := c.client(lead).Status(ctx, lead.clientURL())
	cancel()
	if err != nil {
		c.t.Fatalf("status of the leader %s: %v", lead.name, err)
	}
	c.waitFor(fmt.Sprintf("%s applies up to index %d", m.name, st.RaftIndex), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		mst, err := c.client(m).Status(ctx, m.clientURL())
		if err != nil {
			return err
		}
		if mst.RaftAppliedIndex < st.RaftIndex {
			return fmt.Errorf("applied index %d", mst.RaftAppliedIndex)
		}
		return nil
	})
}

// writer puts unique keys through a client of every member, one at a
// time, and remembers the acknowledged ones.
type writer struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}
	acked  atomic.Int64
	mu     sync.Mutex
	keys   []string
}

func startWriter(t testing.TB, members []*container) *writer {
	var eps []string
	for _, m := range members {
		eps = append(eps, m.clientURL())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cli: cli, cancel: cancel, done: make(chan struct{})}
	t.Cleanup(func() {
		w.stop()
		cli.Close()
	})
	go func() {
		defer close(w.done)
		for i := 0; ctx.Err() == nil; i++ {
			key := fmt.Sprintf("load/%06d", i)
			octx, ocancel := context.WithTimeout(ctx, rpcTimeout)
			_, err := cli.Put(octx, key, key)
			ocancel()
			if err == nil {
				w.mu.Lock()
				w.keys = append(w.keys, key)
				w.mu.Unlock()
				w.acked.Add(1)
			}
		}
	}()
	return w
}

func (w *writer) stop() {
	w.cancel()
	<-w.done
}

// waitProgress waits until n more writes have been acknowledged.
func (w *writer) waitProgress(c *cluster, n int64, why string) {
	c.t.Helper()
	target := w.acked.Load() + n
	c.waitFor(fmt.Sprintf("%d more acknowledged writes (%s)", n, why), func() error {
		if got := w.acked.Load(); got < target {
			return fmt.Errorf("%d of %d", got-(target-n), n)
		}
		return nil
	})
}

// checkAcknowledged reads the load's keys back from every member
// (serializably, each from its own state, once converged) and checks that
// every acknowledged write is there.
func (w *writer) checkAcknowledged(c *cluster, members []*container) {
	c.t.Helper()
	w.mu.Lock()
	keys := append([]string(nil), w.keys...)
	w.mu.Unlock()
	for _, m := range members {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.client(m).Get(ctx, "load/", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			c.t.Fatalf("read the load's keys from %s: %v", m.name, err)
		}
		have := make(map[string]bool, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			have[string(kv.Key)] = true
		}
		for _, k := range keys {
			if !have[k] {
				c.t.Fatalf("%s lost the acknowledged write %s (%d acknowledged, %d there)", m.name, k, len(keys), len(have))
			}
		}
	}
	c.t.Logf("every member has all %d acknowledged writes", len(keys))
}
