package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/storage"
)

// sizeRefreshInterval and sizeRefreshEntries bound how long the apply loop
// goes on estimating the engine's growth before it measures the size
// again (see quota).
const (
	sizeRefreshInterval = 100 * time.Millisecond
	sizeRefreshEntries  = 1024
)

// keeperInterval is how often the quota's keeper looks at the NOSPACE
// alarm while there is something to look at (the alarm raised, the disk
// full, a raise pending), retrying a proposal that failed and measuring an
// idle engine.
const keeperInterval = 500 * time.Millisecond

// clearFraction is the share of the quota the engine must fall back under
// for this member's NOSPACE alarm to clear itself: far enough below the
// quota that the alarm does not flap.
const clearFraction = 0.8

// Quota costs, etcd's estimates of what a write adds to the database.
const kvOverhead = 256

// entryOverhead is what the raft log adds per applied entry besides its
// data: the entry's key, term and index, and the write-ahead log record.
const entryOverhead = 64

func putCost(r *pb.PutRequest) int { return kvOverhead + len(r.Key) + len(r.Value) }

func txnCost(r *pb.TxnRequest) int {
	branch := func(ops []*pb.RequestOp) int {
		n := 0
		for _, op := range ops {
			if p := op.GetRequestPut(); p != nil {
				n += putCost(p)
			} else if t := op.GetRequestTxn(); t != nil {
				n += txnCost(t)
			}
		}
		return n
	}
	return max(branch(r.Success), branch(r.Failure))
}

// quota is the backend quota (QuotaBackendBytes) and this member's NOSPACE
// alarm.
//
// # The accounted size
//
// What counts against the quota is the engine's Size (storage's package
// doc: every file of the database by its allocated blocks) as it will be
// once settled: without the tables running compactions are writing, with
// the tables the next flush will write (quotaSize). Measuring it takes
// Pebble's metrics under the engine's mutex, too costly for every request,
// so the apply loop measures it every sizeRefreshInterval or
// sizeRefreshEntries entries and, in between, adds what each apply batch
// wrote (its raft entries and its storage batch) to the last measure: a
// cautious estimate of the growth, as the write-ahead log's preallocated
// blocks are counted already and a flush compresses. The accounted size
// is that sum; check adds the cost of the
// writes admitted and not yet answered (inflight), so that concurrent
// writers cannot all slip under the quota at once. A write that adds data
// is refused (ErrNoSpace) when the accounted size, the in-flight costs and
// its own cost exceed the quota.
//
// # The NOSPACE alarm
//
// The first refusal (one that the accounted size alone explains, not the
// in-flight writes, and that the size has not fallen back from since)
// raises this member's NOSPACE alarm through raft, as etcd does; so does a flush or compaction that fails for a full device
// (onBackgroundError). While the alarm is raised every member refuses, at
// apply, the writes that add data (alarmSet). A full device also puts this
// member in read-only mode locally at once (diskFull): check refuses
// writes that add data even if the alarm cannot be committed (no quorum, or
// the raft log cannot be written), until the engine finishes a flush or a
// compaction again. The raft log's device is watched the same way: its
// segment files keep the next segment allocated ahead, and while the
// device has no room for it (raftlog.Log.NoRoom) the member is read-only,
// so the room left in the current segment carries the deletes,
// compactions and alarm changes that free space.
//
// Beyond etcd, the alarm clears itself: once this member's accounted size
// is back under clearFraction of the quota (and its device is not full),
// the keeper proposes the disarm, logs it and counts it. An operator can
// still disarm it by hand, as in etcd; if the member is still over its
// quota, the next refused write raises it again. Nothing about the size is
// persisted: after a restart the size is measured afresh, so a stale
// figure never raises the alarm again, and an alarm raised before the
// restart clears itself if the member is now under the mark.
//
// The keeper (run) is one goroutine that proposes the raises and clears,
// so they never pile up: it is woken (kick) by a refusal, a full device, a
// measure while the alarm is raised, and Defragment, and looks again every
// keeperInterval while the alarm is raised, a raise is pending or the
// device is full.
type quota struct {
	s *Server
	// eng is the engine, set once it is open: onBackgroundError may run
	// before.
	eng atomic.Pointer[storage.Engine]

	// measured is quotaSize at the last measure; grown what the apply
	// loop wrote since; inflight the costs of the writes check
	// admitted whose proposals have not returned.
	measured atomic.Int64
	grown    atomic.Int64
	inflight atomic.Int64

	// mu guards the measure bookkeeping: the apply loop, the keeper and
	// Defragment measure.
	mu           sync.Mutex
	lastMeasure  time.Time
	sinceMeasure int

	// diskFull is set when a background job fails for a full device, at
	// engine generation diskFullGen; it clears once the generation moves on
	// (a flush or compaction succeeded since).
	diskFull    atomic.Bool
	diskFullGen atomic.Uint64
	// logNoRoom reports why the raft log's device has no room for its
	// next segment (nil while it has); nil for a log kept in Pebble.
	logNoRoom func() error
	// logFull remembers the last logNoRoom answer, to log its changes.
	logFull atomic.Bool
	// raise is set when a refusal wants the alarm raised.
	raise atomic.Bool
	// ioFailed is the first background error of another cause than a
	// full device; the keeper stops the member with it.
	ioFailed atomic.Pointer[error]
	// kickc wakes the keeper; never blocks its senders.
	kickc chan struct{}
}

