package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-semver/semver"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/version"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/storage"
)

// ServerVersion is the etcd version this member reports as its own (etcd
// 3.7's, whose API and wire types it is built with): the "etcdserver" of
// /version, Status's version and the etcd_server_version metric.
var ServerVersion = version.Version

// versionMonitorInterval is how often the leader's monitor wakes: it looks
// at the learners (with AutoPromoteLearners) each time, and reconsiders the
// cluster version every versionDecideRounds times (every 4 s, as etcd's
// monitor does) and as soon as it has applied its first entry of a term.
const (
	versionMonitorInterval = time.Second
	versionDecideRounds    = 4
)

// versionKeeper is the component that holds the cluster version and the
// downgrade job, as etcd negotiates them:
//
//   - The cluster version is the version every member can serve
//     ("major.minor.0"). It is replicated state: only the leader decides it
//     and proposes it as a ClusterVersionSet entry; every member applies
//     that entry into its engine (membership.StageClusterVersion).
//   - The downgrade job (Maintenance.Downgrade ENABLE and CANCEL) travels
//     as a DowngradeInfoSet entry. While it is enabled the leader lowers
//     the cluster version to its target; once cancelled, the leader raises
//     it back to its own server version.
//
// The leader learns the members' server versions by asking each for its
// /version on the peer listener (version_peer.go), as etcd's leader does;
// while one does not answer, it leaves the cluster version as it is (or, if
// none was decided yet, sets etcd's minimum, 3.0.0). As in etcd, a
// downgrade job whose target every member's server version has reached is
// cancelled by the leader. The storage version is the cluster version (see
// StorageVersion).
type versionKeeper struct {
	s *Server
	// kick wakes the monitor early (a new term's first entry applied).
	kick chan struct{}
	// busy is set while a round's work (asking the members, proposing)
	// runs. It runs beside the monitor's loop, so the loop always takes
	// its ticks: a proposal waiting on a stopped raft node must not hold
	// up the clock that would time it out.
	busy atomic.Bool

	mu struct {
		sync.Mutex
		cluster   string // "" until decided
		downgrade membership.Downgrade
		// seen are the cluster versions this process has held, which
		// etcd_cluster_version keeps reporting (at 0) as etcd does.
		seen []string
	}

	reg          prometheus.Registerer
	registered   []prometheus.Collector
	autoPromoted prometheus.Counter
}

func newVersionKeeper(s *Server) *versionKeeper {
	return &versionKeeper{
		s:    s,
		kick: make(chan struct{}, 1),
		autoPromoted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "cairn", Subsystem: "server", Name: "learners_auto_promoted_total",
			Help: "The number of learners the leader promoted by itself (--auto-promote-learners).",
		}),
	}
}

// load reads the replicated cluster version and downgrade job from the
// engine, at startup and after a snapshot replaced them.
func (v *versionKeeper) load(eng *storage.Engine) error {
	cv, err := membership.LoadClusterVersion(eng)
	if err != nil {
		return err
	}
	d, err := membership.LoadDowngrade(eng)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.setClusterLocked(cv)
	v.mu.downgrade = d
	v.mu.Unlock()
	return nil
}

func (v *versionKeeper) setClusterLocked(cv string) {
	v.mu.cluster = cv
	if cv != "" && !slices.Contains(v.mu.seen, cv) {
		v.mu.seen = append(v.mu.seen, cv)
	}
}

func (v *versionKeeper) cluster() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.cluster
}

func (v *versionKeeper) downgrade() membership.Downgrade {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.downgrade
}

// applyClusterVersion applies a ClusterVersionSet entry into b.
func (v *versionKeeper) applyClusterVersion(b *storage.Batch, r *membershippb.ClusterVersionSetRequest) (result, error) {
	ver, err := semver.NewVersion(r.GetVer())
	if err != nil {
		return result{}, fmt.Errorf("cluster version %q: %w", r.GetVer(), err)
	}
	cv := majorMinor(ver).String()
	if err := membership.StageClusterVersion(b, cv); err != nil {
		return result{}, err
	}
	v.mu.Lock()
	old := v.mu.cluster
	v.setClusterLocked(cv)
	v.mu.Unlock()
	if old != cv {
		if old == "" {
			v.s.lg.Info("set initial cluster version", "cluster-version", version.Cluster(cv))
		} else {
			v.s.lg.Info("updated cluster version", "from", version.Cluster(old), "to", version.Cluster(cv))
		}
	}
	if own := majorMinor(semver.New(ServerVersion)); own.LessThan(*majorMinor(ver)) {
		// etcd stops such a member; cairn members all speak one etcd
		// version, so this takes a cluster whose data came from a newer
		// release. Say so rather than stop a member that still works.
		v.s.lg.Warn("cluster version is higher than this member's server version",
			"server-version", ServerVersion, "cluster-version", cv)
	}
	return result{}, nil
}

