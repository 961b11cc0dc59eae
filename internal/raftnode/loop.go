package raftnode

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// testHookBeforeSave, when set (by tests, before Start), runs on the Ready
// loop just before a Ready's entries and hard state are written.
var testHookBeforeSave func()

// errStopping unwinds the loop when Stop is called while it waits.
var errStopping = errors.New("raftnode: stopping")

// run is the Ready loop: the only goroutine that touches n.rn.
func (n *Node) run() {
	defer close(n.done)
	defer n.recoverLogFailure()
	// Streams still open keep their snapshot until they close; the owner
	// stops the transport before closing the engine.
	defer n.log.out.close()
	ticker := n.cfg.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	campaignPending := true
	for {
		// Draining before every Ready (not once per wake-up) puts whatever
		// arrived during the last fsync into the very next Ready.
		for n.drainInbox(); n.rn.HasReady(); n.drainInbox() {
			if err := n.handleReady(); err != nil {
				if !errors.Is(err, errStopping) {
					n.err = err
					n.logger.Error("raft loop failed; the member stops", "err", err)
				}
				return
			}
		}
		n.releaseOfferedSnapshots()
		if campaignPending {
			campaignPending = n.maybeCampaign()
			if !campaignPending && n.rn.HasReady() {
				continue
			}
		}
		select {
		case <-ticker.C():
			n.rn.Tick()
		case <-n.wake:
		case f := <-n.calls:
			f()
		case <-n.stopc:
			return
		}
	}
}

// recoverLogFailure, deferred by the Ready loop, turns raft's panic on a
// failed read of the log (raft panics on any storage error it does not
// expect) into the loop's error: the read recorded the failure first
// (LogStore.fail). Any other panic is a broken invariant and goes on.
func (n *Node) recoverLogFailure() {
	r := recover()
	if r == nil {
		return
	}
	err := n.log.Failed()
	if err == nil {
		panic(r)
	}
	n.err = err
	n.logger.Error("the raft log's storage failed; the member stops", "err", err, "raft", fmt.Sprint(r))
}

// drainInbox hands the queued proposals, read requests, peer messages and
// calls to raft. Proposals stay queued while no leader is known, as raft
// would only drop them: a follower forwards a proposal to its leader, and
// drops it when it has none. The check is against raft itself, after the
// peer messages of this round, which may have just deposed the leader.
func (n *Node) drainInbox() {
	n.inbox.Lock()
	props, ccs, held := n.inbox.props, n.inbox.ccs, n.inbox.held
	reads, msgs, funcs := n.inbox.reads, n.inbox.msgs, n.inbox.funcs
	n.inbox.props, n.inbox.ccs, n.inbox.held = nil, nil, false
	n.inbox.reads, n.inbox.msgs, n.inbox.funcs = nil, nil, nil
	n.inbox.Unlock()

	for _, m := range msgs {
		if err := n.rn.Step(m); err != nil {
			n.logger.Debug("raft refused a peer message", "type", m.GetType().String(), "from", m.GetFrom(), "err", err)
		}
	}
	for _, f := range funcs {
		f(n.rn)
	}
	for _, rctx := range reads {
		n.rn.ReadIndex(rctx)
	}
	if len(props) == 0 && len(ccs) == 0 {
		return
	}
	if n.rn.BasicStatus().SoftState.Lead == raft.None {
		// Back to the front of the queue, in order, to wait for a leader.
		n.inbox.Lock()
		n.inbox.props = append(props, n.inbox.props...)
		n.inbox.ccs = append(ccs, n.inbox.ccs...)
		n.inbox.held = true
		n.inbox.Unlock()
		return
	}
	if held && n.cfg.Abandoned != nil {
		props = slices.DeleteFunc(props, func(p Proposal) bool { return p.ID != 0 && n.cfg.Abandoned(p.ID) })
		ccs = slices.DeleteFunc(ccs, func(p confChangeProposal) bool { return n.cfg.Abandoned(p.id) })
	}
	for _, p := range ccs {
		n.stepConfChange(p)
	}
	if len(props) == 0 {
		return
	}
	// One MsgProp carries every queued proposal: raft appends them as one
	// run of entries, persisted by the next Ready in one synced write.
	block := make([]raftpb.Entry, len(props))
	ents := make([]*raftpb.Entry, len(props))
	for i := range props {
		block[i].Data = props[i].Data
		ents[i] = &block[i]
	}
	err := n.rn.Step(&raftpb.Message{Type: raftpb.MsgProp.Enum(), From: new(n.cfg.ID), Entries: ents})
	if err != nil && n.cfg.Dropped != nil {
		ids := make([]uint64, len(props))
		for i := range props {
			ids[i] = props[i].ID
		}
		n.dropped(ids, err)
	}
}

