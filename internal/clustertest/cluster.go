package clustertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/server"
)

// Simulated timing of every cluster: a 10 ms raft tick, elections after 10
// to 20 ticks, requests that give up after 3 s.
const (
	TickMs         = 10
	ElectionTicks  = 10
	Tick           = TickMs * time.Millisecond
	RequestTimeout = 3 * time.Second
)

// Options configure a Cluster; zero values take the server's defaults.
type Options struct {
	// Seed drives the network's random faults.
	Seed uint64
	// SnapshotCount and SnapshotCatchUpEntries tune raft log compaction.
	SnapshotCount, SnapshotCatchUpEntries uint64
	// MaxLearners is the cluster's learner limit.
	MaxLearners int
	// Configure, if set, adjusts each member's configuration.
	Configure func(*server.Config)
	// TickEvery is the real time between two simulated ticks (default
	// 1ms: simulated time runs ten times faster than the wall clock).
	TickEvery time.Duration
}

// Cluster is several cairn servers in one process, on a simulated network
// and a simulated clock that a driver goroutine advances one raft tick at a
// time for as long as the cluster runs.
type Cluster struct {
	t     testing.TB
	Clock *clocktest.Fake
	Net   *Network
	opts  Options
	dir   string

	mu      sync.Mutex
	members []*Member

	stop chan struct{}
	done chan struct{}
}

// Member is one member of a Cluster: its configuration and, while it runs,
// its server. A stopped member can be restarted from its data directory.
type Member struct {
	c       *Cluster
	Name    string
	PeerURL string
	Dir     string

	mu  sync.Mutex
	cfg server.Config
	srv *server.Server
	id  uint64
}

// New starts a cluster of n founding members named n1..nN and waits until
// it has a leader. The cluster is closed when the test ends.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	clock := clocktest.NewFake()
	c := &Cluster{
		t:     t,
		Clock: clock,
		Net:   newNetwork(clock, opts.Seed),
		opts:  opts,
		dir:   t.TempDir(),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	var initial []string
	for i := 1; i <= n; i++ {
		m := c.newMember(fmt.Sprintf("n%d", i))
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	go c.drive()
	t.Cleanup(c.Close)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.members {
		wg.Go(func() { errs[i] = m.Start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	c.WaitLeader()
	return c
}

func (c *Cluster) newMember(name string) *Member {
	m := &Member{c: c, Name: name, PeerURL: "http://" + name + ":2380", Dir: filepath.Join(c.dir, name)}
	m.cfg = server.Config{
		Name:                   name,
		DataDir:                m.Dir,
		InitialClusterState:    server.ClusterStateNew,
		ClusterToken:           "clustertest",
		PeerURLs:               []string{m.PeerURL},
		ClientURLs:             []string{"http://" + name + ":2379"},
		TickMs:                 TickMs,
		ElectionTicks:          ElectionTicks,
		RequestTimeout:         RequestTimeout,
		SnapshotCount:          c.opts.SnapshotCount,
		SnapshotCatchUpEntries: c.opts.SnapshotCatchUpEntries,
		MaxLearners:            c.opts.MaxLearners,
		UnsafeNoFsync:          true,
		Clock:                  c.Clock,
		NewTransport:           c.Net.newEndpoint,
		PeerRoundTripper:       peerRoundTripper{c: c, from: m},
		Logger:                 logger(name),
	}
	if c.opts.Configure != nil {
		c.opts.Configure(&m.cfg)
	}
	return m
}

// logger returns a member's logger: stderr when CAIRN_CLUSTER_LOG is set
// (to a level: debug, info, warn), nothing otherwise.
func logger(name string) *slog.Logger {
	lvl := os.Getenv("CAIRN_CLUSTER_LOG")
	if lvl == "" {
		return slog.New(slog.DiscardHandler)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(lvl)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})).With("member", name)
}

// drive advances simulated time one tick every TickEvery of real time,
// delivering the messages that fall due, until Close. Clock.Advance waits
// for every raft loop to take its tick, so a member that is descheduled or
// busy holds time back rather than fall behind it. The pace gives requests
// real time to run between ticks: simulated time that ran as fast as the
// driver can loop would time out requests still in Pebble.
func (c *Cluster) drive() {
	defer close(c.done)
	every := c.opts.TickEvery
	if every <= 0 {
		every = time.Millisecond
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tk.C:
		}
		c.Clock.Advance(Tick)
		c.Net.deliver(c.Clock.Now())
	}
}

// Close stops every member and the driver.
func (c *Cluster) Close() {
	c.mu.Lock()
	ms := slices.Clone(c.members)
	c.mu.Unlock()
	for _, m := range ms {
		m.Stop()
	}
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	c.Net.wg.Wait()
}

// Members returns the cluster's members, stopped ones included, in the
// order they were created.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members)
}