// applyDowngrade applies a DowngradeInfoSet entry into b: enabled with a
// target, or cancelled (recorded as the zero Downgrade, as etcd does).
func (v *versionKeeper) applyDowngrade(b *storage.Batch, r *membershippb.DowngradeInfoSetRequest) (result, error) {
	var d membership.Downgrade
	if r.GetEnabled() {
		d = membership.Downgrade{Enabled: true, TargetVersion: r.GetVer()}
	}
	if err := membership.StageDowngrade(b, d); err != nil {
		return result{}, err
	}
	v.mu.Lock()
	v.mu.downgrade = d
	v.mu.Unlock()
	if d.Enabled {
		v.s.lg.Info("downgrade enabled", "target-version", d.TargetVersion)
	} else {
		v.s.lg.Info("downgrade cancelled")
	}
	return result{resp: &pb.DowngradeResponse{Header: &pb.ResponseHeader{}}}, nil
}

// newTerm wakes the monitor: the leader's empty entry of a term is
// applied, so the leader may decide on what it has applied.
func (v *versionKeeper) newTerm() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// run is the monitor: on the leader, it proposes a new cluster version when
// the one applied is not the one decide picks, and promotes caught-up
// learners if AutoPromoteLearners is set.
func (v *versionKeeper) run() {
	s := v.s
	defer s.life.wg.Done()
	t := s.clock.NewTicker(versionMonitorInterval)
	defer t.Stop()
	for round := 1; ; round++ {
		decide := round%versionDecideRounds == 0
		select {
		case <-t.C():
		case <-v.kick:
			decide = true
		case <-s.life.stopc:
			return
		}
		if !s.node.IsLeader() || !v.busy.CompareAndSwap(false, true) {
			continue
		}
		// run is one of the member's goroutines, so the group cannot
		// have reached zero yet.
		s.life.wg.Add(1)
		go func() {
			defer s.life.wg.Done()
			defer v.busy.Store(false)
			if decide {
				v.maybeUpdateCluster()
			}
			if s.cfg.AutoPromoteLearners {
				s.reconfig.autoPromote(v.autoPromoted)
			}
		}()
	}
}

// decideClusterVersion returns the cluster version the leader should
// propose, "" for no change, with etcd's rules. minimal is the lowest of the
// members' server versions, nil if one of them is not known.
func decideClusterVersion(cur string, d membership.Downgrade, minimal *semver.Version) (string, error) {
	if cur == "" {
		if minimal == nil {
			return version.MinClusterVersion, nil
		}
		return majorMinor(minimal).String(), nil
	}
	if minimal == nil {
		return "", nil
	}
	own := majorMinor(minimal)
	cv, err := semver.NewVersion(cur)
	if err != nil {
		return "", err
	}
	if d.Enabled {
		target, err := semver.NewVersion(d.TargetVersion)
		if err != nil {
			return "", err
		}
		if target.Equal(*cv) {
			return "", nil
		}
		if !validDowngrade(cv, target) || !validDowngrade(own, target) {
			return "", fmt.Errorf("cannot downgrade cluster version %s (lowest server version %s) to %s", cv, own, target)
		}
		return target.String(), nil
	}
	if cv.LessThan(*own) && cv.Major == own.Major {
		return own.String(), nil
	}
	return "", nil
}

