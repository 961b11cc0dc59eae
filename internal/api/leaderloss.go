package api

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// noLeaderChecks is how many consecutive checks, one election timeout
// apart, must find no leader before streams that require one are ended.
const noLeaderChecks = 3

// leaderLoss ends the streams whose client required a leader
// (clientv3.WithRequireLeader, as the Kubernetes API server's watches do)
// once the member has known no leader for noLeaderChecks election
// timeouts, with etcd's "no leader": a member cut off from the quorum would
// otherwise keep such a watch open and silent, and its client would never
// move to a member that still sees writes.
type leaderLoss struct {
	b        Backend
	interval time.Duration
	once     sync.Once
	mu       sync.Mutex
	streams  map[*leaderStream]struct{}
}

type leaderStream struct {
	cancel context.CancelFunc
	lost   atomic.Bool
}

func newLeaderLoss(b Backend, electionTimeout time.Duration) *leaderLoss {
	return &leaderLoss{b: b, interval: electionTimeout, streams: make(map[*leaderStream]struct{})}
}

// interceptor refuses a stream that requires a leader when there is none,
// and, given a stopping channel to end its monitor, watches the others.
func (l *leaderLoss) interceptor(stopping <-chan struct{}) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !needsLeader(ss.Context()) {
			return handler(srv, ss)
		}
		if l.b.Leader() == 0 {
			return rpctypes.ErrGRPCNoLeader
		}
		if stopping == nil || l.interval <= 0 {
			return handler(srv, ss)
		}
		l.once.Do(func() { go l.monitor(stopping) })
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		e := &leaderStream{cancel: cancel}
		l.mu.Lock()
		l.streams[e] = struct{}{}
		l.mu.Unlock()
		err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		l.mu.Lock()
		delete(l.streams, e)
		l.mu.Unlock()
		if e.lost.Load() {
			return rpctypes.ErrGRPCNoLeader
		}
		return err
	}
}

// monitor checks for a leader every interval until stopping closes.
func (l *leaderLoss) monitor(stopping <-chan struct{}) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	missed := 0
	for {
		select {
		case <-stopping:
			return
		case <-t.C:
		}
		if l.b.Leader() != 0 {
			missed = 0
			continue
		}
		if missed++; missed < noLeaderChecks {
			continue
		}
		l.mu.Lock()
		for e := range l.streams {
			e.lost.Store(true)
			e.cancel()
			delete(l.streams, e)
		}
		l.mu.Unlock()
	}
}
