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

// leaseState is the member's lessor and its role. The lessor is primary
// (it runs the lease clocks) only while this member leads: the apply loop
// promotes it at the leader's first entry of its term, the raft loop
// demotes it when the leadership ends. Both happen under mu, against
// leading, so a promotion can never land after the demotion that should
// have followed it.
type leaseState struct {
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

// leaseClient returns the client that forwards lease requests to the
// leader: PeerRoundTripper if set, else HTTP with PeerTLS and idle
// connections kept.
func (s *Server) leaseClient() *http.Client {
	ls := &s.leases
	ls.clientOnce.Do(func() {
		rt := s.cfg.PeerRoundTripper
		if rt == nil {
			tlsCfg := s.cfg.PeerTLS
			if tlsCfg == nil {
				tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			rt = &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}
		}
		ls.client = &http.Client{Transport: rt}
	})
	return ls.client
}

// openLessor opens the lessor on the member's engine.
func (s *Server) openLessor() error {
	l, err := lease.Open(s.eng, lease.Options{
		MinTTL:             lease.MinTTL(time.Duration(s.cfg.TickMs)*time.Millisecond, s.cfg.ElectionTicks),
		CheckpointInterval: s.cfg.LeaseCheckpointInterval,
		Clock:              s.clock,
	})
	if err != nil {
		return err
	}
	s.leases.lessor = l
	return nil
}

// observeRole follows raft's role for the lessor; it runs on the raft loop.
func (s *Server) observeRole(state raft.StateType) {
	ls := &s.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	leading := state == raft.StateLeader
	if ls.leading && !leading {
		ls.lessor.Demote()
	}
	ls.leading = leading
}

// maybePromote makes the lessor primary when the entry being applied is
// this leader's first (empty) entry of its term: everything of the earlier
// terms is applied by then, as etcd requires. Only the apply loop calls it.
func (s *Server) maybePromote(term uint64) {
	ls := &s.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.leading && !ls.stopped && term == s.node.Term() && s.node.IsLeader() {
		ls.lessor.Promote(s.electionTimeout())
		s.lg.Debug("lessor promoted", "term", term)
	}
}

// stopLeases demotes the lessor for good at shutdown, so that keep-alives
// waiting on it return.
func (s *Server) stopLeases() {
	ls := &s.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.stopped = true
	ls.leading = false
	ls.lessor.Demote()
}

// closeLeaseClient drops the forwarding client's idle connections; shutdown
// calls it once no request can use the client any more.
func (s *Server) closeLeaseClient() {
	ls := &s.leases
	ls.clientOnce.Do(func() {}) // orders the read after any making of it
	if ls.client != nil {
		ls.client.CloseIdleConnections()
	}
}

// runLessor runs the primary's duties until the member stops: expired
// leases are revoked, due checkpoints proposed, both through raft.
func (s *Server) runLessor() {
	defer s.wg.Done()
	s.leases.lessor.Run(s.stopc, s.revokeExpired, s.proposeCheckpoints)
}

// revokeExpired proposes a revoke for each expired lease, up to
// maxPendingRevokes at once, and waits for them. A revoke that fails is
// reported again by the lessor after its retry interval.
func (s *Server) revokeExpired(ids []int64) {
	if s.enter() != nil {
		return
	}
	defer s.leave()
	sem := make(chan struct{}, maxPendingRevokes)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-s.stopc:
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			_, err := s.leaseRevoke(context.Background(), id)
			if err != nil && !errors.Is(err, lease.ErrLeaseNotFound) && !errors.Is(err, ErrStopped) {
				s.lg.Warn("revoking an expired lease failed", "lease", id, "err", err)
			}
		})
	}
}

// proposeCheckpoints proposes the lessor's due checkpoints as one request.
func (s *Server) proposeCheckpoints(cps []*pb.LeaseCheckpoint) {
	if s.enter() != nil {
		return
	}
	defer s.leave()
	if err := s.leaseCheckpoint(context.Background(), cps); err != nil && !errors.Is(err, ErrStopped) {
		s.lg.Warn("proposing lease checkpoints failed", "count", len(cps), "err", err)
	}
}

// leaseCheckpoint proposes checkpoints and waits for them to apply. The
// caller holds enter.
func (s *Server) leaseCheckpoint(ctx context.Context, cps []*pb.LeaseCheckpoint) error {
	res, err := s.propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: cps}})
	if err != nil {
		return err
	}
	return res.err
}

// LeaseGrant grants a lease through raft. When r.ID is 0 the member picks
// one, as etcd does: a positive int64 from its request ID generator, unique
// across members and restarts. Errors: lease.ErrLeaseExists,
// lease.ErrLeaseTTLTooLarge, ErrNoSpace, and the proposal errors (see
// propose). Safe for concurrent use.
func (s *Server) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := s.checkQuota(leaseOverhead); err != nil {
		return nil, err
	}
	g := &pb.LeaseGrantRequest{ID: r.ID, TTL: r.TTL}
	for g.ID == 0 {
		g.ID = int64(s.ids.next() & (1<<63 - 1))
	}
	res, err := s.propose(ctx, &pb.InternalRaftRequest{LeaseGrant: g})
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, res.err
	}
	resp := res.resp.(*pb.LeaseGrantResponse)
	resp.Header = s.fillHeader(resp.Header)
	return resp, nil
}

