package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"

	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/lease"
)

// leaseOverhead is what a LeaseGrant costs against the quota (etcd's).
const leaseOverhead = 64

// maxPendingRevokes bounds the revokes of expired leases in flight at once
// (etcd's).
const maxPendingRevokes = 16

// forwardRetry is how long a lease request forwarded to the leader waits
// before trying again after a failure (a connection problem, a leader that
// has not yet taken up its leases).
const forwardRetry = 50 * time.Millisecond

// appliedIndexTimeout bounds how long a leader waits to apply what is
// committed before it answers a keep-alive or TimeToLive (etcd's).
const appliedIndexTimeout = time.Second

// leaseKeeper is the member's leases: the lessor (replicated state that
// the apply loop changes, see apply_lease.go), its role, the loop that
// proposes the primary's revokes and checkpoints, and the forwarding of
// keep-alives and TimeToLive to the leader (lease_peer.go). The Server's
// Lease methods admit a request (enter) and hand it here.
//
// The lessor is primary (it runs the lease clocks) only while this member
// leads: the apply loop promotes it at the leader's first entry of its
// term, the raft loop demotes it when the leadership ends. Both happen
// under mu, against leading, so a promotion can never land after the
// demotion that should have followed it.
type leaseKeeper struct {
	s      *Server
	lessor *lease.Lessor

	mu      sync.Mutex
	leading bool // raft's role, as the raft loop last reported it
	stopped bool // the member is stopping: no more promotions

	// client forwards keep-alives and TimeToLive to the leader. Unlike the
	// member's other requests to peers it keeps its connections: a
	// follower may forward thousands of keep-alives a second.
	clientOnce sync.Once
	client     *http.Client
}

// openLeases opens the lessor on the member's engine.
func openLeases(s *Server) (*leaseKeeper, error) {
	l, err := lease.Open(s.eng, lease.Options{
		MinTTL:             lease.MinTTL(time.Duration(s.cfg.TickMs)*time.Millisecond, s.cfg.ElectionTicks),
		CheckpointInterval: s.cfg.LeaseCheckpointInterval,
		Clock:              s.clock,
	})
	if err != nil {
		return nil, err
	}
	return &leaseKeeper{s: s, lessor: l}, nil
}

// httpClient returns the client that forwards lease requests to the
// leader: PeerRoundTripper if set, else HTTP with PeerTLS and idle
// connections kept.
func (lk *leaseKeeper) httpClient() *http.Client {
	lk.clientOnce.Do(func() {
		rt := lk.s.cfg.PeerRoundTripper
		if rt == nil {
			tlsCfg := lk.s.cfg.PeerTLS
			if tlsCfg == nil {
				tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			rt = &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}
		}
		lk.client = &http.Client{Transport: rt}
	})
	return lk.client
}

// observeRole follows raft's role for the lessor; it runs on the raft loop.
func (lk *leaseKeeper) observeRole(state raft.StateType) {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	leading := state == raft.StateLeader
	if lk.leading && !leading {
		lk.lessor.Demote()
	}
	lk.leading = leading
}

// maybePromote makes the lessor primary when the entry being applied is
// this leader's first (empty) entry of its term: everything of the earlier
// terms is applied by then, as etcd requires. Only the apply loop calls it.
func (lk *leaseKeeper) maybePromote(term uint64) {
	s := lk.s
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.leading && !lk.stopped && term == s.node.Term() && s.node.IsLeader() {
		lk.lessor.Promote(s.electionTimeout())
		s.lg.Debug("lessor promoted", "term", term)
	}
}

// stop demotes the lessor for good at shutdown, so that keep-alives
// waiting on it return.
func (lk *leaseKeeper) stop() {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	lk.stopped = true
	lk.leading = false
	lk.lessor.Demote()
}

// closeClient drops the forwarding client's idle connections; shutdown
// calls it once no request can use the client any more.
func (lk *leaseKeeper) closeClient() {
	lk.clientOnce.Do(func() {}) // orders the read after any making of it
	if lk.client != nil {
		lk.client.CloseIdleConnections()
	}
}