// Running returns the members whose server runs.
func (c *Cluster) Running() []*Member {
	var out []*Member
	for _, m := range c.Members() {
		if m.Server() != nil {
			out = append(out, m)
		}
	}
	return out
}

// Start starts (or restarts, from its data directory) the member's server.
func (m *Member) Start() error {
	m.mu.Lock()
	running, cfg := m.srv != nil, m.cfg
	m.mu.Unlock()
	if running {
		return nil
	}
	// Not under m.mu: a joining member's start asks its peers for the
	// member list through its round tripper, which reads m.
	s, err := server.New(cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	m.mu.Lock()
	m.srv, m.id = s, s.MemberID()
	m.mu.Unlock()
	return nil
}

// Configure changes the configuration the member's next Start uses (a
// crash test moves a member onto the file system a crash left behind).
func (m *Member) Configure(f func(*server.Config)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.cfg)
}

// Stop stops the member's server, if it runs.
func (m *Member) Stop() {
	m.mu.Lock()
	s := m.srv
	m.srv = nil
	m.mu.Unlock()
	if s != nil {
		s.Stop()
	}
}

// Server returns the running server, nil while the member is stopped or
// after its server stopped by itself (removed, failed).
func (m *Member) Server() *server.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv == nil {
		return nil
	}
	select {
	case <-m.srv.Done():
		return nil
	default:
		return m.srv
	}
}

// ID returns the member's ID (known once it has started).
func (m *Member) ID() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.id
}

// String names the member and its ID, for logs.
func (m *Member) String() string { return fmt.Sprintf("%s(%x)", m.Name, m.ID()) }

// Err returns why the member's server stopped by itself, nil if it runs or
// was stopped.
func (m *Member) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv == nil {
		return nil
	}
	return m.srv.Err()
}

// ids returns the IDs of members.
func ids(ms []*Member) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.ID()
	}
	return out
}

// Isolate cuts m off from every other member.
func (c *Cluster) Isolate(m *Member) {
	var rest []*Member
	for _, o := range c.Members() {
		if o != m {
			rest = append(rest, o)
		}
	}
	c.Partition([]*Member{m}, rest)
}

// Partition cuts every link between members of different groups.
func (c *Cluster) Partition(groups ...[]*Member) {
	gs := make([][]uint64, len(groups))
	for i, g := range groups {
		gs[i] = ids(g)
	}
	c.Net.Partition(gs...)
}

// Heal restores every link.
func (c *Cluster) Heal() { c.Net.Heal() }

// WaitFor polls cond until it holds, failing the test after a minute of
// real time.
func (c *Cluster) WaitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s (simulated time %s)", what, c.Clock.Now().Format(time.StampMilli))
		}
		time.Sleep(time.Millisecond)
	}
}

// Elapse waits until d of simulated time has passed.
func (c *Cluster) Elapse(d time.Duration) {
	c.t.Helper()
	ch := c.Clock.After(d)
	c.WaitFor(d.String()+" of simulated time", func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	})
}

// Leader returns the running member that the running members agree leads,
// nil if they do not agree or it does not run.
func (c *Cluster) Leader() *Member {
	var lead uint64
	for _, m := range c.Running() {
		s := m.Server()
		if s == nil {
			continue
		}
		l := s.Leader()
		if l == 0 || (lead != 0 && l != lead) {
			return nil
		}
		lead = l
	}
	for _, m := range c.Running() {
		if m.ID() == lead {
			return m
		}
	}
	return nil
}

// WaitLeader waits until the running members agree on a running leader and
// returns it.
func (c *Cluster) WaitLeader() *Member {
	c.t.Helper()
	var l *Member
	c.WaitFor("a leader", func() bool { l = c.Leader(); return l != nil })
	return l
}

