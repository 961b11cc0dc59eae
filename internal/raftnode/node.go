package raftnode

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/clock"
	"github.com/cairn-db/cairn/internal/storage"
)

// ErrStopped is returned by the calls that need the Ready loop after it has
// stopped.
var ErrStopped = errors.New("raftnode: stopped")

// ErrLogStorage wraps every error of the raft log's storage: a write or a
// sync of its engine that failed (the member cannot make what it would
// acknowledge durable), or a read that failed (raft cannot go on without
// the entry). The Ready loop stops on it, with the directory, the cause and
// the remedy in the error (Err), instead of panicking; a member restarted
// on a repaired device has lost nothing it acknowledged.
var ErrLogStorage = errors.New("raftnode: the raft log's storage failed")

// ErrConfChangeInProgress is what the Dropped callback receives for a conf
// change the leader refused because another one is not applied yet (raft
// turns such a proposal into an empty entry instead of failing it). Only a
// proposal stepped on the leader itself learns this; a follower's
// forwarded one is simply never applied.
var ErrConfChangeInProgress = errors.New("raftnode: a configuration change is already in progress")

// Defaults for Config's zero values.
const (
	DefaultTickInterval   = 100 * time.Millisecond
	DefaultElectionTicks  = 10
	DefaultHeartbeatTicks = 1
	defaultMaxSizePerMsg  = 1 << 20
	defaultMaxInflight    = 512
	// maxCommittedSizePerReady bounds one Ready's committed entries. It is
	// large because the apply loop applies a whole Ready in one batch:
	// bigger batches are cheaper per entry.
	maxCommittedSizePerReady = 64 << 20
)

// Config configures a Node.
type Config struct {
	// ID is this member's raft ID; never 0.
	ID uint64
	// Engine holds the member's state and, unless Log says otherwise, its
	// raft log; the Node does not close it.
	Engine *storage.Engine
	// Log, when set and not Engine, keeps the raft log (entries, hard
	// state, truncation point) apart from Engine: in segment files, or in
	// an engine of its own (see Log); the caller has paired the two with
	// BindLog. nil keeps the log in Engine. The Node does not close it.
	Log Log
	// Peers bootstraps a new log: one conf change entry per peer, in order.
	// It is ignored when the log already has entries.
	Peers []raft.Peer
	// Join starts a new log without bootstrapping it: the member joins a
	// running cluster, and its leader sends it the log (or a snapshot).
	Join bool
	// LocalKeys lists keys outside the raft keyspace that belong to this
	// engine alone (such as the member's own ID): snapshots neither send
	// nor overwrite them. Sorted.
	LocalKeys [][]byte
	// Applied is the index of the last entry whose effects the state
	// machine holds (the engine's applied index). Raft delivers committed
	// entries after it.
	Applied uint64

	// TickInterval is the length of one raft tick (default 100ms);
	// ElectionTicks (default 10) and HeartbeatTicks (default 1) count ticks.
	TickInterval   time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	// DisablePreVote turns raft's pre-vote off (etcd's --pre-vote=false):
	// a member that was cut off then disrupts the leader with a higher
	// term when it returns. Check-quorum stays on.
	DisablePreVote bool
	// NewTicker makes the tick source, which drives raft's logical clock;
	// nil uses the wall clock.
	NewTicker func(time.Duration) clock.Ticker

	// Transport sends messages to other members; nil drops them, which is
	// right for a single voter.
	Transport Transport

	// OnReadStates receives the answers to ReadIndex requests. It runs on
	// the Ready loop and must not block.
	OnReadStates func([]raft.ReadState)
	// Abandoned, if set, reports whether nobody waits for proposal id any
	// more. Proposals that waited in the queue for a leader are checked
	// when one appears, and the abandoned ones are not proposed: a request
	// that timed out while the member knew no leader must not apply long
	// after, as etcd never proposes it either.
	Abandoned func(id uint64) bool
	// Dropped receives the IDs of proposals raft refused (for example
	// during a leadership transfer). It runs on the Ready loop and must not
	// block. Proposals can also be lost without notice (a leader that
	// crashes before replicating them); callers need a timeout either way.
	Dropped func(ids []uint64, err error)
	// ObserveSync, if set, receives the duration of every synced log write.
	ObserveSync func(time.Duration)
	// OnSoftState, if set, receives the leader and the role whenever either
	// changes. It runs on the Ready loop and must not block.
	OnSoftState func(lead uint64, state raft.StateType)

	Logger *slog.Logger
}

// Proposal is one request to append to the log.
type Proposal struct {
	// ID identifies the proposal to the Dropped callback.
	ID uint64
	// Data is the entry's payload; it must not be modified after Propose.
	Data []byte
}