// stepConfChange proposes one conf change. Raft answers a conf change it
// will not take (another one is unapplied) by swapping it for an empty
// entry in the message it was given, which is how the refusal is noticed.
func (n *Node) stepConfChange(p confChangeProposal) {
	data, err := proto.Marshal(p.cc)
	if err != nil {
		n.dropped([]uint64{p.id}, fmt.Errorf("raftnode: encode conf change: %w", err))
		return
	}
	ents := []*raftpb.Entry{{Type: raftpb.EntryConfChange.Enum(), Data: data}}
	err = n.rn.Step(&raftpb.Message{Type: raftpb.MsgProp.Enum(), From: new(n.cfg.ID), Entries: ents})
	switch {
	case err != nil:
		n.dropped([]uint64{p.id}, err)
	case ents[0].GetType() != raftpb.EntryConfChange:
		n.dropped([]uint64{p.id}, ErrConfChangeInProgress)
	}
}

func (n *Node) dropped(ids []uint64, err error) {
	if n.cfg.Dropped != nil {
		n.cfg.Dropped(ids, err)
	}
}

// handleReady processes one Ready. The order is what makes a crash safe:
//
//  1. a leader sends its messages first: followers may persist in parallel
//     with it (raft thesis §10.2.1); its own vote in the commit still waits
//     for step 3;
//  2. committed entries already in the persisted log, and below the first
//     entry this Ready writes, go to the apply loop now, so applying
//     overlaps with this Ready's fsync (durableBefore): an entry is never
//     applied ahead of the durable log it comes from;
//  3. new entries and the hard state are written in one batch, synced when
//     raft says it must be (new entries, term or vote);
//  4. the remaining committed entries (those this very write made
//     durable) go to the apply loop, and a follower's messages (acks
//     promising durability) are sent;
//  5. Advance, after the apply loop has applied any conf change in the
//     batch, so raft never sees two configuration changes in flight.
//
// A snapshot (a follower that fell behind the leader's log) is installed
// by the apply side before anything else of its Ready: this loop hands it
// over and waits until it is applied, so the log store already starts
// after it when the Ready's hard state is written and its acknowledgement
// is sent.
func (n *Node) handleReady() error {
	rd := n.rn.Ready()
	if rd.SoftState != nil {
		if lead := rd.SoftState.Lead; lead != raft.None && lead != n.lead.Load() {
			n.leaderChanges.Add(1)
		}
		n.lead.Store(rd.SoftState.Lead)
		n.state.Store(uint32(rd.SoftState.RaftState))
		n.logger.Info("raft state changed", "lead", rd.SoftState.Lead, "state", rd.SoftState.RaftState.String())
		if n.cfg.OnSoftState != nil {
			n.cfg.OnSoftState(rd.SoftState.Lead, rd.SoftState.RaftState)
		}
	}
	if hs := rd.HardState; !raft.IsEmptyHardState(hs) {
		// Published before the entries it covers can be applied, so
		// readers never see an applied index above the commit index.
		n.term.Store(hs.GetTerm())
		n.commit.Store(hs.GetCommit())
	}
	advanced := uint64(0)
	if snap := rd.Snapshot; !raft.IsEmptySnap(snap) {
		index := snap.GetMetadata().GetIndex()
		n.logger.Info("installing a snapshot from the leader", "index", index, "term", snap.GetMetadata().GetTerm())
		if err := n.handOff(Committed{Snapshot: snap}); err != nil {
			return err
		}
		if err := n.waitApplied(index); err != nil {
			return err
		}
		advanced = index
	}
	isLeader := n.IsLeader()
	if isLeader && len(rd.Messages) > 0 {
		n.transport.Send(rd.Messages)
	}

	ents := rd.CommittedEntries
	// later are the committed entries that must wait for this Ready's
	// write: see durableBefore.
	later := ents
	if len(ents) > 0 {
		if early := ents[:durableBefore(ents, rd.Entries, n.log)]; len(early) > 0 {
			if err := n.handOff(Committed{Entries: early}); err != nil {
				return err
			}
			later = ents[len(early):]
		}
		advanced = ents[len(ents)-1].GetIndex()
	}

	if len(rd.Entries) > 0 || !raft.IsEmptyHardState(rd.HardState) {
		if testHookBeforeSave != nil {
			testHookBeforeSave()
		}
		start := time.Now()
		if err := n.log.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
			return err
		}
		if rd.MustSync && n.cfg.ObserveSync != nil {
			n.cfg.ObserveSync(time.Since(start))
		}
	}
	if len(later) > 0 {
		if err := n.handOff(Committed{Entries: later}); err != nil {
			return err
		}
	}
	if !isLeader && len(rd.Messages) > 0 {
		n.transport.Send(rd.Messages)
	}
	if len(rd.ReadStates) > 0 && n.cfg.OnReadStates != nil {
		n.cfg.OnReadStates(rd.ReadStates)
	}
	if hasConfChange(ents) {
		if err := n.waitApplied(ents[len(ents)-1].GetIndex()); err != nil {
			return err
		}
	}
	n.rn.Advance(rd)
	if advanced > 0 {
		n.setAdvanced(advanced)
	}
	return nil
}

