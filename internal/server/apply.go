package server

import (
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/storage"
)

// maxApplyGroup bounds how many Readys' worth of committed entries one
// apply batch takes when the apply loop has fallen behind.
const maxApplyGroup = 16

// applyState is the apply loop's own bookkeeping; only that goroutine
// touches it.
type applyState struct {
	applied        uint64 // last applied index
	lastLogCompact uint64 // applied index at the last raft log compaction
	results        []pendingResult

	// members and removed are the member list and removed IDs as of the
	// entries applied so far, including the batch being built;
	// publishMembers copies them to Server.members once it is committed.
	members        []membership.Member
	removed        map[uint64]bool
	membersChanged bool // in the batch being built
	removedSelf    bool // likewise: this member's own removal
	// wrote is what the batch being built adds to the engine: its raft
	// entries, then its storage batch (for the quota's accounted size).
	wrote int64
	// dec decodes the entry being applied into messages reused for every
	// entry (see applyEntry).
	dec entryDecoder
}

type pendingResult struct {
	id  uint64
	res result
}

// errSimulatedCrash is the failure the dropApplyBatch testing knob reports.
var errSimulatedCrash = errors.New("server: apply batch dropped by a test hook")

// applyLoop applies committed entries in log order, one storage batch per
// group of Readys (group apply), and installs the snapshots raft hands
// over between them.
func (s *Server) applyLoop() {
	defer s.life.wg.Done()
	var group [][]*raftpb.Entry
	for {
		var c raftnode.Committed
		select {
		case c = <-s.node.Committed():
		case <-s.life.stopc:
			return
		case <-s.node.Done():
			return
		}
		group = group[:0]
		var snap *raftpb.Snapshot
	more:
		for {
			if c.Snapshot != nil {
				snap = c.Snapshot
				break
			}
			group = append(group, c.Entries)
			if len(group) == maxApplyGroup {
				break
			}
			select {
			case c = <-s.node.Committed():
			default:
				break more
			}
		}
		err := s.applyGroup(group)
		clear(group)
		if err == nil && snap != nil {
			err = s.installSnapshot(snap)
		}
		if err != nil {
			// A conf change cut short by Stop is not a failure: the
			// discarded batch is replayed at the next start.
			if !s.life.stopping() {
				s.fail(err)
			}
			return
		}
	}
}

// applyGroup applies the entries of group past the applied index in three
// steps: buildBatch applies them into one storage batch, commitBatch
// commits it without sync together with the new applied index (the raft
// log is the durable record) and publishes it to readers, and afterCommit
// answers the waiting proposers and does what the entries left to do.
// Entries at or below the applied index (replayed after a restart) are
// skipped, so nothing is applied twice.
//
// An error here is fatal: a request that cannot be applied for a reason
// other than its own (a decoding or storage failure) would make this member
// diverge from the others, so it stops instead.
func (s *Server) applyGroup(group [][]*raftpb.Entry) error {
	if h := s.knobs.beforeApply; h != nil {
		h()
	}
	b := s.eng.NewBatch()
	w := s.kv.Write(b)
	last, n, err := s.buildBatch(w, b, group)
	if err != nil || last == s.ap.applied {
		b.Discard()
		return err
	}
	if err := s.commitBatch(w, b, last); err != nil {
		return err
	}
	s.afterCommit(last, n)
	return nil
}

// buildBatch applies the entries of group past the applied index into b
// (through w), collecting the proposers' results in ap.results and the
// membership changes in ap. It returns the index of the last entry applied
// (the applied index if none was) and how many it applied.
func (s *Server) buildBatch(w *mvcc.Write, b *storage.Batch, group [][]*raftpb.Entry) (last uint64, n int, err error) {
	ap := &s.ap
	ap.results = ap.results[:0]
	ap.membersChanged, ap.removedSelf = false, false
	ap.wrote = 0
	last = ap.applied
	for _, ents := range group {
		for _, e := range ents {
			idx := e.GetIndex()
			if idx <= last {
				continue
			}
			if idx != last+1 {
				return 0, 0, fmt.Errorf("server: committed entry %d follows applied index %d", idx, last)
			}
			last = idx
			n++
			ap.wrote += int64(len(e.GetData()) + entryOverhead)
			id, res, err := s.applyEntry(w, b, e)
			if err != nil {
				return 0, 0, fmt.Errorf("server: apply entry %d: %w", idx, err)
			}
			if id != 0 {
				res.index = idx
				ap.results = append(ap.results, pendingResult{id: id, res: res})
			}
		}
	}
	return last, n, nil
}