// maybeUpdateCluster is one round of the leader's decision: it asks the
// members for their server versions, proposes the cluster version
// decideClusterVersion picks, and cancels a downgrade every member has
// reached.
func (v *versionKeeper) maybeUpdateCluster() {
	s := v.s
	if s.knobs.skipPropose {
		// A test's knob: nothing reaches raft, and a proposal's wait
		// would only hold a request-timeout timer the test counts.
		return
	}
	ctx, cancel := s.life.untilStop(context.Background())
	defer cancel()
	vers, ok := v.membersServerVersions(ctx)
	var minimal *semver.Version
	if ok {
		minimal = minVersion(vers)
	}
	d := v.downgrade()
	next, err := decideClusterVersion(v.cluster(), d, minimal)
	if err != nil {
		s.lg.Error("cannot decide the cluster version", "err", err)
	}
	if next != "" {
		v.propose(ctx, &pb.InternalRaftRequest{ClusterVersionSet: &membershippb.ClusterVersionSetRequest{Ver: next}})
	}
	if d.Enabled && ok && allAt(vers, semver.New(d.TargetVersion)) {
		s.lg.Info("the cluster has been downgraded", "cluster-version", d.TargetVersion)
		v.propose(ctx, &pb.InternalRaftRequest{DowngradeInfoSet: &membershippb.DowngradeInfoSetRequest{Enabled: false}})
	}
}

// propose proposes the monitor's request r and logs a failure: the next
// round tries again.
func (v *versionKeeper) propose(ctx context.Context, r *pb.InternalRaftRequest) {
	s := v.s
	if err := s.life.enter(); err != nil {
		return
	}
	defer s.life.leave()
	if _, err := s.propose(ctx, r); err != nil {
		s.lg.Warn("the version monitor's proposal failed", "request", r.String(), "err", err)
	}
}

// majorMinor is v without its patch and labels, as cluster versions are
// kept.
func majorMinor(v *semver.Version) *semver.Version {
	return &semver.Version{Major: v.Major, Minor: v.Minor}
}

// validDowngrade reports whether to is the one version a cluster at from
// may downgrade to: one minor version lower.
func validDowngrade(from, to *semver.Version) bool {
	return majorMinor(to).Equal(semver.Version{Major: from.Major, Minor: from.Minor - 1})
}

// ClusterVersion returns the cluster version ("major.minor.0") as this
// member has applied it, "" before the leader has decided one. Safe for
// concurrent use.
func (s *Server) ClusterVersion() string { return s.versions.cluster() }

// StorageVersion returns the version of the data format this member's
// storage is said to hold, as etcd's Status and /version report it: the
// cluster version ("" before it is decided). cairn's on-disk format does
// not change with it (see the README's "Downgrades"); it follows the cluster
// version so that tools that wait for a downgraded storage version see it
// as they would with etcd. Safe for concurrent use.
func (s *Server) StorageVersion() string { return s.versions.cluster() }

// DowngradeInfo returns the cluster's downgrade job as this member has
// applied it; the zero value when none is in progress. Safe for concurrent
// use.
func (s *Server) DowngradeInfo() membership.Downgrade { return s.versions.downgrade() }

// versionCollector reports etcd_server_version and etcd_cluster_version:
// gauges at 1, labelled with the versions, as etcd exports them; a cluster
// version the member held before stays listed at 0.
type versionCollector struct{ v *versionKeeper }

var (
	serverVersionDesc = prometheus.NewDesc("etcd_server_version",
		"Which version is running. 1 for 'server_version' label with current version.",
		[]string{"server_version"}, nil)
	clusterVersionDesc = prometheus.NewDesc("etcd_cluster_version",
		"Which version is running. 1 for 'cluster_version' label with current cluster version",
		[]string{"cluster_version"}, nil)
)

func (c versionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- serverVersionDesc
	ch <- clusterVersionDesc
}

func (c versionCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(serverVersionDesc, prometheus.GaugeValue, 1, ServerVersion)
	c.v.mu.Lock()
	defer c.v.mu.Unlock()
	for _, cv := range c.v.mu.seen {
		val := 0.0
		if cv == c.v.mu.cluster {
			val = 1
		}
		ch <- prometheus.MustNewConstMetric(clusterVersionDesc, prometheus.GaugeValue, val, version.Cluster(cv))
	}
}

// register adds the version gauges and the auto-promotion counter to reg
// (nothing if reg is nil).
func (v *versionKeeper) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	v.reg = reg
	for _, c := range []prometheus.Collector{versionCollector{v}, v.autoPromoted} {
		if err := reg.Register(c); err != nil {
			v.unregister()
			return fmt.Errorf("server: register version metrics: %w", err)
		}
		v.registered = append(v.registered, c)
	}
	return nil
}

func (v *versionKeeper) unregister() {
	for _, c := range v.registered {
		v.reg.Unregister(c)
	}
	v.registered = nil
}