// Status is a snapshot of the node's raft state.
type Status struct {
	ID            uint64
	Lead          uint64
	Term          uint64
	Commit        uint64
	State         raft.StateType
	FirstIndex    uint64
	LastIndex     uint64
	LeaderChanges uint64
}

// Committed is one hand-off from the Ready loop to the apply side: either
// committed entries, in log order, or a snapshot to install (see
// InstallSnapshot), never both.
type Committed struct {
	Entries  []*raftpb.Entry
	Snapshot *raftpb.Snapshot
}

type confChangeProposal struct {
	id uint64
	cc *raftpb.ConfChange
}

// Node runs a raft member: one goroutine (the Ready loop) owns the raft
// state machine, persists its log, sends its messages and hands committed
// entries to the apply side through Committed. All methods are safe for
// concurrent use.
type Node struct {
	cfg       Config
	log       *LogStore
	rn        *raft.RawNode // owned by the Ready loop
	transport Transport
	logger    *slog.Logger

	// inbox collects work for the Ready loop from other goroutines; wake
	// (capacity 1) tells the loop there is some.
	inbox struct {
		sync.Mutex
		props []Proposal
		ccs   []confChangeProposal
		reads [][]byte
		msgs  []*raftpb.Message
		// funcs run on the loop with the RawNode, for calls that need no
		// answer (reports, leadership transfer).
		funcs []func(*raft.RawNode)
		// held is set when proposals waited for a leader.
		held bool
	}
	wake chan struct{}

	committedc chan Committed
	// calls carries work that must run on the loop and be answered
	// (ApplyConfChange, RaftStatus); the loop serves it even while it
	// waits for the apply side.
	calls    chan func()
	applied  atomic.Uint64
	appliedc chan struct{}

	// advanced is the highest index raft has been told is applied
	// (Advance); conf change proposers wait for it, because raft refuses
	// the next conf change until then.
	advanced atomic.Uint64
	advMu    sync.Mutex
	advc     chan struct{} // closed and replaced when advanced moves

	lead, term, commit atomic.Uint64
	state              atomic.Uint32
	leaderChanges      atomic.Uint64

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
	err      error // set before done closes
}