// durableBefore returns how many of the committed entries ents are in the
// durable log already, and so may be applied while this Ready's write is
// under way. That is a prefix: the entries below the first one of the
// Ready's own (unstable) entries, and no further than the log store's last
// index. The last index alone is not enough: it still counts a stored tail
// that this very Ready overwrites (a new leader replacing a follower's
// uncommitted entries and committing its own at those indexes in one
// message), and applying those before the write would let a crash leave
// the log holding the old entries below a commit index the state machine
// has applied the new ones at. Below the first unstable entry, raft's log
// is the stored one, so the terms agree.
func durableBefore(ents, unstable []*raftpb.Entry, log *LogStore) int {
	limit, _ := log.LastIndex()
	if len(unstable) > 0 {
		limit = min(limit, unstable[0].GetIndex()-1)
	}
	i, _ := slices.BinarySearchFunc(ents, limit+1, func(e *raftpb.Entry, index uint64) int {
		return cmp.Compare(e.GetIndex(), index)
	})
	return i
}

// releaseOfferedSnapshots drops the Pebble snapshots kept for followers
// once no follower waits for one. An open Pebble snapshot keeps every key
// version deleted after it, so holding it until the next snapshot (maybe
// never) would stop compactions from reclaiming anything deleted since.
// Raft's progress for a follower leaves StateSnapshot when the transport
// reports the transfer finished or failed (ReportSnapshot), when the
// follower acknowledges the snapshot's index another way, or when this
// member stops leading. A MsgSnap not yet opened by the transport has its
// follower still in StateSnapshot, so its snapshot stays; a stream already
// open holds a reference of its own.
func (n *Node) releaseOfferedSnapshots() {
	if !n.log.out.holding() {
		return
	}
	waiting := false
	if n.IsLeader() {
		n.rn.WithProgress(func(_ uint64, _ raft.ProgressType, pr tracker.Progress) {
			waiting = waiting || pr.State == tracker.StateSnapshot
		})
	}
	if !waiting {
		n.log.out.close()
	}
}

// handOff queues committed entries or a snapshot for the apply loop,
// serving calls meanwhile: the apply loop may be waiting on one
// (ApplyConfChange) while the queue is full.
func (n *Node) handOff(c Committed) error {
	for {
		select {
		case n.committedc <- c:
			return nil
		case f := <-n.calls:
			f()
		case <-n.stopc:
			return errStopping
		}
	}
}

// waitApplied blocks until the apply loop reports index applied.
func (n *Node) waitApplied(index uint64) error {
	for n.applied.Load() < index {
		select {
		case <-n.appliedc:
		case f := <-n.calls:
			f()
		case <-n.stopc:
			return errStopping
		}
	}
	return nil
}

func hasConfChange(ents []*raftpb.Entry) bool {
	for _, e := range ents {
		if t := e.GetType(); t == raftpb.EntryConfChange || t == raftpb.EntryConfChangeV2 {
			return true
		}
	}
	return false
}

// maybeCampaign starts an election right away when this member is the only
// voter: it always wins, so waiting out an election timeout would only
// delay the first request. It reports whether to try again later (raft
// refuses to campaign while committed conf changes are unapplied).
func (n *Node) maybeCampaign() bool {
	st := n.rn.BasicStatus()
	if st.RaftState == raft.StateLeader || st.Lead != raft.None {
		return false
	}
	if st.Applied < st.HardState.GetCommit() {
		return true
	}
	voters := n.rn.Status().Config.Voters.IDs()
	if len(voters) == 0 {
		return true // configuration not applied yet
	}
	if _, ok := voters[n.cfg.ID]; ok && len(voters) == 1 {
		if err := n.rn.Campaign(); err != nil {
			n.logger.Warn("campaign failed", "err", err)
		}
	}
	return false
}
