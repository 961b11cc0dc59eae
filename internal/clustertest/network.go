package clustertest

import (
	"bytes"
	"container/heap"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/internal/transport"
)

// Faults are the network's misbehaviours, applied to every message between
// members that the partitions let through.
type Faults struct {
	// Drop is the probability that a message is lost.
	Drop float64
	// Duplicate is the probability that a message is delivered twice.
	// Proposals forwarded to the leader are never duplicated: a real
	// stream never does, and a duplicate would be a second request.
	Duplicate float64
	// MinDelay and MaxDelay bound a message's delay, drawn uniformly;
	// messages overtake each other when their delays differ.
	MinDelay, MaxDelay time.Duration
}

// Network carries raft messages between the members of a Cluster, in
// simulated time, through the faults and partitions the test sets. Each
// member's server gets an endpoint from it (server.Config.NewTransport).
type Network struct {
	clock *clocktest.Fake
	seed  uint64

	mu     sync.Mutex
	eps    map[uint64]*endpoint // by member ID: the running server's endpoint
	faults Faults
	// cut holds the directed links that are down: cut[from][to].
	cut map[uint64]map[uint64]bool
	// since is when each directed link last came up (ActiveSince).
	since map[[2]uint64]time.Time
	queue msgQueue
	seq   uint64

	// dead holds the members killed and not revived (Kill).
	dead map[uint64]bool
	// snapshots counts the snapshot transfers completed, per receiver.
	snapshots map[uint64]int
	wg        sync.WaitGroup
}

func newNetwork(clock *clocktest.Fake, seed uint64) *Network {
	return &Network{
		clock:     clock,
		seed:      seed,
		eps:       map[uint64]*endpoint{},
		cut:       map[uint64]map[uint64]bool{},
		since:     map[[2]uint64]time.Time{},
		snapshots: map[uint64]int{},
		dead:      map[uint64]bool{},
	}
}

// SetFaults replaces the network's faults.
func (n *Network) SetFaults(f Faults) {
	n.mu.Lock()
	n.faults = f
	n.mu.Unlock()
}

// Partition cuts every link between members in different groups; members
// in no group are cut off from everyone. It replaces earlier partitions.
func (n *Network) Partition(groups ...[]uint64) {
	group := map[uint64]int{}
	for i, g := range groups {
		for _, id := range g {
			group[id] = i + 1
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := n.knownIDsLocked(groups)
	for _, a := range ids {
		for _, b := range ids {
			if a != b {
				n.setCutLocked(a, b, group[a] == 0 || group[a] != group[b])
			}
		}
	}
}

// Heal brings every link back up.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for a, m := range n.cut {
		for b := range m {
			n.setCutLocked(a, b, false)
		}
	}
}

func (n *Network) knownIDsLocked(groups [][]uint64) []uint64 {
	seen := map[uint64]bool{}
	var ids []uint64
	add := func(id uint64) {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	for id := range n.eps {
		add(id)
	}
	for a, m := range n.cut {
		add(a)
		for b := range m {
			add(b)
		}
	}
	for _, g := range groups {
		for _, id := range g {
			add(id)
		}
	}
	return ids
}

func (n *Network) setCutLocked(from, to uint64, down bool) {
	if n.cut[from] == nil {
		n.cut[from] = map[uint64]bool{}
	}
	if n.cut[from][to] == down {
		return
	}
	n.cut[from][to] = down
	if !down {
		n.since[[2]uint64{from, to}] = n.clock.Now()
	}
}

func (n *Network) linkUpLocked(from, to uint64) bool {
	return !n.cut[from][to]
}

// Snapshots returns how many snapshots member id has received.
func (n *Network) Snapshots(id uint64) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.snapshots[id]
}

// TotalSnapshots returns how many snapshots all members have received.
func (n *Network) TotalSnapshots() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	total := 0
	for _, k := range n.snapshots {
		total += k
	}
	return total
}

// inflight is a message on its way.
type inflight struct {
	at   time.Time
	seq  uint64
	from uint64
	m    *raftpb.Message
}

type msgQueue []inflight

