package server

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/raftnode"
)

// slowApplyDuration is etcd's default --warning-apply-duration: a request
// whose apply takes longer counts in etcd_server_slow_apply_total.
const slowApplyDuration = 100 * time.Millisecond

// etcdMetrics are the rest of etcd's member metrics that dashboards and
// alert rules written for etcd query (metrics.go has the first ones), each
// under etcd's name, type and labels, counted where the same thing
// happens in cairn. Counters are safe for concurrent use; keys is updated
// by the apply loop alone.
type etcdMetrics struct {
	heartbeatSendFailures prometheus.Counter
	slowApply             prometheus.Counter
	slowReadIndex         prometheus.Counter
	readIndexFailed       prometheus.Counter

	// etcd's mvcc counters: requests served (ranges) or applied (the
	// rest), a txn's operations counted one by one.
	rangeTotal, putTotal, deleteTotal, txnTotal prometheus.Counter

	leaseGranted, leaseRevoked, leaseRenewed, leaseExpired prometheus.Counter
	leaseTTL                                               prometheus.Histogram

	defrag, snapshot prometheus.Histogram

	keys keyCount
}

func newEtcdMetrics() etcdMetrics {
	counter := func(ns, sub, name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	return etcdMetrics{
		heartbeatSendFailures: counter("etcd", "server", "heartbeat_send_failures_total",
			"The total number of leader heartbeat send failures (likely overloaded from slow disk)."),
		slowApply: counter("etcd", "server", "slow_apply_total",
			"The total number of slow apply requests (likely overloaded from slow disk)."),
		slowReadIndex: counter("etcd", "server", "slow_read_indexes_total",
			"The total number of pending read indexes not in sync with leader's or timed out read index requests."),
		readIndexFailed: counter("etcd", "server", "read_indexes_failed_total",
			"The total number of failed read indexes seen."),
		rangeTotal:  counter("etcd", "mvcc", "range_total", "Total number of ranges seen by this member."),
		putTotal:    counter("etcd", "mvcc", "put_total", "Total number of puts seen by this member."),
		deleteTotal: counter("etcd", "mvcc", "delete_total", "Total number of deletes seen by this member."),
		txnTotal:    counter("etcd", "mvcc", "txn_total", "Total number of txns seen by this member."),

		leaseGranted: counter("etcd_debugging", "lease", "granted_total", "The total number of granted leases."),
		leaseRevoked: counter("etcd_debugging", "lease", "revoked_total", "The total number of revoked leases."),
		leaseRenewed: counter("etcd_debugging", "lease", "renewed_total", "The number of renewed leases seen by the leader."),
		leaseExpired: counter("etcd_debugging", "server", "lease_expired_total", "The total number of expired leases."),
		leaseTTL: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "etcd_debugging", Subsystem: "lease", Name: "ttl_total",
			Help:    "Bucketed histogram of lease TTLs.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 24), // 1 s to 3 months, as etcd's
		}),
		defrag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "disk", Name: "backend_defrag_duration_seconds",
			Help:    "The latency distribution of backend defragmentation.",
			Buckets: prometheus.ExponentialBuckets(.1, 2, 13),
		}),
		snapshot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "disk", Name: "backend_snapshot_duration_seconds",
			Help:    "The latency distribution of backend snapshots.",
			Buckets: prometheus.ExponentialBuckets(.01, 2, 17),
		}),
	}
}

// collectors lists the collectors of etcdMetrics, the gauges that read s
// when scraped included.
func (em *etcdMetrics) collectors(s *Server) []prometheus.Collector {
	return []prometheus.Collector{
		em.heartbeatSendFailures, em.slowApply, em.slowReadIndex, em.readIndexFailed,
		em.rangeTotal, em.putTotal, em.deleteTotal, em.txnTotal,
		em.leaseGranted, em.leaseRevoked, em.leaseRenewed, em.leaseExpired, em.leaseTTL,
		em.defrag, em.snapshot,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "server", Name: "is_learner",
			Help: "Whether or not this member is a learner. 1 if is, 0 otherwise.",
		}, func() float64 {
			if m, ok := s.members.get(s.memberID); ok && m.IsLearner {
				return 1
			}
			return 0
		}),
		// Pebble's WAL carries both the raft log and the state
		// machine's batches: everything cairn writes ahead of its data.
		// A gauge, as etcd's is.
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "disk", Name: "wal_write_bytes_total",
			Help: "Total number of bytes written in WAL.",
		}, func() float64 { return float64(s.logBytesWritten()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd_debugging", Subsystem: "mvcc", Name: "keys_total",
			Help: "Total number of keys.",
		}, func() float64 { return float64(em.keys.get(s)) }),
	}
}