// applyEntry applies one committed entry into b and returns the ID of the
// proposal it carries (0 for none) and its result.
func (s *Server) applyEntry(w *mvcc.Write, b *storage.Batch, e *raftpb.Entry) (uint64, result, error) {
	switch e.GetType() {
	case raftpb.EntryNormal:
		if len(e.GetData()) == 0 {
			// A new leader's empty entry: everything of the earlier
			// terms is applied, so its lessor takes up the clocks.
			s.leases.maybePromote(e.GetTerm())
			s.versions.newTerm()
			return 0, result{}, nil
		}
		// The decoder reuses the request for the next entry. Only
		// what it points to outlives this entry (events and responses
		// share the put's key and value, which alias the entry's
		// data), never the request itself or its messages.
		req, err := s.ap.dec.decode(e.GetData())
		if err != nil {
			return 0, result{}, fmt.Errorf("decode: %w", err)
		}
		seen := len(w.Events())
		start := time.Now()
		res, err := s.applyRequest(w, b, req, e.GetIndex())
		s.metrics.observeApply(req, res, start)
		if err == nil {
			// Puts attach keys to leases, re-puts and deletes
			// detach them, before the next request looks.
			err = s.leases.lessor.ApplyEvents(b, w.Events()[seen:])
		}
		return req.GetHeader().GetID(), res, err
	case raftpb.EntryConfChange:
		return s.applyConfChange(b, e)
	default:
		// cairn proposes only ConfChange (see applyConfChange).
		return 0, result{}, fmt.Errorf("entry has unsupported type %v", e.GetType())
	}
}

// commitBatch commits b, which applies the entries up to last, with last
// as the engine's applied index, and publishes it: readers see its
// effects from here on, and the watch hub takes its events (it never
// blocks, see watch.Hub.Notify).
func (s *Server) commitBatch(w *mvcc.Write, b *storage.Batch, last uint64) error {
	if h := s.knobs.dropApplyBatch; h != nil && h() {
		b.Discard()
		return errSimulatedCrash
	}
	b.SetAppliedIndex(last)
	s.ap.wrote += int64(b.Len())
	start := time.Now()
	if err := b.Commit(false); err != nil {
		return fmt.Errorf("server: commit apply batch: %w", err)
	}
	s.metrics.backendCommit.Observe(time.Since(start).Seconds())
	w.Done()
	s.metrics.keys.observe(w.Events())
	s.hub.Notify(w.Rev(), w.Events())
	return nil
}

// afterCommit follows a committed batch of n entries up to last: the
// readers' member list, the applied index and those waiting for it, the
// proposers' answers, then the side effects of the entries (the peers
// follow the member list, a removed member leaves, the raft log is
// compacted, the engine's growth accounted for the quota).
func (s *Server) afterCommit(last uint64, n int) {
	ap := &s.ap
	if ap.membersChanged {
		// Before the applied index moves, so that a linearizable
		// MemberList released by it sees the change.
		s.publishMembers()
	}
	s.appliedTo(last)
	for i := range ap.results {
		s.waits.trigger(ap.results[i].id, ap.results[i].res)
	}
	clear(ap.results)
	ap.results = ap.results[:0]

	if ap.membersChanged {
		s.syncPeers()
	}
	if ap.removedSelf {
		s.leaveCluster()
	}
	s.maybeCompactLog()
	s.quota.applied(n, ap.wrote)
}

// appliedTo records that everything up to index is applied, committed and
// published: the raft node may let go of it, and the reads and lease
// requests waiting for it go on. Only the apply loop calls it.
func (s *Server) appliedTo(index uint64) {
	s.ap.applied = index
	s.applied.advance(index)
	s.node.AppliedTo(index)
	s.reads.appliedAdvanced()
}