// run runs the primary's duties until the member stops: expired leases
// are revoked, due checkpoints proposed, both through raft. It is one of
// the goroutines of the server's wait group.
func (lk *leaseKeeper) run() {
	defer lk.s.life.wg.Done()
	lk.lessor.Run(lk.s.life.stopc, lk.revokeExpired, lk.proposeCheckpoints)
}

// revokeExpired proposes a revoke for each expired lease, up to
// maxPendingRevokes at once, and waits for them. A revoke that fails is
// reported again by the lessor after its retry interval.
func (lk *leaseKeeper) revokeExpired(ids []int64) {
	s := lk.s
	if s.life.enter() != nil {
		return
	}
	defer s.life.leave()
	sem := make(chan struct{}, maxPendingRevokes)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-s.life.stopc:
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			_, err := lk.revoke(asRoot(context.Background()), id)
			if err == nil {
				s.metrics.leaseExpired.Inc()
			}
			if err != nil && !errors.Is(err, lease.ErrLeaseNotFound) && !errors.Is(err, ErrStopped) {
				s.lg.Warn("revoking an expired lease failed", "lease", id, "err", err)
			}
		})
	}
}

// proposeCheckpoints proposes the lessor's due checkpoints as one request.
func (lk *leaseKeeper) proposeCheckpoints(cps []*pb.LeaseCheckpoint) {
	s := lk.s
	if s.life.enter() != nil {
		return
	}
	defer s.life.leave()
	if err := lk.checkpoint(context.Background(), cps); err != nil && !errors.Is(err, ErrStopped) {
		s.lg.Warn("proposing lease checkpoints failed", "count", len(cps), "err", err)
	}
}

// checkpoint proposes checkpoints and waits for them to apply. The caller
// holds enter.
func (lk *leaseKeeper) checkpoint(ctx context.Context, cps []*pb.LeaseCheckpoint) error {
	_, err := proposed[*pb.LeaseCheckpointResponse](lk.s, ctx,
		&pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: cps}}, 0, nil)
	return err
}

// grant grants a lease through raft, picking its ID when r.ID is 0 (see
// Server.LeaseGrant). The caller holds enter.
func (lk *leaseKeeper) grant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	g := &pb.LeaseGrantRequest{ID: r.ID, TTL: r.TTL}
	for g.ID == 0 {
		g.ID = int64(lk.s.ids.next() & (1<<63 - 1))
	}
	return proposed[*pb.LeaseGrantResponse](lk.s, ctx, &pb.InternalRaftRequest{LeaseGrant: g}, leaseOverhead, nil)
}

// revoke revokes lease id through raft. The caller holds enter.
func (lk *leaseKeeper) revoke(ctx context.Context, id int64) (*pb.LeaseRevokeResponse, error) {
	return proposed[*pb.LeaseRevokeResponse](lk.s, ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}, 0, nil)
}

// renew renews lease id on the leader (see Server.LeaseRenew). The caller
// holds enter.
func (lk *leaseKeeper) renew(ctx context.Context, id int64) (int64, error) {
	// The leader answers at once, without a timer of its own: only a
	// lease that has expired makes Renew wait, for its revoke or the end of
	// this leadership, as etcd's does.
	if lk.s.node.IsLeader() {
		ttl, err := lk.renewHere(ctx, id)
		if !errors.Is(err, lease.ErrNotPrimary) {
			return ttl, requestCtxErr(ctx, err)
		}
	}
	ctx, cancel := lk.s.withRequestTimeout(ctx)
	defer cancel(nil)
	var ttl int64
	err := lk.onLeader(ctx,
		func(ctx context.Context) (err error) { ttl, err = lk.renewHere(ctx, id); return err },
		func(ctx context.Context, urls []string) (err error) {
			ttl, err = lk.renewRemote(ctx, urls, id)
			return err
		})
	if err != nil {
		return -1, err
	}
	return ttl, nil
}

