package process

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/tests/kit"
)

// Failure deadlines: reaching one means the cluster stopped making progress.
// They are generous because two cores run three members, the load and the
// test's own checks.
const (
	// readyTimeout bounds how long members may take to elect a leader and
	// agree on it, and a restarted member to catch up.
	readyTimeout = 60 * time.Second
	// rpcTimeout bounds one administrative request.
	rpcTimeout = 5 * time.Second
)

// cluster is a set of members started with the same --initial-cluster-token.
type cluster struct {
	t     testing.TB
	token string

	mu      sync.Mutex
	members []*member // the current members (removed ones are dropped)
	ids     map[uint64]*member
	clients map[*member]*clientv3.Client // one endpoint each, for status
}

// newCluster starts n members named m1..mn as a new cluster and waits for
// them to agree on a leader.
func newCluster(t testing.TB, n int) *cluster {
	t.Helper()
	c := &cluster{
		t:       t,
		token:   fmt.Sprintf("processtest-%d", time.Now().UnixNano()),
		ids:     make(map[uint64]*member),
		clients: make(map[*member]*clientv3.Client),
	}
	for i := 1; i <= n; i++ {
		c.members = append(c.members, newMember(t, fmt.Sprintf("m%d", i)))
	}
	t.Cleanup(c.shutdown)
	initial := c.initialCluster()
	for _, m := range c.members {
		m.start(t, initial, "new", c.token)
	}
	c.waitLeader()
	return c
}

// shutdown kills every process and closes the clients.
func (c *cluster) shutdown() {
	c.mu.Lock()
	members := slices.Clone(c.members)
	for _, cli := range c.clients {
		cli.Close()
	}
	c.clients = nil
	c.mu.Unlock()
	for _, m := range members {
		m.kill(c.t)
	}
}

// initialCluster is --initial-cluster for the current members.
func (c *cluster) initialCluster() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	parts := make([]string, len(c.members))
	for i, m := range c.members {
		parts[i] = m.name + "=" + m.peerURL
	}
	return strings.Join(parts, ",")
}

// current returns the current members.
func (c *cluster) current() []*member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members)
}

// add makes m a current member (after MemberAdd).
func (c *cluster) add(m *member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members = append(c.members, m)
}

// remove drops m from the current members (after MemberRemove).
func (c *cluster) remove(m *member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members = slices.DeleteFunc(c.members, func(x *member) bool { return x == m })
	if cli := c.clients[m]; cli != nil {
		cli.Close()
		delete(c.clients, m)
	}
}

// endpoints returns the client URLs of the current members.
func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.current() {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// running returns the current members with a process running.
func (c *cluster) running() []*member {
	var out []*member
	for _, m := range c.current() {
		if m.running() != nil {
			out = append(out, m)
		}
	}
	return out
}

// newClient returns a client of the given endpoints, closed when the test
// ends.
func newClient(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client of %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// client returns the cluster's client of m alone.
func (c *cluster) client(m *member) *clientv3.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cli := c.clients[m]; cli != nil {
		return cli
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.clientURL},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		c.t.Fatalf("client of %s: %v", m.name, err)
	}
	c.clients[m] = cli
	return cli
}

// status asks m for its Maintenance.Status and learns its member ID.
func (c *cluster) status(m *member) (*clientv3.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := c.client(m).Status(ctx, m.clientURL)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.ids[st.Header.MemberId] = m
	c.mu.Unlock()
	return st, nil
}

// byID returns the member with the given ID, nil if it was never seen.
func (c *cluster) byID(id uint64) *member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids[id]
}

// idOf returns m's member ID, asking m if it is not known yet.
func (c *cluster) idOf(m *member) uint64 {
	c.mu.Lock()
	for id, x := range c.ids {
		if x == m {
			c.mu.Unlock()
			return id
		}
	}
	c.mu.Unlock()
	st, err := c.status(m)
	if err != nil {
		c.fatalf("member %s does not report its ID: %v", m.name, err)
	}
	return st.Header.MemberId
}

// fatalf fails the test with the tail of every member's output.
func (c *cluster) fatalf(format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("%s\n%s", fmt.Sprintf(format, args...), c.outputs())
}

func (c *cluster) outputs() string {
	var b strings.Builder
	for _, m := range c.current() {
		fmt.Fprintf(&b, "\n===== output of %s (%s) =====\n%s", m.name, m.clientURL, m.output())
	}
	return b.String()
}

