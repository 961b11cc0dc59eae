package server

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/clock"
	"github.com/cairn-db/cairn/internal/raftnode"
)

// The request path every API call shares. A read waits for a read-index
// round unless serializable (readStore); a write is checked against the
// quota, proposed through raft and waited for (proposed, propose, await).
// Either way the response gets the member's header (fillHeader). Public
// methods admit the request first (enter): the helpers here assume it.

// response is a response of etcd's API: every one carries a header.
type response interface {
	proto.Message
	GetHeader() *pb.ResponseHeader
}

// readStore answers a read from this member's store: after a read-index
// round unless serializable, with snapshot installs held off while read
// runs, the header filled. The caller holds enter.
func readStore[T response](s *Server, ctx context.Context, serializable bool, read func() (T, error)) (T, error) {
	var zero T
	if !serializable {
		if err := s.reads.wait(ctx); err != nil {
			return zero, err
		}
	}
	s.restoring.RLock()
	resp, err := read()
	s.restoring.RUnlock()
	if err != nil {
		s.failOnMedia(err)
		return zero, err
	}
	s.fillHeader(resp.GetHeader())
	return resp, nil
}

// write is proposed for an API call that has not been admitted yet.
func write[T response](s *Server, ctx context.Context, r *pb.InternalRaftRequest, cost int) (T, error) {
	if err := s.life.enter(); err != nil {
		var zero T
		return zero, err
	}
	defer s.life.leave()
	return proposed[T](s, ctx, r, cost, nil)
}

// proposed runs a write through raft: it refuses one that adds cost bytes
// while the engine is over its quota (quota.check), proposes r, waits for
// its result and, if wait is set, for what wait waits for, then returns
// the request's own error or its response of type T with the header
// filled. The apply step gives every response a header carrying its
// revision. Errors: the request's own, ErrNoSpace, and propose's. The
// caller holds enter (or, like Alarm, touches nothing that needs it).
func proposed[T response](s *Server, ctx context.Context, r *pb.InternalRaftRequest, cost int, wait func(result) error) (T, error) {
	var zero T
	held, err := s.quota.check(cost)
	if err != nil {
		return zero, err
	}
	res, err := s.propose(ctx, r)
	s.quota.release(held)
	if err != nil {
		s.auditProposal(r, err)
		return zero, err
	}
	if wait != nil {
		if err := wait(res); err != nil {
			return zero, err
		}
	}
	if res.err != nil {
		s.auditProposal(r, res.err)
		return zero, res.err
	}
	resp := res.resp.(T)
	s.fillHeader(resp.GetHeader())
	return resp, nil
}

// ResponseHeader returns a header describing the member now: cluster and
// member IDs, raft term and the store's current revision. It is cheap and
// safe for concurrent use.
func (s *Server) ResponseHeader() *pb.ResponseHeader { return s.fillHeader(nil) }

// fillHeader completes a response header that carries the revision.
func (s *Server) fillHeader(h *pb.ResponseHeader) *pb.ResponseHeader {
	if h == nil {
		h = &pb.ResponseHeader{Revision: s.kv.Rev()}
	}
	h.ClusterId = s.clusterID
	h.MemberId = s.memberID
	h.RaftTerm = s.node.Term()
	return h
}

// propose sends r through raft, stamped with the user and auth revision
// of ctx's credentials, and waits for its result. Errors: the credentials'
// (auth.ErrInvalidAuthToken),
// ErrTooManyRequests (apply is far behind commit), ErrRequestTooLarge, a
// timeout (no result within the request timeout; the request may still be
// applied: ErrTimeout or one of its variants, see timeoutError),
// ErrCanceled (ctx ended first; likewise), ErrStopped, and raft's
// ErrProposalDropped (raft refused it, so it will never apply). The caller
// holds enter.
func (s *Server) propose(ctx context.Context, r *pb.InternalRaftRequest) (result, error) {
	if s.life.stopping() {
		return result{}, ErrStopped
	}
	if c, a := s.node.CommitIndex(), s.applied.Load(); c > a && c-a > maxApplyLag {
		return result{}, ErrTooManyRequests
	}
	id := s.ids.next()
	if r.Header == nil {
		r.Header = &pb.RequestHeader{}
	} else {
		// The caller's (Put's pooled one), or a retry's: only ID and
		// the user below belong in it.
		r.Header.Reset()
	}
	r.Header.ID = id
	if r.Authenticate == nil {
		// Who the request runs as, for apply to check again.
		ai, err := s.auth.info(ctx)
		if err != nil {
			return result{}, err
		}
		if ai != nil {
			r.Header.Username, r.Header.AuthRevision = ai.Username, ai.Revision
		}
	}
	data, err := proto.Marshal(r)
	if err != nil {
		return result{}, err
	}
	if len(data) > int(s.cfg.MaxRequestBytes) {
		return result{}, ErrRequestTooLarge
	}
	return s.await(ctx, id, func() { s.node.Propose(raftnode.Proposal{ID: id, Data: data}) })
}