// LeaseRevoke revokes a lease through raft, deleting its keys in one
// revision. Errors: lease.ErrLeaseNotFound, and the proposal errors. Safe
// for concurrent use.
func (s *Server) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	return s.leaseRevoke(ctx, r.ID)
}

// leaseRevoke is LeaseRevoke for a caller that holds enter.
func (s *Server) leaseRevoke(ctx context.Context, id int64) (*pb.LeaseRevokeResponse, error) {
	res, err := s.propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, res.err
	}
	resp := res.resp.(*pb.LeaseRevokeResponse)
	resp.Header = s.fillHeader(resp.Header)
	return resp, nil
}

// LeaseRenew renews a lease and returns its TTL in seconds. Only the
// leader keeps lease clocks, so a follower forwards the renewal to it over
// the peer network (POST /leases/renew), retrying until the request
// timeout while leadership moves. Errors: lease.ErrLeaseNotFound,
// ErrNoLeader (no leader became known in time), ErrTimeout, ErrCanceled,
// ErrStopped, ErrTimeoutWaitAppliedIndex. Safe for concurrent use.
func (s *Server) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	if err := s.enter(); err != nil {
		return -1, err
	}
	defer s.leave()
	// The leader answers at once, without a timer of its own: only a
	// lease that has expired makes Renew wait, for its revoke or the end of
	// this leadership, as etcd's does.
	if s.node.IsLeader() {
		ttl, err := s.renewHere(ctx, id)
		if !errors.Is(err, lease.ErrNotPrimary) {
			return ttl, s.leaseCtxErr(ctx, err)
		}
	}
	ctx, cancel := s.withRequestTimeout(ctx)
	defer cancel(nil)
	var ttl int64
	err := s.onLeader(ctx,
		func(ctx context.Context) (err error) { ttl, err = s.renewHere(ctx, id); return err },
		func(ctx context.Context, urls []string) (err error) {
			ttl, err = s.renewRemote(ctx, urls, id)
			return err
		})
	if err != nil {
		return -1, err
	}
	return ttl, nil
}

// renewHere renews lease id on this member's lessor: ErrNotPrimary unless
// it is the leader's and a read-index round confirms the leadership. A lease the lessor does not know may be granted by a
// committed entry not yet applied, so the leader first catches up. A
// renewal that makes a checkpoint stale clears it through raft before
// answering, or a new leader would cut the lease short.
func (s *Server) renewHere(ctx context.Context, id int64) (int64, error) {
	l := s.leases.lessor
	if !l.IsPrimary() {
		return -1, lease.ErrNotPrimary
	}
	// As etcd does, the leader first confirms with a quorum that it still
	// leads: a leader cut off from the others that has not yet stepped
	// down must not extend a lease that the new leader will expire. The
	// only voter of its cluster has nobody to lose the leadership to.
	if s.soleVoter() {
		return s.renewPrimary(ctx, id)
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
	return s.renewPrimary(ctx, id)
}

// soleVoter reports whether this member is the only voting member of the
// applied member list.
func (s *Server) soleVoter() bool {
	s.members.RLock()
	defer s.members.RUnlock()
	voters := 0
	for _, m := range s.members.list {
		if !m.IsLearner {
			voters++
		}
	}
	return voters == 1
}

// renewPrimary renews lease id on the primary lessor, its leadership
// confirmed.
func (s *Server) renewPrimary(ctx context.Context, id int64) (int64, error) {
	l := s.leases.lessor
	if !l.Exists(id) {
		if err := s.waitAppliedCommit(); err != nil {
			return -1, err
		}
	}
	ttl, reset, err := l.Renew(ctx, id)
	if err != nil {
		return -1, err
	}
	if reset {
		if err := s.leaseCheckpoint(ctx, []*pb.LeaseCheckpoint{{ID: id, Remaining_TTL: 0}}); err != nil {
			return -1, err
		}
	}
	return ttl, nil
}

// LeaseTimeToLive reports a lease's remaining and granted TTL (and its
// keys, if asked) as the leader sees them; a follower asks the leader
// (POST /leases/ttl). Errors: lease.ErrLeaseNotFound, ErrLeaderChanged (the
// leader has not taken up its leases, or lost them, during the request),
// ErrNoLeader, ErrTimeout, ErrCanceled, ErrStopped. Safe for concurrent
// use.
func (s *Server) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var (
		resp *pb.LeaseTimeToLiveResponse
		err  error
	)
	if s.node.IsLeader() {
		resp, err = s.timeToLiveHere(r)
		if errors.Is(err, lease.ErrNotPrimary) {
			// As etcd: a leader's answer without running clocks would be
			// wrong, and "not primary" is no error a client retries.
			err = ErrLeaderChanged
		}
	} else {
		ctx, cancel := s.withRequestTimeout(ctx)
		defer cancel(nil)
		err = s.onLeader(ctx,
			func(context.Context) (err error) { resp, err = s.timeToLiveHere(r); return err },
			func(ctx context.Context, urls []string) (err error) {
				resp, err = s.timeToLiveRemote(ctx, urls, r)
				return err
			})
	}
	if err != nil {
		return nil, err
	}
	resp.Header = s.ResponseHeader()
	return resp, nil
}