// countRequest counts an applied request in the mvcc counters, as etcd
// counts the operations of its write transactions: each put, delete range
// and range (a txn's compares are ranges too) of the branch a txn took,
// and the txn itself when it did more than one of them. Lease grants and
// revokes count in the lease counters. Only the apply loop calls it.
func (em *etcdMetrics) countRequest(r *pb.InternalRaftRequest, res result) {
	if res.err != nil {
		return
	}
	switch {
	case r.Put != nil:
		em.putTotal.Inc()
	case r.DeleteRange != nil:
		em.deleteTotal.Inc()
	case r.Txn != nil:
		resp, _ := res.resp.(*pb.TxnResponse)
		var n txnOps
		n.add(r.Txn, resp)
		em.rangeTotal.Add(float64(n.ranges))
		em.putTotal.Add(float64(n.puts))
		em.deleteTotal.Add(float64(n.deletes))
		if n.ranges+n.puts+n.deletes > 1 {
			em.txnTotal.Inc()
		}
	case r.LeaseGrant != nil:
		em.leaseGranted.Inc()
		em.leaseTTL.Observe(float64(r.LeaseGrant.TTL))
	case r.LeaseRevoke != nil:
		em.leaseRevoked.Inc()
	}
}

// countReadTxn counts a read-only txn served from the store.
func (em *etcdMetrics) countReadTxn(r *pb.TxnRequest, resp *pb.TxnResponse) {
	var n txnOps
	n.add(r, resp)
	em.rangeTotal.Add(float64(n.ranges))
	if n.ranges > 1 {
		em.txnTotal.Inc()
	}
}

// txnOps counts the operations a txn ran.
type txnOps struct{ ranges, puts, deletes int }

// add counts r's compares and the operations of the branch resp says it
// took, nested txns included. Without a response nothing but the
// compares is known to have run.
func (n *txnOps) add(r *pb.TxnRequest, resp *pb.TxnResponse) {
	n.ranges += len(r.Compare)
	if resp == nil {
		return
	}
	ops := r.Failure
	if resp.Succeeded {
		ops = r.Success
	}
	for i, op := range ops {
		switch {
		case op.GetRequestRange() != nil:
			n.ranges++
		case op.GetRequestPut() != nil:
			n.puts++
		case op.GetRequestDeleteRange() != nil:
			n.deletes++
		case op.GetRequestTxn() != nil:
			var sub *pb.TxnResponse
			if i < len(resp.Responses) {
				sub = resp.Responses[i].GetResponseTxn()
			}
			n.add(op.GetRequestTxn(), sub)
		}
	}
}

// observeApply counts a request the apply loop applied, which it began
// to apply at start: as slow if it took longer than etcd's default
// warning-apply-duration, and in the mvcc and lease counters.
func (em *etcdMetrics) observeApply(r *pb.InternalRaftRequest, res result, start time.Time) {
	if time.Since(start) > slowApplyDuration {
		em.slowApply.Inc()
	}
	em.countRequest(r, res)
}

// watchHeartbeats wraps tr, counting late heartbeats (see heartbeatWatch);
// interval is the heartbeat interval and now the member's clock.
func (em *etcdMetrics) watchHeartbeats(tr raftnode.Transport, interval time.Duration, now func() time.Time, lg *slog.Logger) *heartbeatWatch {
	return &heartbeatWatch{Transport: tr, interval: interval, now: now, failures: em.heartbeatSendFailures, lg: lg, last: make(map[uint64]time.Time)}
}