func newQuota() *quota {
	return &quota{kickc: make(chan struct{}, 1)}
}

// start binds the quota to its server once the engine is open, and takes
// the first measure.
func (q *quota) start(s *Server) {
	if l, ok := s.logEng.(interface{ NoRoom() error }); ok {
		q.logNoRoom = l.NoRoom
	}
	q.s = s
	q.eng.Store(s.eng)
	q.measure()
}

// limit is the quota as reported: 0 when disabled.
func (q *quota) limit() int64 {
	return max(q.s.cfg.QuotaBackendBytes, 0)
}

// accounted is the engine's size as the quota counts it: the last measure
// plus what the apply loop wrote since.
func (q *quota) accounted() int64 { return q.measured.Load() + q.grown.Load() }

// measure refreshes the size from the engine. The caller keeps the engine
// open (the apply loop, the keeper, a request inside enter, startup).
func (q *quota) measure() {
	q.mu.Lock()
	defer q.mu.Unlock()
	// What is written while Size lists the directory may be counted
	// twice, never missed.
	g := q.grown.Load()
	q.measured.Store(quotaSize(q.s.eng))
	q.grown.Add(-g)
	q.lastMeasure, q.sinceMeasure = time.Now(), 0
}

// quotaSize is the figure the quota holds the engine to: its size as it
// will be once its memtables are flushed and its compactions done. That
// is the engine's Size (storage's package doc), from Pebble's own account
// of its files taken in one consistent snapshot,
//
//   - less what running compactions have written so far, and the tables
//     they replaced that await their deletion or their last reader:
//     transients a compaction causes and removes, which with a small
//     quota can double the size for a moment (a compaction rewrites the
//     whole last level), and for which a write must not be refused nor
//     the alarm left raised;
//   - plus the data of the live write-ahead logs, which the next flush
//     writes to a table while the logs stay, kept for reuse (their
//     preallocated size is counted already).
//
// An iterator held open for long keeps replaced tables on the disk
// meanwhile: that space does not count.
func quotaSize(e *storage.Engine) int64 {
	m := e.DB().Metrics()
	transient := uint64(m.Compact.InProgressBytes) + m.Table.Local.ObsoleteSize + m.Table.Local.ZombieSize +
		m.BlobFiles.Local.ObsoleteSize + m.BlobFiles.Local.ZombieSize
	used := m.DiskSpaceUsage()
	return int64(used-min(transient, used)) + int64(m.WAL.Size)
}

// applied records an apply batch of n entries that wrote bytes (its raft
// entries and its storage batch), and measures the size again if enough
// entries or time passed since the last measure. Only the apply loop calls
// it.
func (q *quota) applied(n int, bytes int64) {
	q.grown.Add(bytes)
	q.mu.Lock()
	q.sinceMeasure += n
	due := q.sinceMeasure >= sizeRefreshEntries || time.Since(q.lastMeasure) >= sizeRefreshInterval
	q.mu.Unlock()
	if due {
		q.measure()
		if q.s.alarms.has(q.alarm()) {
			q.kick()
		}
	}
}