// timeToLiveHere answers TimeToLive from this member's lessor, after
// applying what is committed: ErrNotPrimary unless it is the leader's.
func (s *Server) timeToLiveHere(r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.waitAppliedCommit(); err != nil {
		return nil, err
	}
	s.restoring.RLock()
	defer s.restoring.RUnlock()
	return s.leases.lessor.TimeToLive(r)
}

// LeaseLeases lists every lease this member has applied, as etcd does
// (from the member's own state, without a read-index round). Safe for
// concurrent use.
func (s *Server) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	ids := s.leases.lessor.Leases()
	ls := make([]*pb.LeaseStatus, len(ids))
	for i, id := range ids {
		ls[i] = &pb.LeaseStatus{ID: id}
	}
	return &pb.LeaseLeasesResponse{Header: s.ResponseHeader(), Leases: ls}, nil
}

// ResponseHeader returns a header describing the member now: cluster and
// member IDs, raft term and the store's current revision. It is cheap and
// safe for concurrent use.
func (s *Server) ResponseHeader() *pb.ResponseHeader { return s.fillHeader(nil) }

// errLeaseRequestTimeout is the cause of a lease request's context when
// the request timeout passes.
var errLeaseRequestTimeout = errors.New("server: lease request timed out")

// withRequestTimeout derives a context that ends when the request timeout
// passes on the member's clock (cause errLeaseRequestTimeout).
func (s *Server) withRequestTimeout(ctx context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	timeout := s.clock.After(s.cfg.RequestTimeout)
	go func() {
		select {
		case <-timeout:
			cancel(errLeaseRequestTimeout)
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// leaseCtxErr turns a context error from a lease request into the
// server's: ErrTimeout when the request (or the caller's) deadline passed,
// ErrCanceled when the caller gave up. Other errors pass unchanged.
func (s *Server) leaseCtxErr(ctx context.Context, err error) error {
	if err == nil || (!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	if c := context.Cause(ctx); errors.Is(c, errLeaseRequestTimeout) || errors.Is(c, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ErrCanceled
}

// onLeader runs a request on the leader until it gives a final answer, as
// etcd forwards keep-alives and TimeToLive: local when this member leads,
// remote (the leader's peer URLs) otherwise. Only success and
// lease.ErrLeaseNotFound are final; anything else (the leader has not
// taken up its leases yet, a connection failure, a leadership change) is
// tried again after forwardRetry, against whoever leads then, until ctx
// ends: ErrNoLeader if no leader is known by then, else ErrTimeout or
// ErrCanceled.
func (s *Server) onLeader(ctx context.Context, local func(context.Context) error, remote func(context.Context, []string) error) error {
	for {
		lead := s.node.Lead()
		var err error
		switch m, ok := s.member(lead); {
		case lead == 0 || (lead != s.memberID && !ok):
			// Wait for an election, as etcd does.
			select {
			case <-s.lead.changedC():
			case <-s.clock.After(s.electionTimeout()):
			case <-ctx.Done():
				return ErrNoLeader
			case <-s.stopc:
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
		if errors.Is(err, ErrStopped) && s.stopping() {
			return ErrStopped
		}
		s.lg.Debug("a lease request on the leader failed; retrying", "leader", lead, "err", err)
		select {
		case <-ctx.Done():
			return s.leaseCtxErr(ctx, ctx.Err())
		case <-s.clock.After(forwardRetry):
		case <-s.stopc:
			return ErrStopped
		}
	}
}

// appliedWaiters wakes goroutines waiting for the applied index to reach
// an index. The channel exists only while someone waits, so the apply loop
// pays nothing otherwise.
type appliedWaiters struct {
	mu sync.Mutex
	ch chan struct{} // closed at the next applied batch; nil when none waits
}

// wait returns a channel closed after the next applied batch.
func (a *appliedWaiters) wait() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch == nil {
		a.ch = make(chan struct{})
	}
	return a.ch
}

// advanced is called by the apply loop after each batch (and snapshot).
func (a *appliedWaiters) advanced() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch != nil {
		close(a.ch)
		a.ch = nil
	}
}

// waitAppliedCommit waits until this member has applied every entry
// committed when it was called, as etcd's leader does before it answers
// from its lessor. Errors: ErrTimeoutWaitAppliedIndex after a second,
// ErrStopped.
func (s *Server) waitAppliedCommit() error {
	target := s.node.CommitIndex()
	if s.applied.Load() >= target {
		return nil
	}
	timeout := s.clock.After(appliedIndexTimeout)
	for {
		ch := s.appliedWait.wait()
		if s.applied.Load() >= target {
			return nil
		}
		select {
		case <-ch:
		case <-timeout:
			return ErrTimeoutWaitAppliedIndex
		case <-s.stopc:
			return ErrStopped
		}
	}
}
