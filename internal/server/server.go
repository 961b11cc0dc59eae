package server

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/cairn-db/cairn/internal/clock"
	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/internal/watch"
)

// Server is one cairn member: its engine, its raft node and its state
// machine, and the components that connect them, which it wires: the
// apply loop, the read indexer, the leases (leaseKeeper), the member list
// (memberList) and its changes (reconfig), the peers (peerSet), the alarms
// and quota, the auto-compactor and the lifecycle (the package doc lists
// them). Its exported methods are the member's API, which internal/api and
// internal/embed call. All methods are safe for concurrent use.
type Server struct {
	cfg   Config
	knobs testingKnobs
	lg    *slog.Logger
	clock clock.Clock

	eng *storage.Engine
	// logEng holds the raft log (see openLog): segment files, or, in a
	// data directory written before them, eng or an engine of its own.
	logEng raftnode.Log
	kv     *mvcc.Store
	node   *raftnode.Node
	// leases is the lessor, its role and the forwarding to the leader.
	leases *leaseKeeper
	// auth is the auth store, its tokens and the bcrypt slots.
	auth *authority

	// hub fans applied events out to watchers; the apply loop notifies it.
	hub *watch.Hub
	// nodeStarted is set once node is, for the transport's goroutines.
	nodeStarted atomic.Bool

	// identity is the member and cluster IDs and the seed; fixed after New.
	identity
	// members is the applied member list and the removed IDs; the apply
	// loop replaces them.
	members memberList
	// reconfig proposes membership changes and publishes this member's
	// attributes.
	reconfig *reconfig
	// peers is the peer transport and the peers it was told about.
	peers *peerSet
	lead  leaderTracker
	// restoring keeps readers of the store out while a snapshot replaces
	// its state (mvcc.Store.Restore).
	restoring sync.RWMutex

	waits   *waitRegistry
	ids     *idGenerator
	reads   *readIndexer
	alarms  *alarmSet
	metrics *metrics
	// applied is the index of the last entry whose effects are committed
	// to the engine and visible to readers.
	applied appliedIndex
	// quota checks writes against QuotaBackendBytes.
	quota *quota

	ap applyState // owned by the apply goroutine

	// versions is the cluster version and the downgrade job, and the
	// leader's monitor that decides them.
	versions *versionKeeper

	// life is the member's run from New to Stop: its goroutines, the stop
	// signal and the guard that keeps requests off a closed engine.
	life lifecycle
}

// New opens (or creates) the member kept in cfg.DataDir and starts it. A new
// data directory bootstraps a one-member cluster named by cfg; an existing
// one restarts from its engine, replaying committed entries not yet applied.
func New(cfg Config) (*Server, error) { return newServer(cfg, testingKnobs{}) }

// newServer is New with testing knobs, which only this package's tests set.
func newServer(cfg Config, knobs testingKnobs) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// The quota exists before the engine: the engine reports its
	// background errors to it from the moment it opens.
	q := newQuota()
	eng, err := storage.Open(cfg.DataDir, storage.Options{
		NoSync:            cfg.UnsafeNoFsync,
		QuotaBytes:        cfg.QuotaBackendBytes,
		FS:                cfg.FS,
		Logger:            cfg.Logger.With("component", "storage"),
		OnBackgroundError: q.onBackgroundError,
	})
	if err != nil {
		// ErrNoSpace and ErrBackground name the directory, the cause and
		// the remedy; the engine's abandoned recovery stays parked, so the
		// caller must exit rather than retry (see storage.Open).
		return nil, err
	}
	logEng, err := openLog(cfg, knobs, eng, q)
	if err != nil {
		eng.Close()
		return nil, err
	}
	closeEngines := func() {
		if logEng != raftnode.Log(eng) {
			logEng.Close()
		}
		eng.Close()
	}
	s := &Server{
		cfg:     cfg,
		knobs:   knobs,
		lg:      cfg.Logger,
		clock:   cfg.Clock,
		eng:     eng,
		logEng:  logEng,
		waits:   newWaitRegistry(),
		alarms:  newAlarmSet(),
		quota:   q,
		metrics: newMetrics(),
	}
	s.life.init()
	s.reconfig = &reconfig{s: s}
	s.versions = newVersionKeeper(s)
	if err := s.open(); err != nil {
		if s.hub != nil {
			s.hub.Close()
		}
		if s.kv != nil {
			s.kv.Close()
		}
		if s.auth != nil {
			s.auth.audit.Close()
		}
		closeEngines()
		return nil, err
	}
	return s, nil
}