// engineSize returns the engine's size on disk and the part of it live
// data needs, or the last measured size after Stop.
func (q *quota) engineSize() (size, inUse int64) {
	s := q.s
	if s.life.enter() != nil {
		n := q.measured.Load()
		return n, n
	}
	defer s.life.leave()
	return s.eng.Size(), s.eng.SizeInUse()
}

// alarm is this member's NOSPACE alarm.
func (q *quota) alarm() membership.Alarm {
	return membership.Alarm{MemberID: q.s.memberID, Type: int32(pb.AlarmType_NOSPACE)}
}

// readOnly reports whether the device is full: set by a background job
// that failed for it, until the engine finishes a flush or compaction.
func (q *quota) readOnly() bool {
	if q.logNoRoom != nil {
		if err := q.logNoRoom(); err != nil {
			if q.logFull.CompareAndSwap(false, true) {
				q.s.lg.Error("the raft log's device has no room for the next segment: read-only mode", "dir", q.s.logEng.Dir(), "err", err)
				q.kick()
			}
			return true
		}
		if q.logFull.CompareAndSwap(true, false) {
			q.s.lg.Warn("the raft log's device has room again: leaving read-only mode", "dir", q.s.logEng.Dir())
			q.kick()
		}
	}
	if !q.diskFull.Load() {
		return false
	}
	if e := q.eng.Load(); e != nil && e.Generation() != q.diskFullGen.Load() {
		if q.diskFull.CompareAndSwap(true, false) {
			q.s.lg.Warn("the engine wrote a table again: leaving read-only mode")
			q.kick()
		}
		return false
	}
	return true
}

// check admits a write that adds cost bytes, or refuses it with
// ErrNoSpace when the engine is (or would be) over its quota or its device
// is full. An admitted write must pass held to release when its proposal
// returns. (A count rather than a closure: every write passes here, and a
// closure would be one more allocation each.)
func (q *quota) check(cost int) (held int64, err error) {
	s := q.s
	if cost == 0 {
		return 0, nil
	}
	if q.readOnly() {
		return 0, ErrNoSpace
	}
	if s.cfg.QuotaBackendBytes < 0 {
		return 0, nil
	}
	acc := q.accounted() + int64(cost)
	if in := q.inflight.Add(int64(cost)); acc+in-int64(cost) <= s.cfg.QuotaBackendBytes {
		return int64(cost), nil
	}
	q.inflight.Add(-int64(cost))
	if acc > s.cfg.QuotaBackendBytes && !s.alarms.has(q.alarm()) {
		q.raise.Store(true)
		q.kick()
	}
	return 0, ErrNoSpace
}

// release gives back what check admitted a write with.
func (q *quota) release(held int64) {
	if held != 0 {
		q.inflight.Add(-held)
	}
}

// kick wakes the keeper without blocking.
func (q *quota) kick() {
	select {
	case q.kickc <- struct{}{}:
	default:
	}
}

// onBackgroundError is the engine's OnBackgroundError: it runs on a Pebble
// goroutine, possibly before the server is set up, so it only flips
// atomics and wakes the keeper. The engine has logged and counted err.
//
// A full device raises the NOSPACE alarm (below). A background job that
// fails for another cause (EIO: a table that could not be written, synced
// or read back by a flush, a compaction or the table statistics) stops the
// member with the error, as etcd stops on an I/O error of its backend: a
// failed flush would be retried forever while the memtables fill, the
// member acknowledging writes until it stalled, and a table a compaction
// cannot read is one a request will not read either. Once the device is
// repaired, the member restarts from its write-ahead log, or is replaced;
// its peers hold everything it had.
func (q *quota) onBackgroundError(err error) {
	if !storage.IsNoSpace(err) {
		if q.ioFailed.CompareAndSwap(nil, &err) {
			q.kick()
		}
		return
	}
	var gen uint64
	if e := q.eng.Load(); e != nil {
		gen = e.Generation()
	}
	q.diskFullGen.Store(gen)
	q.diskFull.Store(true)
	q.kick()
}

