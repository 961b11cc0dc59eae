package server

import (
	"fmt"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the member's Prometheus collectors, under etcd's names so
// dashboards and alerts written for etcd work unchanged.
type metrics struct {
	reg        prometheus.Registerer
	registered []prometheus.Collector

	proposalsPending prometheus.Gauge
	proposalsFailed  prometheus.Counter
	walFsync         prometheus.Histogram
	backendCommit    prometheus.Histogram

	etcdMetrics // metrics_etcd.go

	// defragInflight is 1 while a Defragment runs.
	defragInflight prometheus.Gauge
	// noSpaceRaised and noSpaceCleared count this member's NOSPACE alarm
	// raised and cleared by the member itself (see quota).
	noSpaceRaised  prometheus.Counter
	noSpaceCleared prometheus.Counter
}

// latencyBuckets are etcd's disk latency buckets: 1ms to 8s.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 14)

func newMetrics() *metrics {
	return &metrics{
		proposalsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "server", Name: "proposals_pending",
			Help: "The current number of pending proposals to commit.",
		}),
		proposalsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "server", Name: "proposals_failed_total",
			Help: "The total number of failed proposals seen.",
		}),
		walFsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "disk", Name: "wal_fsync_duration_seconds",
			Help:    "The latency distributions of fsync called by WAL.",
			Buckets: latencyBuckets,
		}),
		backendCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "disk", Name: "backend_commit_duration_seconds",
			Help:    "The latency distributions of commit called by backend.",
			Buckets: latencyBuckets,
		}),
		etcdMetrics: newEtcdMetrics(),
		defragInflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "disk", Name: "defrag_inflight",
			Help: "Whether or not defrag is active on the member. 1 means active, 0 means not.",
		}),
		noSpaceRaised: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "cairn", Subsystem: "server", Name: "nospace_alarms_raised_total",
			Help: "The number of times this member raised its NOSPACE alarm (quota exceeded or device full).",
		}),
		noSpaceCleared: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "cairn", Subsystem: "server", Name: "nospace_alarms_cleared_total",
			Help: "The number of times this member's NOSPACE alarm cleared itself, its size back under 80% of the quota.",
		}),
	}
}

// register adds the collectors to reg (nothing if reg is nil). The gauges
// read the server's state when scraped.
func (m *metrics) register(s *Server, reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	m.reg = reg
	boolGauge := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	serverID := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "etcd", Subsystem: "server", Name: "id",
		Help: "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
	}, []string{"server_id"})
	serverID.WithLabelValues(fmt.Sprintf("%x", s.memberID)).Set(1)
	goVersion := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "etcd", Subsystem: "server", Name: "go_version",
		Help: "Which Go version server is running with. 1 for 'server_go_version' label with current version.",
	}, []string{"server_go_version"})
	goVersion.WithLabelValues(runtime.Version()).Set(1)

	collectors := []prometheus.Collector{
		m.proposalsPending, m.proposalsFailed, m.walFsync, m.backendCommit,
		m.defragInflight, m.noSpaceRaised, m.noSpaceCleared,
		serverID, goVersion,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "server", Name: "has_leader",
			Help: "Whether or not a leader exists. 1 is existence, 0 is not.",
		}, func() float64 { return boolGauge(s.node.Lead() != 0) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "server", Name: "is_leader",
			Help: "Whether or not this member is a leader. 1 if is, 0 otherwise.",
		}, func() float64 { return boolGauge(s.node.IsLeader()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "server", Name: "leader_changes_seen_total",
			Help: "The number of leader changes seen.",
		}, func() float64 { return float64(s.node.Status().LeaderChanges) }),
		// etcd reports these two "totals" as gauges holding raft indexes.
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "server", Name: "proposals_committed_total",
			Help: "The total number of consensus proposals committed.",
		}, func() float64 { return float64(s.node.CommitIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "server", Name: "proposals_applied_total",
			Help: "The total number of consensus proposals applied.",
		}, func() float64 { return float64(s.applied.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "mvcc", Name: "db_total_size_in_bytes",
			Help: "Total size of the underlying database physically allocated in bytes.",
		}, func() float64 { n, _ := s.quota.engineSize(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "mvcc", Name: "db_total_size_in_use_in_bytes",
			Help: "Total size of the underlying database logically in use in bytes.",
		}, func() float64 { _, n := s.quota.engineSize(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "server", Name: "quota_backend_bytes",
			Help: "Current backend storage quota size in bytes.",
		}, func() float64 { return float64(s.quota.limit()) }),
		// etcd has no figures of its own for these: bbolt has no
		// background jobs to fail or stall.
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "cairn", Subsystem: "storage", Name: "background_errors_total",
			Help: "The number of failed background jobs of the storage engine (flushes, compactions, write-ahead log writes); each is logged with its cause.",
		}, func() float64 { return float64(s.eng.BackgroundErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "cairn", Subsystem: "storage", Name: "write_stalls_total",
			Help: "The number of times writes stalled waiting for the storage engine's flushes or compactions to catch up.",
		}, func() float64 { return float64(s.eng.WriteStalls()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "cairn", Subsystem: "storage", Name: "disk_slow_total",
			Help: "The number of disk operations of the storage engine that took longer than 5s.",
		}, func() float64 { return float64(s.eng.DiskSlowEvents()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "cairn", Subsystem: "server", Name: "read_only",
			Help: "Whether this member refuses writes that add data because its device is full. 1 if it does, 0 otherwise.",
		}, func() float64 { return boolGauge(s.quota.readOnly()) }),
	}
	collectors = append(collectors, m.etcdMetrics.collectors(s)...)
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return fmt.Errorf("server: register metrics: %w", err)
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

// unregister removes the collectors, so a later server can register on the
// same registry.
func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}