// renewHere renews lease id on this member's lessor: ErrNotPrimary unless
// it is the leader's and a read-index round confirms the leadership. A
// lease the lessor does not know may be granted by a committed entry not
// yet applied, so the leader first catches up. A renewal that makes a
// checkpoint stale clears it through raft before answering, or a new
// leader would cut the lease short.
func (lk *leaseKeeper) renewHere(ctx context.Context, id int64) (int64, error) {
	s := lk.s
	if !lk.lessor.IsPrimary() {
		return -1, lease.ErrNotPrimary
	}
	// As etcd does, the leader first confirms with a quorum that it still
	// leads: a leader cut off from the others that has not yet stepped
	// down must not extend a lease that the new leader will expire. The
	// only voter of its cluster has nobody to lose the leadership to.
	if s.members.soleVoter() {
		return lk.renewPrimary(ctx, id)
	}
	if err := s.reads.wait(ctx); err != nil {
		switch {
		case errors.Is(err, ErrStopped), ctx.Err() != nil:
			return -1, err
		}
		return -1, lease.ErrNotPrimary
	}
	if !s.node.IsLeader() {
		return -1, lease.ErrNotPrimary
	}
	return lk.renewPrimary(ctx, id)
}

// renewPrimary renews lease id on the primary lessor, its leadership
// confirmed.
func (lk *leaseKeeper) renewPrimary(ctx context.Context, id int64) (int64, error) {
	if !lk.lessor.Exists(id) {
		if err := lk.s.waitAppliedCommit(); err != nil {
			return -1, err
		}
	}
	ttl, reset, err := lk.lessor.Renew(ctx, id)
	if err != nil {
		return -1, err
	}
	lk.s.metrics.leaseRenewed.Inc()
	if reset {
		if err := lk.checkpoint(ctx, []*pb.LeaseCheckpoint{{ID: id, Remaining_TTL: 0}}); err != nil {
			return -1, err
		}
	}
	return ttl, nil
}

// timeToLive answers a TimeToLive as the leader sees it (see
// Server.LeaseTimeToLive). The caller holds enter.
func (lk *leaseKeeper) timeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	var (
		resp *pb.LeaseTimeToLiveResponse
		err  error
	)
	if lk.s.node.IsLeader() {
		resp, err = lk.timeToLiveHere(r)
		if errors.Is(err, lease.ErrNotPrimary) {
			// As etcd: a leader's answer without running clocks would be
			// wrong, and "not primary" is no error a client retries.
			err = ErrLeaderChanged
		}
	} else {
		ctx, cancel := lk.s.withRequestTimeout(ctx)
		defer cancel(nil)
		err = lk.onLeader(ctx,
			func(context.Context) (err error) { resp, err = lk.timeToLiveHere(r); return err },
			func(ctx context.Context, urls []string) (err error) {
				resp, err = lk.timeToLiveRemote(ctx, urls, r)
				return err
			})
	}
	if err != nil {
		return nil, err
	}
	resp.Header = lk.s.ResponseHeader()
	return resp, nil
}

// timeToLiveHere answers TimeToLive from this member's lessor, after
// applying what is committed: ErrNotPrimary unless it is the leader's.
func (lk *leaseKeeper) timeToLiveHere(r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	s := lk.s
	if err := s.waitAppliedCommit(); err != nil {
		return nil, err
	}
	s.restoring.RLock()
	defer s.restoring.RUnlock()
	return lk.lessor.TimeToLive(r)
}

// list lists every lease this member has applied.
func (lk *leaseKeeper) list() []*pb.LeaseStatus {
	ids := lk.lessor.Leases()
	ls := make([]*pb.LeaseStatus, len(ids))
	for i, id := range ids {
		ls[i] = &pb.LeaseStatus{ID: id}
	}
	return ls
}