// keyCount is etcd_debugging_mvcc_keys_total: the number of live keys.
// Counting them means a walk of the keyspace, too slow for startup and
// for every scrape, so the first scrape counts once, at the store's
// revision then, and the apply loop adds each applied event after that
// revision: a put that creates a key (version 1) adds one, a delete
// removes one. While the count runs, the apply loop notes the changes it
// applies; those past the count's revision join the total when it lands.
// The apply loop reports events after publishing their revision, so an
// event the count's revision does not include is noted.
type keyCount struct {
	mu sync.Mutex
	// baseRev is the revision of the last count, 0 if none stands; base
	// is the number of keys then, delta what the events after it changed.
	base, baseRev, delta int64
	// counting is set while a count runs; pending are the changes the
	// apply loop made meanwhile.
	counting bool
	pending  []revDelta
}

type revDelta struct{ rev, d int64 }

// observe adds the changes of applied events. Only the apply loop calls
// it, after their revision is published.
func (kc *keyCount) observe(evs []*mvccpb.Event) {
	if len(evs) == 0 {
		return
	}
	var d int64
	for _, ev := range evs {
		switch {
		case ev.Type == mvccpb.DELETE:
			d--
		case ev.Kv.GetVersion() == 1:
			d++
		}
	}
	rev := evs[0].Kv.GetModRevision()
	kc.mu.Lock()
	defer kc.mu.Unlock()
	switch {
	case kc.baseRev != 0:
		if rev > kc.baseRev {
			kc.delta += d
		}
	case kc.counting:
		kc.pending = append(kc.pending, revDelta{rev, d})
	}
}

// reset forgets the count: a snapshot replaced the store's state.
func (kc *keyCount) reset() {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	kc.base, kc.baseRev, kc.delta = 0, 0, 0
	kc.pending = nil
}

// get returns the number of live keys, counting them first if no count
// stands. It returns 0 if the count fails (the member is stopping).
func (kc *keyCount) get(s *Server) int64 {
	kc.mu.Lock()
	if kc.baseRev != 0 || kc.counting {
		defer kc.mu.Unlock()
		return kc.base + kc.delta
	}
	kc.counting = true
	kc.mu.Unlock()

	rev := s.kv.Rev()
	resp, err := s.kv.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true, Revision: rev})

	kc.mu.Lock()
	defer kc.mu.Unlock()
	kc.counting = false
	pending := kc.pending
	kc.pending = nil
	if err != nil || rev == 0 {
		return 0
	}
	kc.base, kc.baseRev, kc.delta = resp.Count, rev, 0
	for _, p := range pending {
		if p.rev > rev {
			kc.delta += p.d
		}
	}
	return kc.base + kc.delta
}

// heartbeatWatch wraps the raft node's transport to count, as etcd does,
// a leader's heartbeat to a peer that leaves more than two heartbeat
// intervals after the previous one: the Ready loop was held up (a slow
// disk, most likely), and followers are close to starting an election.
type heartbeatWatch struct {
	raftnode.Transport
	interval time.Duration
	now      func() time.Time
	failures prometheus.Counter
	lg       *slog.Logger

	mu   sync.Mutex
	last map[uint64]time.Time
}

// reset forgets the heartbeats sent so far: a member that becomes leader
// starts its heartbeats afresh.
func (hw *heartbeatWatch) reset() {
	hw.mu.Lock()
	clear(hw.last)
	hw.mu.Unlock()
}

// Send implements raftnode.Transport.
func (hw *heartbeatWatch) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		if m.GetType() != raftpb.MsgHeartbeat {
			continue
		}
		now := hw.now()
		hw.mu.Lock()
		prev, ok := hw.last[m.GetTo()]
		hw.last[m.GetTo()] = now
		hw.mu.Unlock()
		if gap := now.Sub(prev); ok && gap > 2*hw.interval {
			hw.failures.Inc()
			hw.lg.Warn("leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk",
				"to", fmt.Sprintf("%x", m.GetTo()), "heartbeat-interval", hw.interval, "exceeded-duration", gap-2*hw.interval)
		}
	}
	hw.Transport.Send(msgs)
}

// observeDefrag records a defragmentation that started at start; the
// member's Defragment calls it when done.
func (s *Server) observeDefrag(start time.Time) {
	s.metrics.defrag.Observe(time.Since(start).Seconds())
}