// checkAlive fails if a running member's process exited on its own.
func (c *cluster) checkAlive() {
	c.t.Helper()
	for _, m := range c.current() {
		if exited, err := m.exitedEarly(); exited {
			c.fatalf("member %s exited unexpectedly (%v)", m.name, err)
		}
	}
}

// waitFor polls cond until it returns nil, failing the test with cond's
// last error if that takes longer than timeout, and at once if a member
// exited on its own meanwhile.
func (c *cluster) waitFor(timeout time.Duration, what string, cond func() error) {
	c.t.Helper()
	err := kit.Poll(timeout, func() error {
		err := cond()
		if err != nil {
			c.checkAlive()
		}
		return err
	})
	if err != nil {
		c.fatalf("%s: %v", what, err)
	}
}

// victim picks the member to kill in round round of a kill schedule: the
// leader in every third round, starting with the first, and the followers
// in turn (the first or second non-leader by name) in the others. It
// returns the leader too.
func (c *cluster) victim(round int) (lead, victim *member) {
	c.t.Helper()
	lead = c.waitLeader()
	if round%3 == 0 {
		return lead, lead
	}
	var followers []*member
	for _, m := range c.current() {
		if m != lead {
			followers = append(followers, m)
		}
	}
	return lead, followers[(round%3-1)%len(followers)]
}

// waitLeader waits until every running member names the same leader, which
// is one of them, and returns it.
func (c *cluster) waitLeader() *member {
	c.t.Helper()
	var lead *member
	c.waitFor(readyTimeout, "a leader all running members agree on", func() error {
		var leader uint64
		for _, m := range c.running() {
			st, err := c.status(m)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			if st.Leader == 0 {
				return fmt.Errorf("%s knows no leader", m.name)
			}
			if leader != 0 && st.Leader != leader {
				return fmt.Errorf("%s names leader %x, another member %x", m.name, st.Leader, leader)
			}
			leader = st.Leader
		}
		lead = c.byID(leader)
		if lead == nil || lead.running() == nil {
			return fmt.Errorf("the leader %x is not a running member", leader)
		}
		return nil
	})
	return lead
}

// waitCaughtUp waits until m has applied everything the leader had
// committed when the wait began, and names the same leader.
func (c *cluster) waitCaughtUp(m *member) {
	c.t.Helper()
	lead := c.waitLeader()
	st, err := c.status(lead)
	if err != nil {
		c.fatalf("status of the leader %s: %v", lead.name, err)
	}
	target := st.RaftIndex
	c.waitFor(readyTimeout, fmt.Sprintf("%s applies up to index %d", m.name, target), func() error {
		mst, err := c.status(m)
		if err != nil {
			return err
		}
		if mst.RaftAppliedIndex < target {
			return fmt.Errorf("applied index %d", mst.RaftAppliedIndex)
		}
		if mst.Leader == 0 {
			return errors.New("no leader")
		}
		return nil
	})
}

// checkConverged waits until every running member can hash its keyspace
// at the leader's current revision and checks that the hashes agree. Call
// it once the load has stopped.
func (c *cluster) checkConverged() {
	c.t.Helper()
	lead := c.waitLeader()
	st, err := c.status(lead)
	if err != nil {
		c.fatalf("status of the leader %s: %v", lead.name, err)
	}
	rev := st.Header.Revision
	type hashed struct {
		name       string
		hash       uint32
		compactRev int64
	}
	var got []hashed
	for _, m := range c.running() {
		var h hashed
		c.waitFor(readyTimeout, fmt.Sprintf("%s hashes its keyspace at revision %d", m.name, rev), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
			defer cancel()
			resp, err := c.client(m).HashKV(ctx, m.clientURL, rev)
			if err != nil {
				if errors.Is(err, rpctypes.ErrFutureRev) {
					return fmt.Errorf("still behind: %w", err)
				}
				return err
			}
			h = hashed{m.name, resp.Hash, resp.CompactRevision}
			return nil
		})
		got = append(got, h)
	}
	for _, h := range got[1:] {
		if h != (hashed{h.name, got[0].hash, got[0].compactRev}) {
			c.fatalf("members disagree at revision %d: %+v", rev, got)
		}
	}
	c.t.Logf("%d members agree on HashKV %08x at revision %d", len(got), got[0].hash, rev)
}

// logSnapshots logs how many snapshots each member installed, to show
// which paths the run took.
func (c *cluster) logSnapshots() {
	var parts []string
	for _, m := range c.current() {
		parts = append(parts, fmt.Sprintf("%s %d", m.name, m.countInLogs("installed a snapshot from the leader")))
	}
	c.t.Logf("snapshots installed: %s", strings.Join(parts, ", "))
}