func (s *Server) open() error {
	// Before anything reads the engine: a crash during a snapshot install
	// leaves the replicated state half replaced until this finishes it.
	// And before that, the log and the state must be one member's.
	if err := raftnode.BindLog(s.eng, s.logEng); err != nil {
		return err
	}
	if resumed, err := raftnode.RecoverSeparateSnapshotInstall(s.eng, s.logEng, membership.LocalKeys()); err != nil {
		return err
	} else if resumed {
		s.lg.Warn("finished a snapshot install a crash had interrupted")
	}
	id, peers, err := bootstrap(s.cfg, s.eng, s.lg)
	if err != nil {
		return err
	}
	s.identity = id
	s.ids = newIDGenerator(s.memberID, s.clock.Now().UnixMilli())
	if err := s.loadReplicated(); err != nil {
		return err
	}
	if s.ap.removed[s.memberID] {
		return fmt.Errorf("server: member %x: %w", s.memberID, ErrRemoved)
	}
	if s.leases, err = openLeases(s); err != nil {
		return err
	}
	// A put naming a lease that does not exist fails, as in etcd.
	s.kv, err = mvcc.Open(s.eng, mvcc.Options{Logger: s.lg, LeaseExists: s.leases.lessor.Exists})
	if err != nil {
		return err
	}
	if s.auth, err = newAuthority(s); err != nil {
		return err
	}
	applied, err := s.eng.AppliedIndex()
	if err != nil {
		return err
	}
	if err := s.forceNewCluster(applied); err != nil {
		return err
	}
	if err := s.initialCorruptCheck(); err != nil {
		return err
	}
	s.hub = s.newHub()
	s.applied.advance(applied)
	s.ap.applied = applied
	s.ap.lastLogCompact = applied
	s.quota.start(s)
	s.reads = newReadIndexer(s)
	s.lead.init(s.clock.Now())

	s.peers = newPeerSet(s.memberID, s.newTransport())
	heartbeats := s.metrics.watchHeartbeats(s.peers.tr, time.Duration(s.cfg.TickMs)*time.Millisecond, s.clock.Now, s.lg)
	s.node, err = raftnode.Start(raftnode.Config{
		ID:             s.memberID,
		Engine:         s.eng,
		Log:            s.logEng,
		Peers:          peers,
		Join:           s.seed.Join,
		LocalKeys:      membership.LocalKeys(),
		Applied:        applied,
		TickInterval:   time.Duration(s.cfg.TickMs) * time.Millisecond,
		ElectionTicks:  s.cfg.ElectionTicks,
		DisablePreVote: s.cfg.DisablePreVote,
		NewTicker:      s.clock.NewTicker,
		Transport:      heartbeats,
		OnReadStates:   s.reads.onReadStates,
		Abandoned:      func(id uint64) bool { return !s.waits.has(id) },
		Dropped:        s.onDropped,
		ObserveSync:    func(d time.Duration) { s.metrics.walFsync.Observe(d.Seconds()) },
		OnSoftState: func(lead uint64, state raft.StateType) {
			s.lead.observe(lead, s.clock.Now())
			if state == raft.StateLeader {
				heartbeats.reset()
			}
			s.leases.observeRole(state)
		},
		Logger: s.lg.With("component", "raft"),
	})
	if err != nil {
		s.peers.tr.Stop()
		return err
	}
	s.nodeStarted.Store(true)
	if err := s.metrics.register(s, s.cfg.Metrics); err != nil {
		s.peers.tr.Stop()
		s.node.Stop()
		return err
	}
	if err := s.versions.register(s.cfg.Metrics); err != nil {
		s.metrics.unregister()
		s.peers.tr.Stop()
		s.node.Stop()
		return err
	}
	s.syncPeers()

	s.life.wg.Add(6)
	go s.quota.run()
	go s.applyLoop()
	go s.reads.run()
	go s.watchNode()
	go s.reconfig.publish()
	go s.leases.run()
	// An alarm raised before a restart clears itself if the member is now
	// under the mark (see quota).
	s.quota.kick()
	s.life.wg.Add(1)
	go s.versions.run()
	startAutoCompactor(s)
	startCorruptChecks(s)
	s.lg.Info("member started", "name", s.cfg.Name, "member-id", fmt.Sprintf("%x", s.memberID),
		"cluster-id", fmt.Sprintf("%x", s.clusterID), "applied-index", applied)
	return nil
}