// Start opens the log kept in cfg.Engine and starts the Ready loop. A log
// with no entries is bootstrapped with cfg.Peers.
func Start(cfg Config) (*Node, error) {
	if cfg.ID == 0 {
		return nil, errors.New("raftnode: member ID must not be 0")
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	if cfg.ElectionTicks <= 0 {
		cfg.ElectionTicks = DefaultElectionTicks
	}
	if cfg.HeartbeatTicks <= 0 {
		cfg.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if cfg.NewTicker == nil {
		cfg.NewTicker = clock.Real{}.NewTicker
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var ls *LogStore
	var err error
	if cfg.Log != nil && cfg.Log != Log(cfg.Engine) {
		ls, err = OpenSeparateLogStore(cfg.Engine, cfg.Log)
	} else {
		ls, err = OpenLogStore(cfg.Engine)
	}
	if err != nil {
		return nil, err
	}
	last, _ := ls.LastIndex()
	first, _ := ls.FirstIndex()
	if cfg.Applied > last || cfg.Applied+1 < first {
		// The state needs entries the log does not have (applied beyond
		// its end: a log from elsewhere, or one that lost synced writes),
		// or the log starts past the state (truncated below a state that
		// was then lost): either way they are not one member's.
		return nil, fmt.Errorf("raftnode: the state's applied index %d is outside the raft log [%d, %d] in %s: the log and the state do not belong together",
			cfg.Applied, first, last, ls.back.dir())
	}
	// The apply loop may commit its batch before the hard state carrying
	// the matching commit index is written (both are in the log by then),
	// so a crash can leave applied > commit. Every applied entry was
	// committed, so raising the commit index is safe.
	ls.raiseCommit(cfg.Applied)

	rcfg := &raft.Config{
		ID:                       cfg.ID,
		ElectionTick:             cfg.ElectionTicks,
		HeartbeatTick:            cfg.HeartbeatTicks,
		Storage:                  ls,
		Applied:                  cfg.Applied,
		MaxSizePerMsg:            defaultMaxSizePerMsg,
		MaxCommittedSizePerReady: maxCommittedSizePerReady,
		MaxInflightMsgs:          defaultMaxInflight,
		CheckQuorum:              true,
		PreVote:                  !cfg.DisablePreVote,
		Logger:                   raftLogger{cfg.Logger},
	}
	rn, err := raft.NewRawNode(rcfg)
	if err != nil {
		return nil, fmt.Errorf("raftnode: %w", err)
	}
	if last == 0 && !cfg.Join {
		if len(cfg.Peers) == 0 {
			return nil, errors.New("raftnode: a new log needs at least one peer to bootstrap")
		}
		if err := rn.Bootstrap(cfg.Peers); err != nil {
			return nil, fmt.Errorf("raftnode: bootstrap: %w", err)
		}
	}
	ls.localKeys = cfg.LocalKeys
	if _, err := cfg.Engine.Get(keyInstalling); !errors.Is(err, storage.ErrNotFound) {
		if err == nil {
			err = errors.New("a snapshot install was interrupted: call RecoverSnapshotInstall before Start")
		}
		return nil, fmt.Errorf("raftnode: %w", err)
	}
	removeSnapshotFiles(ls.fs, cfg.Engine, ^uint64(0))
	n := &Node{
		cfg:        cfg,
		log:        ls,
		rn:         rn,
		transport:  cfg.Transport,
		logger:     cfg.Logger,
		wake:       make(chan struct{}, 1),
		committedc: make(chan Committed, 16),
		calls:      make(chan func()),
		appliedc:   make(chan struct{}, 1),
		advc:       make(chan struct{}),
		stopc:      make(chan struct{}),
		done:       make(chan struct{}),
	}
	if n.transport == nil {
		n.transport = noTransport{}
	}
	n.applied.Store(cfg.Applied)
	n.advanced.Store(cfg.Applied)
	hs := ls.HardState()
	n.term.Store(hs.GetTerm())
	n.commit.Store(hs.GetCommit())
	n.state.Store(uint32(raft.StateFollower))
	go n.run()
	return n, nil
}

// Propose queues p for the log. It never blocks on raft: proposals that
// arrive while the loop is busy are appended together in its next round
// (group commit). Proposals wait in the queue while there is no leader.
func (n *Node) Propose(p Proposal) {
	n.inbox.Lock()
	n.inbox.props = append(n.inbox.props, p)
	n.inbox.Unlock()
	n.signal()
}

// ProposeConfChange queues a configuration change for the log, like
// Propose (it waits in the queue while there is no leader). cc is marshaled
// when it reaches raft; the caller must not modify it. id names the
// proposal to the Dropped callback.
func (n *Node) ProposeConfChange(id uint64, cc *raftpb.ConfChange) {
	n.inbox.Lock()
	n.inbox.ccs = append(n.inbox.ccs, confChangeProposal{id: id, cc: cc})
	n.inbox.Unlock()
	n.signal()
}

// TransferLeadership asks the leader to hand leadership to the member to.
// It returns at once; watch Lead for the outcome. Raft ignores it on a
// follower, and while the transfer runs the leader drops proposals.
func (n *Node) TransferLeadership(to uint64) {
	n.post(func(rn *raft.RawNode) { rn.TransferLeader(to) })
}

// ReportUnreachable tells raft that messages to member id were lost, so the
// leader probes it instead of streaming entries into the void.
func (n *Node) ReportUnreachable(id uint64) {
	n.post(func(rn *raft.RawNode) { rn.ReportUnreachable(id) })
}

// ReportSnapshot tells raft how sending a snapshot to member id ended.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	n.post(func(rn *raft.RawNode) { rn.ReportSnapshot(id, status) })
}

// post queues f to run on the loop with the RawNode.
func (n *Node) post(f func(*raft.RawNode)) {
	n.inbox.Lock()
	n.inbox.funcs = append(n.inbox.funcs, f)
	n.inbox.Unlock()
	n.signal()
}

// call runs f on the loop and waits for it; it fails with ErrStopped once
// the loop has exited and with cancel's closing.
func (n *Node) call(f func(), cancel <-chan struct{}) error {
	done := make(chan struct{})
	wrapped := func() { f(); close(done) }
	select {
	case n.calls <- wrapped:
	case <-n.done:
		return ErrStopped
	case <-cancel:
		return errCanceled
	}
	select {
	case <-done:
		return nil
	case <-n.done:
		return ErrStopped
	}
}

var errCanceled = errors.New("raftnode: call canceled")

// RaftStatus returns raft's full status, including the leader's view of
// each follower's progress. It waits for the loop; cancel abandons the
// wait (with an error) before the loop has taken the call.
func (n *Node) RaftStatus(cancel <-chan struct{}) (raft.Status, error) {
	var st raft.Status
	err := n.call(func() { st = n.rn.Status() }, cancel)
	return st, err
}

// ReadIndex asks raft for the commit index a linearizable read must wait
// for; the answer arrives through Config.OnReadStates carrying rctx. Raft
// drops the request when there is no leader, so callers retry.
func (n *Node) ReadIndex(rctx []byte) {
	n.inbox.Lock()
	n.inbox.reads = append(n.inbox.reads, rctx)
	n.inbox.Unlock()
	n.signal()
}

// Step hands a message received from a peer to raft. A MsgSnap whose data
// was not received first (ReceiveSnapshot) is dropped: raft would take the
// snapshot and the apply side fail to install it, stopping the member,
// whereas the leader only retries a snapshot that went unanswered.
func (n *Node) Step(m *raftpb.Message) {
	if m.GetType() == raftpb.MsgSnap && !n.log.received(m.GetSnapshot().GetMetadata()) {
		md := m.GetSnapshot().GetMetadata()
		n.logger.Warn("dropped a snapshot message whose data was never received",
			"from", m.GetFrom(), "index", md.GetIndex(), "term", md.GetTerm())
		return
	}
	n.inbox.Lock()
	n.inbox.msgs = append(n.inbox.msgs, m)
	n.inbox.Unlock()
	n.signal()
}

func (n *Node) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Committed returns the channel of committed entries (in log order) and
// snapshots to install. Exactly one goroutine (the apply loop) must receive
// from it; it is never closed: watch Done.
func (n *Node) Committed() <-chan Committed { return n.committedc }

// AppliedTo tells the node that the state machine holds every entry up to
// index. The apply loop calls it after each batch.
func (n *Node) AppliedTo(index uint64) {
	n.applied.Store(index)
	select {
	case n.appliedc <- struct{}{}:
	default:
	}
}

// ApplyConfChange applies a committed conf change to raft's configuration
// and returns the new configuration. The apply loop must call it for every
// conf change entry it applies, in log order.
func (n *Node) ApplyConfChange(cc raftpb.ConfChangeI) (*raftpb.ConfState, error) {
	var cs *raftpb.ConfState
	if err := n.call(func() { cs = n.rn.ApplyConfChange(cc) }, nil); err != nil {
		return nil, err
	}
	return cs, nil
}

// WaitAdvanced blocks until raft has been told that index is applied, which
// is when it accepts the next conf change. It fails with ErrStopped when the
// loop exits and with an error when cancel closes.
func (n *Node) WaitAdvanced(index uint64, cancel <-chan struct{}) error {
	for {
		n.advMu.Lock()
		if n.advanced.Load() >= index {
			n.advMu.Unlock()
			return nil
		}
		c := n.advc
		n.advMu.Unlock()
		select {
		case <-c:
		case <-n.done:
			return ErrStopped
		case <-cancel:
			return errCanceled
		}
	}
}

// setAdvanced records index as told to raft and wakes the waiters.
func (n *Node) setAdvanced(index uint64) {
	if index <= n.advanced.Load() {
		return
	}
	n.advMu.Lock()
	n.advanced.Store(index)
	close(n.advc)
	n.advc = make(chan struct{})
	n.advMu.Unlock()
}

// Compact discards the log up to and including index, which must not
// exceed the applied index.
func (n *Node) Compact(index uint64) error { return n.log.Compact(index) }

// LogStore returns the node's log storage.
func (n *Node) LogStore() *LogStore { return n.log }

// ID returns the member's raft ID.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Lead returns the current leader's ID, 0 if none is known.
func (n *Node) Lead() uint64 { return n.lead.Load() }

// Term returns the current raft term.
func (n *Node) Term() uint64 { return n.term.Load() }

// CommitIndex returns the highest log index known to be committed.
func (n *Node) CommitIndex() uint64 { return n.commit.Load() }

// IsLeader reports whether this member is the leader.
func (n *Node) IsLeader() bool { return raft.StateType(n.state.Load()) == raft.StateLeader }

// Status returns the node's current raft state.
func (n *Node) Status() Status {
	first, _ := n.log.FirstIndex()
	last, _ := n.log.LastIndex()
	return Status{
		ID:            n.cfg.ID,
		Lead:          n.lead.Load(),
		Term:          n.term.Load(),
		Commit:        n.commit.Load(),
		State:         raft.StateType(n.state.Load()),
		FirstIndex:    first,
		LastIndex:     last,
		LeaderChanges: n.leaderChanges.Load(),
	}
}

// Stop stops the Ready loop and waits for it. It is idempotent and safe to
// call from any goroutine except the loop's callbacks.
func (n *Node) Stop() {
	n.stopOnce.Do(func() { close(n.stopc) })
	<-n.done
}

// Done is closed when the Ready loop has exited, after Stop or a failure.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns why the loop exited: nil after Stop, the failure otherwise.
// It is valid once Done is closed.
func (n *Node) Err() error {
	<-n.done
	return n.err
}