// onLeader runs a request on the leader until it gives a final answer, as
// etcd forwards keep-alives and TimeToLive: local when this member leads,
// remote (the leader's peer URLs) otherwise. Only success and
// lease.ErrLeaseNotFound are final; anything else (the leader has not
// taken up its leases yet, a connection failure, a leadership change) is
// tried again after forwardRetry, against whoever leads then, until ctx
// ends: ErrNoLeader if no leader is known by then, else ErrTimeout or
// ErrCanceled.
func (lk *leaseKeeper) onLeader(ctx context.Context, local func(context.Context) error, remote func(context.Context, []string) error) error {
	s := lk.s
	for {
		lead := s.node.Lead()
		var err error
		switch m, ok := s.members.get(lead); {
		case lead == 0 || (lead != s.memberID && !ok):
			// Wait for an election, as etcd does.
			select {
			case <-s.lead.changedC():
			case <-s.clock.After(s.electionTimeout()):
			case <-ctx.Done():
				return ErrNoLeader
			case <-s.life.stopc:
				return ErrStopped
			}
			continue
		case lead == s.memberID:
			err = local(ctx)
		case len(m.PeerURLs) == 0:
			return ErrNoLeader
		default:
			err = remote(ctx, m.PeerURLs)
		}
		if err == nil || errors.Is(err, lease.ErrLeaseNotFound) {
			return err
		}
		if errors.Is(err, ErrStopped) && s.life.stopping() {
			return ErrStopped
		}
		s.lg.Debug("a lease request on the leader failed; retrying", "leader", lead, "err", err)
		select {
		case <-ctx.Done():
			return requestCtxErr(ctx, ctx.Err())
		case <-s.clock.After(forwardRetry):
		case <-s.life.stopc:
			return ErrStopped
		}
	}
}

// LeaseGrant grants a lease through raft. When r.ID is 0 the member picks
// one, as etcd does: a positive int64 from its request ID generator, unique
// across members and restarts. Errors: lease.ErrLeaseExists,
// lease.ErrLeaseTTLTooLarge, ErrNoSpace, and the proposal errors (see
// propose). Safe for concurrent use.
func (s *Server) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	if err := s.requireUserFor(ctx, "LeaseGrant", r.ID); err != nil {
		return nil, err
	}
	return s.leases.grant(ctx, r)
}

// LeaseRevoke revokes a lease through raft, deleting its keys in one
// revision. Errors: lease.ErrLeaseNotFound, and the proposal errors. Safe
// for concurrent use.
func (s *Server) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	if err := s.requireUserFor(ctx, "LeaseRevoke", r.ID); err != nil {
		return nil, err
	}
	return s.leases.revoke(ctx, r.ID)
}

// LeaseRenew renews a lease and returns its TTL in seconds. Only the
// leader keeps lease clocks, so a follower forwards the renewal to it over
// the peer network (POST /leases/renew), retrying until the request
// timeout while leadership moves. Errors: lease.ErrLeaseNotFound,
// ErrNoLeader (no leader became known in time), ErrTimeout, ErrCanceled,
// ErrStopped, ErrTimeoutWaitAppliedIndex. Safe for concurrent use.
func (s *Server) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	if err := s.life.enter(); err != nil {
		return -1, err
	}
	defer s.life.leave()
	if err := s.checkLeaseAccess(ctx, id, true, "LeaseKeepAlive"); err != nil {
		return -1, err
	}
	return s.leases.renew(ctx, id)
}

// LeaseTimeToLive reports a lease's remaining and granted TTL (and its
// keys, if asked) as the leader sees them; a follower asks the leader
// (POST /leases/ttl). Errors: lease.ErrLeaseNotFound, ErrLeaderChanged (the
// leader has not taken up its leases, or lost them, during the request),
// ErrNoLeader, ErrTimeout, ErrCanceled, ErrStopped. Safe for concurrent
// use.
func (s *Server) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	if err := s.requireUserFor(ctx, "LeaseTimeToLive", r.ID); err != nil {
		return nil, err
	}
	if !r.Keys {
		return s.leases.timeToLive(ctx, r)
	}
	rev := s.auth.st().Revision()
	if err := s.checkLeaseAccess(ctx, r.ID, false, "LeaseTimeToLive"); err != nil {
		return nil, err
	}
	resp, err := s.leases.timeToLive(ctx, r)
	if err != nil {
		return nil, err
	}
	if s.auth.enabled() && rev != s.auth.st().Revision() {
		return nil, auth.ErrAuthOldRevision
	}
	return resp, nil
}

// LeaseLeases lists every lease this member has applied, as etcd does
// (from the member's own state, without a read-index round). Safe for
// concurrent use.
func (s *Server) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	leases := s.leases.list()
	if s.auth.enabled() {
		for _, l := range leases {
			if err := s.checkLeaseAccess(ctx, l.ID, false, "LeaseLeases"); err != nil {
				return nil, err
			}
		}
	}
	return &pb.LeaseLeasesResponse{Header: s.ResponseHeader(), Leases: leases}, nil
}