// loadReplicated loads the replicated state the server keeps in memory
// (member list, removed IDs, alarms) from the engine, at startup and after
// a snapshot replaced it.
func (s *Server) loadReplicated() error {
	alarms, err := membership.LoadAlarms(s.eng)
	if err != nil {
		return err
	}
	s.alarms.replace(alarms)
	if err := s.versions.load(s.eng); err != nil {
		return err
	}
	return s.reloadMembers()
}

// watchNode stops the member when the raft loop fails or a peer reports
// that this member was removed from the cluster.
func (s *Server) watchNode() {
	defer s.life.wg.Done()
	select {
	case <-s.node.Done():
		if err := s.node.Err(); err != nil {
			s.fail(err)
		}
	case <-s.peers.tr.Removed():
		s.fail(ErrRemoved)
	case <-s.life.stopc:
	}
}

// fail records a fatal error and stops the member in the background: the
// caller is one of the goroutines Stop waits for, so it must return.
// failOnMedia stops the member when err, from a read of the engine, is a
// failure of its device or a damaged table (storage.IsMediaFailure), as a
// background job failing for it does (quota.onBackgroundError): a member
// that cannot read its state must not go on answering from what it can.
func (s *Server) failOnMedia(err error) {
	if storage.IsMediaFailure(err) && !s.life.stopping() {
		s.fail(fmt.Errorf("server: reading the store in %s failed: %w; check the device holding it (the kernel log names I/O errors) and restart the member, or replace it", s.cfg.DataDir, err))
	}
}

func (s *Server) fail(err error) {
	s.life.setErr(err)
	s.lg.Error("member stopping after a fatal error", "err", err)
	go s.Stop()
}

// Stop stops the member: pending requests fail with ErrStopped, every
// goroutine is waited for, and the engine is closed. It is idempotent.
func (s *Server) Stop() {
	s.life.stopOnce.Do(s.shutdown)
	<-s.life.done
}

