package raftnode

import (
	"errors"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// errStopping unwinds the loop when Stop is called while it waits.
var errStopping = errors.New("raftnode: stopping")

// run is the Ready loop: the only goroutine that touches n.rn.
func (n *Node) run() {
	defer close(n.done)
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
		case req := <-n.ccReqs:
			req.resp <- n.rn.ApplyConfChange(req.cc)
		case <-n.stopc:
			return
		}
	}
}

// drainInbox hands the queued proposals, read requests and peer messages to
// raft. Proposals stay queued while no leader is known, as raft would only
// drop them.
func (n *Node) drainInbox() {
	n.inbox.Lock()
	var props []Proposal
	if n.lead.Load() != raft.None {
		props = n.inbox.props
		n.inbox.props = nil
	}
	reads, msgs := n.inbox.reads, n.inbox.msgs
	n.inbox.reads, n.inbox.msgs = nil, nil
	n.inbox.Unlock()

	for _, m := range msgs {
		if err := n.rn.Step(m); err != nil {
			n.logger.Debug("raft refused a peer message", "type", m.GetType().String(), "from", m.GetFrom(), "err", err)
		}
	}
	for _, rctx := range reads {
		n.rn.ReadIndex(rctx)
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
		n.cfg.Dropped(ids, err)
	}
}

// handleReady processes one Ready. The order is what makes a crash safe:
//
//  1. a leader sends its messages first: followers may persist in parallel
//     with it (raft thesis §10.2.1); its own vote in the commit still waits
//     for step 3;
//  2. committed entries already in the persisted log go to the apply loop
//     now, so applying overlaps with this Ready's fsync;
//  3. new entries and the hard state are written in one batch, synced when
//     raft says it must be (new entries, term or vote);
//  4. the remaining committed entries go to the apply loop, and a
//     follower's messages (acks promising durability) are sent;
//  5. Advance, after the apply loop has applied any conf change in the
//     batch, so raft never sees two configuration changes in flight.
func (n *Node) handleReady() error {
	rd := n.rn.Ready()
	if rd.SoftState != nil {
		if lead := rd.SoftState.Lead; lead != raft.None && lead != n.lead.Load() {
			n.leaderChanges.Add(1)
		}
		n.lead.Store(rd.SoftState.Lead)
		n.state.Store(uint32(rd.SoftState.RaftState))
		n.logger.Info("raft state changed", "lead", rd.SoftState.Lead, "state", rd.SoftState.RaftState.String())
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		return errors.New("raftnode: raft asked to install a snapshot, which this version cannot do")
	}
	if hs := rd.HardState; !raft.IsEmptyHardState(hs) {
		// Published before the entries it covers can be applied, so
		// readers never see an applied index above the commit index.
		n.term.Store(hs.GetTerm())
		n.commit.Store(hs.GetCommit())
	}
	isLeader := n.IsLeader()
	if isLeader && len(rd.Messages) > 0 {
		n.transport.Send(rd.Messages)
	}

	ents := rd.CommittedEntries
	handed := false
	if len(ents) > 0 {
		persisted, _ := n.log.LastIndex()
		if ents[len(ents)-1].GetIndex() <= persisted {
			if err := n.handOff(ents); err != nil {
				return err
			}
			handed = true
		}
	}

	if len(rd.Entries) > 0 || !raft.IsEmptyHardState(rd.HardState) {
		start := time.Now()
		if err := n.log.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
			return err
		}
		if rd.MustSync && n.cfg.ObserveSync != nil {
			n.cfg.ObserveSync(time.Since(start))
		}
	}
	if !handed && len(ents) > 0 {
		if err := n.handOff(ents); err != nil {
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
	return nil
}

// handOff queues committed entries for the apply loop, serving conf change
// requests meanwhile: the apply loop may be waiting on one while the queue
// is full.
func (n *Node) handOff(ents []*raftpb.Entry) error {
	for {
		select {
		case n.committedc <- ents:
			return nil
		case req := <-n.ccReqs:
			req.resp <- n.rn.ApplyConfChange(req.cc)
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
		case req := <-n.ccReqs:
			req.resp <- n.rn.ApplyConfChange(req.cc)
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