func (q msgQueue) Len() int { return len(q) }
func (q msgQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q msgQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *msgQueue) Push(x any)   { *q = append(*q, x.(inflight)) }
func (q *msgQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

// deliver hands every message due by now to its recipient.
func (n *Network) deliver(now time.Time) {
	for {
		n.mu.Lock()
		if len(n.queue) == 0 || n.queue[0].at.After(now) {
			n.mu.Unlock()
			return
		}
		it := heap.Pop(&n.queue).(inflight)
		n.mu.Unlock()
		n.deliverOne(it)
	}
}

// deliverOne hands one message to its recipient, unless the link is down.
func (n *Network) deliverOne(it inflight) {
	to := it.m.GetTo()
	n.mu.Lock()
	dst := n.eps[to]
	src := n.eps[it.from]
	ok := dst != nil && n.linkUpLocked(it.from, to)
	n.mu.Unlock()
	if !ok {
		return
	}
	// A removed member's messages are refused, and it is told so, as the
	// real transport does.
	if dst.cfg.Raft.IsIDRemoved(it.from) {
		if src != nil {
			src.noteRemoved()
		}
		return
	}
	dst.cfg.Raft.Process(context.Background(), it.m)
}

// endpoint is one server's transport on the network.
type endpoint struct {
	n    *Network
	cfg  transport.Config
	rng  *rand.Rand // guarded by n.mu
	upAt time.Time  // when the server started

	mu      sync.Mutex
	stopped bool
	peers   map[uint64]time.Time // peer → when added
	active  sync.WaitGroup       // snapshot transfers touching this endpoint
	sending map[uint64]bool      // peers with a snapshot transfer in flight

	removedOnce sync.Once
	removed     chan struct{}
}

var _ server.PeerTransport = (*endpoint)(nil)

// newEndpoint makes the endpoint of a server starting with cfg; it
// replaces the endpoint of an earlier incarnation of the same member.
func (n *Network) newEndpoint(cfg transport.Config) server.PeerTransport {
	ep := &endpoint{
		n:       n,
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(n.seed, cfg.LocalID)),
		upAt:    n.clock.Now(),
		peers:   map[uint64]time.Time{},
		sending: map[uint64]bool{},
		removed: make(chan struct{}),
	}
	n.mu.Lock()
	if n.dead[cfg.LocalID] {
		ep.stopped = true
	} else {
		n.eps[cfg.LocalID] = ep
	}
	n.mu.Unlock()
	return ep
}

func (ep *endpoint) Send(msgs []*raftpb.Message) {
	n := ep.n
	now := n.clock.Now()
	for _, m := range msgs {
		to := m.GetTo()
		ep.mu.Lock()
		_, known := ep.peers[to]
		stopped := ep.stopped
		ep.mu.Unlock()
		if !known || stopped {
			continue
		}
		if m.GetType() == raftpb.MsgSnap {
			ep.sendSnapshot(m)
			continue
		}
		// Messages are copied, as marshaling them would: raft may modify
		// a message it receives (a leader rewrites refused conf changes).
		n.mu.Lock()
		f := n.faults
		copies := 1
		if ep.rng.Float64() < f.Drop {
			copies = 0
		} else if m.GetType() != raftpb.MsgProp && ep.rng.Float64() < f.Duplicate {
			copies = 2
		}
		var now0 []inflight
		for range copies {
			d := f.MinDelay
			if f.MaxDelay > f.MinDelay {
				d += time.Duration(ep.rng.Int64N(int64(f.MaxDelay - f.MinDelay + 1)))
			}
			n.seq++
			it := inflight{at: now.Add(d), seq: n.seq, from: ep.cfg.LocalID, m: proto.CloneOf(m)}
			if d == 0 {
				now0 = append(now0, it)
			} else {
				heap.Push(&n.queue, it)
			}
		}
		n.mu.Unlock()
		// Undelayed messages arrive at once rather than at the next tick:
		// a round trip then costs no simulated time, as on a fast LAN.
		for _, it := range now0 {
			n.deliverOne(it)
		}
	}
}

// sendSnapshot transfers a snapshot as the real transport does (source to
// sink, then the MsgSnap to raft, then the report), at once rather than in
// simulated time, one at a time per peer.
func (ep *endpoint) sendSnapshot(m *raftpb.Message) {
	to := m.GetTo()
	ep.mu.Lock()
	if ep.stopped || ep.sending[to] {
		ep.mu.Unlock()
		return
	}
	ep.sending[to] = true
	ep.active.Add(1)
	ep.mu.Unlock()
	m = proto.CloneOf(m)
	ep.n.wg.Add(1)
	go func() {
		defer ep.n.wg.Done()
		defer ep.active.Done()
		status := ep.transferSnapshot(m)
		ep.mu.Lock()
		delete(ep.sending, to)
		stopped := ep.stopped
		ep.mu.Unlock()
		if !stopped {
			ep.cfg.Raft.ReportSnapshot(to, status)
		}
	}()
}