func (s *Server) shutdown() {
	// Closing stopc first releases every request waiting inside enter/leave,
	// so taking life's write lock does not wait long; once closed is set no
	// request touches the engine or starts a goroutine (a backup stream
	// adds to wg inside enter), so wg.Wait cannot race with wg.Add.
	close(s.life.stopc)
	// Keep-alives waiting on the lessor hold enter; demoting releases them.
	s.leases.stop()
	s.life.close()
	// The transport first: its snapshot streams read the engine, and its
	// inbound requests hand messages to the node.
	s.peers.tr.Stop()
	s.node.Stop()
	s.life.wg.Wait()
	s.leases.closeClient()
	s.hub.Close()
	s.waits.failAll(ErrStopped)
	s.metrics.unregister()
	s.versions.unregister()
	// After the apply loop and every request: nothing records any more.
	if err := s.auth.audit.Close(); err != nil {
		s.lg.Error("closing the audit log", "err", err)
	}
	if err := s.kv.Close(); err != nil {
		s.lg.Error("closing the store", "err", err)
	}
	// A clean stop flushes the memtable, so the next start has none of
	// the engine's write-ahead log to replay. Not after a fatal error or
	// with the data device full, where the flush could fail or wait for
	// space: Close alone loses nothing.
	if s.life.fatal() == nil && !s.quota.diskFull.Load() && s.eng.Failed() == nil {
		if err := s.eng.Flush(); err != nil {
			s.lg.Warn("flushing the engine before closing it failed; the next start replays its log", "err", err)
		}
	}
	if err := s.eng.Close(); err != nil {
		s.lg.Error("closing the engine", "err", err)
	}
	if s.logEng != raftnode.Log(s.eng) {
		if err := s.logEng.Close(); err != nil {
			s.lg.Error("closing the raft log's engine", "err", err)
		}
	}
	s.lg.Info("member stopped", "member-id", fmt.Sprintf("%x", s.memberID))
	close(s.life.done)
}

// Done is closed once the member has stopped, after Stop or a fatal error.
func (s *Server) Done() <-chan struct{} { return s.life.done }

// Err returns the fatal error that stopped the member, nil if it is running
// or was stopped by Stop.
func (s *Server) Err() error {
	return s.life.fatal()
}

// ClusterID returns the cluster's ID.
func (s *Server) ClusterID() uint64 { return s.clusterID }

// MemberID returns this member's ID.
func (s *Server) MemberID() uint64 { return s.memberID }

// Leader returns the leader's member ID, 0 if none is known.
func (s *Server) Leader() uint64 { return s.node.Lead() }

// Term returns the current raft term.
func (s *Server) Term() uint64 { return s.node.Term() }

// Rev returns the store's current revision.
func (s *Server) Rev() int64 { return s.kv.Rev() }

// Members returns the cluster's members as this member has applied them,
// sorted by ID.
func (s *Server) Members() []membership.Member { return s.members.all() }

// IsLearner reports whether this member is a learner (a non-voting
// member), as of the applied member list.
func (s *Server) IsLearner() bool {
	m, _ := s.members.get(s.memberID)
	return m.IsLearner
}

// Status is a member's state as Maintenance.Status reports it.
type Status struct {
	ClusterID uint64
	MemberID  uint64
	// Leader is the leader's member ID, 0 when none is known.
	Leader uint64
	// RaftTerm is the current term; RaftIndex the committed index;
	// AppliedIndex the last applied one.
	RaftTerm     uint64
	RaftIndex    uint64
	AppliedIndex uint64
	// Revision is the store's current revision; CompactRevision the last
	// compaction's (-1 if never compacted).
	Revision        int64
	CompactRevision int64
	// DBSize is the engine's size on disk, DBSizeInUse the part of it live
	// data needs, DBSizeQuota the quota (QuotaBackendBytes; 0 for none).
	DBSize      int64
	DBSizeInUse int64
	DBSizeQuota int64
	IsLearner   bool
}

// Status returns the member's current state. After Stop the sizes are the
// last ones measured.
func (s *Server) Status() Status {
	st := Status{
		ClusterID:       s.clusterID,
		MemberID:        s.memberID,
		Leader:          s.node.Lead(),
		RaftTerm:        s.node.Term(),
		RaftIndex:       s.node.CommitIndex(),
		AppliedIndex:    s.applied.Load(),
		Revision:        s.kv.Rev(),
		CompactRevision: s.kv.CompactRev(),
		DBSizeQuota:     s.quota.limit(),
		IsLearner:       s.IsLearner(),
	}
	st.DBSize, st.DBSizeInUse = s.quota.engineSize()
	return st
}