// WaitConverged waits until every running member has applied the same
// entries and holds the same key history (HashKV).
func (c *Cluster) WaitConverged() {
	c.t.Helper()
	c.WaitFor("the members to converge", func() bool {
		var (
			applied uint64
			hash    uint32
		)
		for i, m := range c.Running() {
			s := m.Server()
			if s == nil {
				return false
			}
			st := s.Status()
			if st.AppliedIndex != st.RaftIndex {
				return false
			}
			h, err := s.HashKV(context.Background(), 0)
			if err != nil {
				return false
			}
			if i > 0 && (st.AppliedIndex != applied || h.Hash != hash) {
				return false
			}
			applied, hash = st.AppliedIndex, h.Hash
		}
		return true
	})
}

// AddMember adds a member through the leader (a learner if learner) and
// starts it, joining the running cluster; it returns the member and the
// error of MemberAdd or of the start.
func (c *Cluster) AddMember(learner bool) (*Member, error) {
	c.mu.Lock()
	m := c.newMember(fmt.Sprintf("n%d", len(c.members)+1))
	c.mu.Unlock()
	lead := c.WaitLeader().Server()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	added, _, err := lead.MemberAdd(ctx, []string{m.PeerURL}, learner)
	if err != nil {
		return nil, err
	}
	var initial []string
	for _, o := range c.Members() {
		initial = append(initial, o.Name+"="+o.PeerURL)
	}
	m.cfg.InitialCluster = strings.Join(append(initial, m.Name+"="+m.PeerURL), ",")
	m.cfg.InitialClusterState = server.ClusterStateExisting
	// The new member asks a peer for the member list: give the followers
	// a moment to apply the addition the leader has, or the one asked may
	// not know the member yet (a member cut off never will: the start
	// then asks the others).
	for range 50 {
		if c.allKnow(added.ID) {
			break
		}
		c.Elapse(10 * Tick)
	}
	if err := m.Start(); err != nil {
		return nil, err
	}
	if m.ID() != added.ID {
		return nil, fmt.Errorf("%s started as %x, added as %x", m.Name, m.ID(), added.ID)
	}
	c.mu.Lock()
	c.members = append(c.members, m)
	c.mu.Unlock()
	return m, nil
}

// allKnow reports whether every running member has applied member id.
func (c *Cluster) allKnow(id uint64) bool {
	for _, o := range c.Running() {
		if !slices.ContainsFunc(o.Members(), func(mm membership.Member) bool { return mm.ID == id }) {
			return false
		}
	}
	return true
}

// MemberByID returns the member with id, nil if none.
func (c *Cluster) MemberByID(id uint64) *Member {
	for _, m := range c.Members() {
		if m.ID() == id {
			return m
		}
	}
	return nil
}

// peerRoundTripper carries a member's own requests to peers (the member
// list when joining, forwarded promotions) straight to the peer's handler,
// failing them across a partition.
type peerRoundTripper struct {
	c    *Cluster
	from *Member
}

// RoundTrip serves req with the target member's PeerHandler.
func (rt peerRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	var to *Member
	for _, m := range rt.c.Members() {
		if strings.TrimPrefix(m.PeerURL, "http://") == req.URL.Host {
			to = m
		}
	}
	if to == nil {
		return nil, fmt.Errorf("dial %s: no such host", req.URL.Host)
	}
	s := to.Server()
	if s == nil {
		return nil, fmt.Errorf("dial %s: connection refused", req.URL.Host)
	}
	if from, dst := rt.from.ID(), to.ID(); from != 0 {
		rt.c.Net.mu.Lock()
		up := rt.c.Net.linkUpLocked(from, dst) && rt.c.Net.linkUpLocked(dst, from)
		rt.c.Net.mu.Unlock()
		if !up {
			return nil, fmt.Errorf("dial %s: i/o timeout", req.URL.Host)
		}
	}
	rec := httptest.NewRecorder()
	s.PeerHandler().ServeHTTP(rec, req)
	return rec.Result(), nil
}

// Members returns the members m has applied, for assertions.
func (m *Member) Members() []membership.Member {
	if s := m.Server(); s != nil {
		return s.Members()
	}
	return nil
}