func (ep *endpoint) transferSnapshot(m *raftpb.Message) raft.SnapshotStatus {
	n, to := ep.n, m.GetTo()
	n.mu.Lock()
	dst := n.eps[to]
	up := dst != nil && n.linkUpLocked(ep.cfg.LocalID, to) && n.linkUpLocked(to, ep.cfg.LocalID)
	n.mu.Unlock()
	if !up || !dst.acquire() {
		return raft.SnapshotFailure
	}
	defer dst.active.Done()
	rc, _, err := ep.cfg.SnapshotSource.OpenSnapshot(m.GetSnapshot().GetMetadata().GetIndex())
	if err != nil {
		return raft.SnapshotFailure
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return raft.SnapshotFailure
	}
	if dst.cfg.Raft.IsIDRemoved(ep.cfg.LocalID) {
		ep.noteRemoved()
		return raft.SnapshotFailure
	}
	if err := dst.cfg.SnapshotSink.ReceiveSnapshot(m, bytes.NewReader(data)); err != nil {
		return raft.SnapshotFailure
	}
	if err := dst.cfg.Raft.Process(context.Background(), m); err != nil {
		return raft.SnapshotFailure
	}
	n.mu.Lock()
	n.snapshots[to]++
	n.mu.Unlock()
	return raft.SnapshotFinish
}

// acquire registers a transfer touching the endpoint; false if it stopped.
func (ep *endpoint) acquire() bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.stopped {
		return false
	}
	ep.active.Add(1)
	return true
}

func (ep *endpoint) noteRemoved() { ep.removedOnce.Do(func() { close(ep.removed) }) }

func (ep *endpoint) AddPeer(id uint64, _ []string) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if _, ok := ep.peers[id]; !ok {
		ep.peers[id] = ep.n.clock.Now()
	}
}

func (ep *endpoint) UpdatePeer(uint64, []string) {}

func (ep *endpoint) RemovePeer(id uint64) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	delete(ep.peers, id)
}

// ActiveSince is when the link to id came up: when the peer was added or
// the link last healed, whichever is later; zero while the link is down or
// the peer is not running.
func (ep *endpoint) ActiveSince(id uint64) time.Time {
	ep.mu.Lock()
	added, ok := ep.peers[id]
	ep.mu.Unlock()
	n := ep.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if !ok || n.eps[id] == nil || !n.linkUpLocked(ep.cfg.LocalID, id) || !n.linkUpLocked(id, ep.cfg.LocalID) {
		return time.Time{}
	}
	at := added
	for _, k := range [][2]uint64{{ep.cfg.LocalID, id}, {id, ep.cfg.LocalID}} {
		if s := n.since[k]; s.After(at) {
			at = s
		}
	}
	if up := n.eps[id].upAt; up.After(at) {
		at = up
	}
	return at
}

func (ep *endpoint) Removed() <-chan struct{} { return ep.removed }

func (ep *endpoint) Handler() http.Handler { return http.NotFoundHandler() }

// Stop takes the endpoint off the network and waits for the snapshot
// transfers that touch it.
func (ep *endpoint) Stop() {
	ep.mu.Lock()
	ep.stopped = true
	ep.mu.Unlock()
	n := ep.n
	n.mu.Lock()
	if n.eps[ep.cfg.LocalID] == ep {
		delete(n.eps, ep.cfg.LocalID)
	}
	n.mu.Unlock()
	ep.active.Wait()
}

// Kill takes member id off the network at once, the way a crashed process
// falls silent: nothing it sends from now on is delivered, nothing is
// delivered to it, its snapshot transfers in flight fail, and so does every
// endpoint it opens until Revive (a crash may fall inside a restart, before
// the server has its endpoint). Unlike the endpoint's Stop it waits for
// nothing, so a crash test may call it from inside the member's own file
// system operation; the member's server is stopped afterwards as usual.
func (n *Network) Kill(id uint64) {
	n.mu.Lock()
	n.dead[id] = true
	ep := n.eps[id]
	delete(n.eps, id)
	n.mu.Unlock()
	if ep != nil {
		ep.mu.Lock()
		ep.stopped = true
		ep.mu.Unlock()
	}
}

// Revive lets member id, killed before, on the network again from its next
// start.
func (n *Network) Revive(id uint64) {
	n.mu.Lock()
	delete(n.dead, id)
	n.mu.Unlock()
}
