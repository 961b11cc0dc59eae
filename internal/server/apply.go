package server

import (
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/storage"
)

// maxApplyGroup bounds how many Readys' worth of committed entries one
// apply batch takes when the apply loop has fallen behind.
const maxApplyGroup = 16

// sizeRefreshInterval and sizeRefreshEntries bound how stale the engine
// size used by the quota check may get.
const (
	sizeRefreshInterval = 100 * time.Millisecond
	sizeRefreshEntries  = 1024
)

// applyState is the apply loop's own bookkeeping; only that goroutine
// touches it.
type applyState struct {
	applied        uint64 // last applied index
	lastLogCompact uint64 // applied index at the last raft log compaction
	results        []pendingResult
	sizeMeasured   time.Time
	sinceMeasure   int

	// members and removed are the member list and removed IDs as of the
	// entries applied so far, including the batch being built;
	// publishMembers copies them to Server.members once it is committed.
	members        []membership.Member
	removed        map[uint64]bool
	membersChanged bool // in the batch being built
	removedSelf    bool // likewise: this member's own removal
}

type pendingResult struct {
	id  uint64
	res result
}

// errSimulatedCrash is the failure the dropApplyBatch test hook reports.
var errSimulatedCrash = errors.New("server: apply batch dropped by a test hook")

// applyLoop applies committed entries in log order, one storage batch per
// group of Readys (group apply), and installs the snapshots raft hands
// over between them.
func (s *Server) applyLoop() {
	defer s.wg.Done()
	var group [][]*raftpb.Entry
	for {
		var c raftnode.Committed
		select {
		case c = <-s.node.Committed():
		case <-s.stopc:
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
			if !s.stopping() {
				s.fail(err)
			}
			return
		}
	}
}

// applyGroup applies the entries of group past the applied index into one
// batch, commits it without sync together with the new applied index (the
// raft log is the durable record), publishes the result to readers and
// then answers the waiting proposers. Entries at or below the applied index
// (replayed after a restart) are skipped, so nothing is applied twice.
//
// An error here is fatal: a request that cannot be applied for a reason
// other than its own (a decoding or storage failure) would make this member
// diverge from the others, so it stops instead.
func (s *Server) applyGroup(group [][]*raftpb.Entry) error {
	if h := s.cfg.hooks.beforeApply; h != nil {
		h()
	}
	ap := &s.ap
	b := s.eng.NewBatch()
	w := s.kv.Write(b)
	results := ap.results[:0]
	last := ap.applied
	ap.membersChanged, ap.removedSelf = false, false
	n := 0
	for _, ents := range group {
		for _, e := range ents {
			idx := e.GetIndex()
			if idx <= last {
				continue
			}
			if idx != last+1 {
				b.Discard()
				return fmt.Errorf("server: committed entry %d follows applied index %d", idx, last)
			}
			last = idx
			n++
			var (
				id  uint64
				res result
				err error
			)
			switch e.GetType() {
			case raftpb.EntryNormal:
				if len(e.GetData()) == 0 {
					// A new leader's empty entry: everything of the earlier
					// terms is applied, so its lessor takes up the clocks.
					s.maybePromote(e.GetTerm())
					continue
				}
				req := &pb.InternalRaftRequest{}
				if err := proto.Unmarshal(e.GetData(), req); err != nil {
					b.Discard()
					return fmt.Errorf("server: decode entry %d: %w", idx, err)
				}
				id = req.GetHeader().GetID()
				seen := len(w.Events())
				res, err = s.applyRequest(w, b, req)
				if err == nil {
					// Puts attach keys to leases, re-puts and deletes
					// detach them, before the next request looks.
					err = s.leases.lessor.ApplyEvents(b, w.Events()[seen:])
				}
			case raftpb.EntryConfChange:
				id, res, err = s.applyConfChange(b, e)
			default:
				// cairn proposes only ConfChange (see applyConfChange).
				err = fmt.Errorf("entry has unsupported type %v", e.GetType())
			}
			if err != nil {
				b.Discard()
				return fmt.Errorf("server: apply entry %d: %w", idx, err)
			}
			if id != 0 {
				res.index = idx
				results = append(results, pendingResult{id: id, res: res})
			}
		}
	}
	if last == ap.applied {
		b.Discard()
		return nil
	}
	if h := s.cfg.hooks.dropApplyBatch; h != nil && h() {
		b.Discard()
		return errSimulatedCrash
	}
	b.SetAppliedIndex(last)
	start := time.Now()
	if err := b.Commit(false); err != nil {
		return fmt.Errorf("server: commit apply batch: %w", err)
	}
	s.metrics.backendCommit.Observe(time.Since(start).Seconds())
	w.Done()
	// The batch's effects are visible to readers from here on; the watch
	// hub takes its events (it never blocks, see watch.Hub.Notify).
	s.hub.Notify(w.Rev(), w.Events())

	ap.applied = last
	s.applied.Store(last)
	if ap.membersChanged {
		s.publishMembers()
	}
	s.node.AppliedTo(last)
	s.reads.appliedAdvanced()
	s.appliedWait.advanced()
	for i := range results {
		s.waits.trigger(results[i].id, results[i].res)
	}
	clear(results)
	ap.results = results[:0]

	if ap.membersChanged {
		s.syncPeers()
	}
	if ap.removedSelf {
		s.leaveCluster()
	}
	s.maybeCompactLog()
	s.maybeMeasureSize(n)
	return nil
}

// applyRequest applies one request. Request errors (mvcc's, the lessor's,
// ErrNoSpace, ErrUnsupportedRequest) go into the result; only failures
// that leave the batch unusable are returned.
func (s *Server) applyRequest(w *mvcc.Write, b *storage.Batch, r *pb.InternalRaftRequest) (result, error) {
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
		return result{resp: resp}, nil
	case r.ClusterMemberAttrSet != nil:
		return result{}, s.applyMemberAttributes(b, r.ClusterMemberAttrSet)
	case r.LeaseGrant != nil:
		return s.applyLeaseGrant(w, b, r.LeaseGrant)
	case r.LeaseRevoke != nil:
		return s.applyLeaseRevoke(w, b, r.LeaseRevoke)
	case r.LeaseCheckpoint != nil:
		return s.applyLeaseCheckpoint(w, b, r.LeaseCheckpoint)
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
	if s.cfg.hooks.catchUpEntries > 0 {
		keep = s.cfg.hooks.catchUpEntries
	}
	ap.lastLogCompact = ap.applied
	if ap.applied <= keep {
		return
	}
	if err := s.node.Compact(ap.applied - keep); err != nil {
		// Not fatal: the log is only longer than it needs to be.
		s.lg.Warn("raft log compaction failed", "index", ap.applied-keep, "err", err)
	}
}

// maybeMeasureSize refreshes the engine size the quota check reads.
func (s *Server) maybeMeasureSize(applied int) {
	ap := &s.ap
	ap.sinceMeasure += applied
	if now := time.Now(); ap.sinceMeasure >= sizeRefreshEntries || now.Sub(ap.sizeMeasured) >= sizeRefreshInterval {
		s.dbSize.Store(s.eng.Size())
		ap.sizeMeasured, ap.sinceMeasure = now, 0
	}
}