// applyRequest applies one request, the entry at index. The auth checks
// come first (checkEntry, apply_auth.go), then the auth requests
// (applyAuth), then the flat switch. Request errors (mvcc's, the lessor's,
// ErrNoSpace, ErrUnsupportedRequest) go into the result; only failures
// that leave the batch unusable are returned.
func (s *Server) applyRequest(w *mvcc.Write, b *storage.Batch, r *pb.InternalRaftRequest, index uint64) (result, error) {
	if refusedWhenCorrupt(r) && s.alarms.corrupt() {
		return result{err: ErrCorrupt}, nil
	}
	if err := s.checkEntry(b, r); err != nil {
		return result{err: err}, nil
	}
	if res, ok, err := s.applyAuth(w, b, r, index); ok {
		return res, err
	}
	switch {
	case r.Put != nil:
		if s.alarms.spaceExceeded() {
			return result{err: ErrNoSpace}, nil
		}
		resp, err := w.Put(r.Put)
		if err != nil {
			return requestError(err)
		}
		return result{resp: resp}, nil
	case r.DeleteRange != nil:
		resp, err := w.DeleteRange(r.DeleteRange)
		if err != nil {
			return requestError(err)
		}
		return result{resp: resp}, nil
	case r.Txn != nil:
		if txnCost(r.Txn) > 0 && s.alarms.spaceExceeded() {
			return result{err: ErrNoSpace}, nil
		}
		resp, err := w.Txn(r.Txn)
		if err != nil {
			return requestError(err)
		}
		return result{resp: resp}, nil
	case r.Compaction != nil:
		resp, done, err := w.Compact(r.Compaction)
		if err != nil {
			res, ferr := requestError(err)
			res.compacted = done
			return res, ferr
		}
		return result{resp: resp, compacted: done}, nil
	case r.Alarm != nil:
		resp, err := s.alarms.apply(b, r.Alarm)
		if err != nil {
			return result{}, err
		}
		resp.Header.Revision = w.Rev()
		return result{resp: resp}, nil
	case r.ClusterMemberAttrSet != nil:
		return result{}, s.applyMemberAttributes(b, r.ClusterMemberAttrSet)
	case r.ClusterVersionSet != nil:
		return s.versions.applyClusterVersion(b, r.ClusterVersionSet)
	case r.DowngradeInfoSet != nil:
		return s.versions.applyDowngrade(b, r.DowngradeInfoSet)
	case r.LeaseGrant != nil:
		return s.leases.applyGrant(w, b, r.LeaseGrant)
	case r.LeaseRevoke != nil:
		return s.leases.applyRevoke(w, b, r.LeaseRevoke)
	case r.LeaseCheckpoint != nil:
		return s.leases.applyCheckpoint(w, b, r.LeaseCheckpoint)
	default:
		return result{err: ErrUnsupportedRequest}, nil
	}
}

// requestError sorts an mvcc error: the request's own fault goes back to
// its proposer; anything else is fatal.
func requestError(err error) (result, error) {
	for _, re := range []error{mvcc.ErrCompacted, mvcc.ErrFutureRev, mvcc.ErrKeyNotFound, mvcc.ErrLeaseNotFound} {
		if errors.Is(err, re) {
			return result{err: err}, nil
		}
	}
	return result{}, err
}

// maybeCompactLog folds the raft log into the applied state every
// SnapshotCount applied entries, keeping snapshotCatchUpEntries of it for
// followers that lag a little.
func (s *Server) maybeCompactLog() {
	ap := &s.ap
	if ap.applied-ap.lastLogCompact < s.cfg.SnapshotCount {
		return
	}
	keep := s.cfg.SnapshotCatchUpEntries
	if s.knobs.catchUpEntries > 0 {
		keep = s.knobs.catchUpEntries
	}
	ap.lastLogCompact = ap.applied
	if ap.applied <= keep {
		return
	}
	if err := s.node.Compact(ap.applied - keep); err != nil {
		if errors.Is(err, raftnode.ErrLogStorage) || errors.Is(err, storage.ErrWAL) {
			// The log's (or the state's) engine takes no more writes:
			// an idle member would otherwise learn it only at its next
			// write.
			s.fail(err)
			return
		}
		// Not fatal: the log is only longer than it needs to be.
		s.lg.Warn("raft log compaction failed", "index", ap.applied-keep, "err", err)
	}
}