// await registers a waiter for proposal id, calls send, and waits for the
// apply loop's answer, the caller's context, the request timeout or Stop.
func (s *Server) await(ctx context.Context, id uint64, send func()) (result, error) {
	ch := s.waits.register(id)
	start := s.clock.Now()
	if !s.knobs.skipPropose {
		send()
	}
	s.metrics.proposalsPending.Inc()
	defer s.metrics.proposalsPending.Dec()

	got := func(res result) (result, error) {
		s.waits.release(ch)
		if errors.Is(res.err, ErrStopped) {
			return result{}, ErrStopped
		}
		if res.dropped {
			s.metrics.proposalsFailed.Inc()
			return result{}, res.err
		}
		return res, nil
	}
	t, timeout := s.requestTimer()
	if t != nil {
		defer releaseTimer(t)
	}
	select {
	case res := <-ch:
		return got(res)
	case <-ctx.Done():
		s.waits.cancel(id, ch)
		s.metrics.proposalsFailed.Inc()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return result{}, s.timeoutError(start)
		}
		return result{}, ErrCanceled
	case <-timeout:
		s.waits.cancel(id, ch)
		s.metrics.proposalsFailed.Inc()
		return result{}, s.timeoutError(start)
	case <-s.life.stopc:
		if !s.waits.cancel(id, ch) {
			// Applied just before the stop (a member applying its own
			// removal stops soon after): the request took effect, and
			// its result is in the channel or about to be.
			return got(<-ch)
		}
		return result{}, ErrStopped
	}
}

// timerPool holds stopped timers for requestTimer: every write waits with
// one, and a timer from clock.After costs three allocations per request.
var timerPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// requestTimer returns a channel that receives once the request timeout
// has passed. On the wall clock the channel is that of a timer from
// timerPool, also returned, which the caller hands back to releaseTimer
// once it no longer waits: since Go 1.23 a stopped timer's channel holds
// no stale value, so a reset timer fires only for its new wait. Any other
// clock (tests' fakes) is asked for a timer of its own, and the timer
// returned is nil.
func (s *Server) requestTimer() (*time.Timer, <-chan time.Time) {
	if _, real := s.clock.(clock.Real); !real {
		return nil, s.clock.After(s.cfg.RequestTimeout)
	}
	t := timerPool.Get().(*time.Timer)
	t.Reset(s.cfg.RequestTimeout)
	return t, t.C
}

// releaseTimer stops a timer from requestTimer and puts it back.
func releaseTimer(t *time.Timer) {
	t.Stop()
	timerPool.Put(t)
}

// onDropped answers proposals raft refused (raft.ErrProposalDropped, as
// etcd returns it): they were never appended, so they will never apply.
func (s *Server) onDropped(ids []uint64, err error) {
	if errors.Is(err, raftnode.ErrConfChangeInProgress) {
		err = ErrConfChangeInProgress
	}
	for _, id := range ids {
		s.waits.trigger(id, result{err: err, dropped: true})
	}
	s.lg.Debug("raft dropped proposals", "count", len(ids), "err", err)
}

func ctxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ErrCanceled
}

// errRequestTimeout is the cause of a request's context when the request
// timeout passes (withRequestTimeout).
var errRequestTimeout = errors.New("server: request timed out")

// withRequestTimeout derives a context that ends when the request timeout
// passes on the member's clock (cause errRequestTimeout), for requests
// that wait on something other than their own proposal (lease requests
// forwarded to the leader).
func (s *Server) withRequestTimeout(ctx context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	timeout := s.clock.After(s.cfg.RequestTimeout)
	go func() {
		select {
		case <-timeout:
			cancel(errRequestTimeout)
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// requestCtxErr turns a context error from a request under
// withRequestTimeout into the server's: ErrTimeout when the request (or
// the caller's) deadline passed, ErrCanceled when the caller gave up.
// Other errors pass unchanged.
func requestCtxErr(ctx context.Context, err error) error {
	if err == nil || (!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	if c := context.Cause(ctx); errors.Is(c, errRequestTimeout) || errors.Is(c, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ErrCanceled
}