// run is the keeper: it raises and clears this member's NOSPACE alarm
// through raft (see quota), and stops the member on a storage error
// other than a full device (onBackgroundError). It runs until the member stops.
func (q *quota) run() {
	s := q.s
	defer s.life.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t := time.NewTicker(keeperInterval)
	defer t.Stop()
	for {
		select {
		case <-s.life.stopc:
			return
		case <-q.kickc:
			if errp := q.ioFailed.Load(); errp != nil && !s.life.stopping() {
				s.fail(fmt.Errorf("server: the storage engine failed in the background: %w", *errp))
				return
			}
		case <-t.C:
			if !q.raise.Load() && !q.diskFull.Load() && !q.logFull.Load() && !s.alarms.has(q.alarm()) {
				continue
			}
			// Idle members apply nothing: measure here.
			q.measure()
		}
		q.reconcile(ctx)
	}
}

// reconcile proposes what the alarm needs: raised when a refusal or a full
// device asks for it, cleared when the member is back under
// clearFraction of its quota with a device that is not full.
func (q *quota) reconcile(ctx context.Context) {
	s := q.s
	full := q.readOnly()
	raised := s.alarms.has(q.alarm())
	if q.raise.Load() && q.underClearMark() {
		// The refusal is stale (a Defragment or a compaction's end since):
		// a raised alarm would clear itself at once.
		q.raise.Store(false)
	}
	switch {
	case !raised && (full || q.raise.Load()):
		if err := q.propose(ctx, pb.AlarmRequest_ACTIVATE); err != nil {
			s.lg.Warn("raising the NOSPACE alarm failed; retrying", "err", err, "disk-full", full)
			return
		}
		q.raise.Store(false)
		s.metrics.noSpaceRaised.Inc()
		switch {
		case full && q.logFull.Load():
			s.lg.Error("the device holding the raft log is full: NOSPACE alarm raised, writes refused",
				"dir", s.logEng.Dir())
		case full:
			s.lg.Error("the device holding the data directory is full: NOSPACE alarm raised, writes refused",
				"data-dir", s.cfg.DataDir)
		default:
			s.lg.Warn("database space exceeded: NOSPACE alarm raised, writes refused",
				"quota-bytes", s.cfg.QuotaBackendBytes, "size-bytes", q.accounted())
		}
	case raised && !full && q.underClearMark():
		q.raise.Store(false)
		if err := q.propose(ctx, pb.AlarmRequest_DEACTIVATE); err != nil {
			s.lg.Warn("clearing the NOSPACE alarm failed; retrying", "err", err)
			return
		}
		s.metrics.noSpaceCleared.Inc()
		s.lg.Info("database size back under the quota's clear mark: NOSPACE alarm cleared",
			"size-bytes", q.accounted(), "quota-bytes", s.cfg.QuotaBackendBytes,
			"clear-mark-bytes", int64(clearFraction*float64(s.cfg.QuotaBackendBytes)))
	case raised:
		q.raise.Store(false)
	}
}

// underClearMark reports whether the accounted size is under clearFraction
// of the quota (always, with no quota).
func (q *quota) underClearMark() bool {
	lim := q.s.cfg.QuotaBackendBytes
	return lim < 0 || float64(q.accounted()) < clearFraction*float64(lim)
}

// propose raises or clears this member's NOSPACE alarm through raft,
// waiting at most the request timeout.
func (q *quota) propose(ctx context.Context, action pb.AlarmRequest_AlarmAction) error {
	s := q.s
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	ctx, stop := s.life.untilStop(ctx)
	defer stop()
	_, err := proposed[*pb.AlarmResponse](s, ctx, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
		Action: action, MemberID: s.memberID, Alarm: pb.AlarmType_NOSPACE,
	}}, 0, nil)
	if err != nil {
		return fmt.Errorf("%v NOSPACE: %w", action, err)
	}
	return nil
}
