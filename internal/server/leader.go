package server

import (
	"sync"
	"time"
)

// leaderTracker follows leadership as the raft loop reports it: when the
// current leader became known, and a channel closed whenever a new leader
// becomes known (not when one is lost: as in etcd, a read waiting for a
// lost leader times out rather than fail at once), for reads and
// leadership transfers that must notice one.
type leaderTracker struct {
	mu        sync.Mutex
	lead      uint64
	electedAt time.Time     // when lead (non-zero) became known
	changed   chan struct{} // closed and replaced at every change
}

func (l *leaderTracker) init(now time.Time) {
	l.electedAt = now
	l.changed = make(chan struct{})
}

// observe records the leader raft reports; it runs on the raft loop.
func (l *leaderTracker) observe(lead uint64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lead == l.lead {
		return
	}
	l.lead = lead
	if lead == 0 {
		return
	}
	l.electedAt = now
	close(l.changed)
	l.changed = make(chan struct{})
}

// changedC returns a channel closed when the next new leader is known.
func (l *leaderTracker) changedC() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *leaderTracker) elected() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.electedAt
}

// healthInterval is how long a peer connection must have lasted to count
// as healthy (etcd's).
const healthInterval = 5 * time.Second

// electionTimeout is the raft election timeout as a duration.
func (s *Server) electionTimeout() time.Duration {
	return time.Duration(s.cfg.ElectionTicks) * time.Duration(s.cfg.TickMs) * time.Millisecond
}

// timeoutError tells why a request that started at start timed out, as
// etcd does: a leader elected during it (ErrTimeoutDueToLeaderFail), the
// connection to the leader (or, on the leader, to a quorum) established
// after it started (ErrTimeoutDueToConnectionLost), or just ErrTimeout.
func (s *Server) timeoutError(start time.Time) error {
	elected := s.lead.elected()
	if start.After(elected.Add(-2*s.electionTimeout())) && start.Before(elected) {
		return ErrTimeoutDueToLeaderFail
	}
	switch lead := s.node.Lead(); lead {
	case 0:
	case s.memberID:
		voters := s.members.voters()
		if len(voters) > 0 && s.peers.connectedSince(start, voters) < len(voters)/2+1 {
			return ErrTimeoutDueToConnectionLost
		}
	default:
		if !s.peers.isConnectedSince(lead, start) {
			return ErrTimeoutDueToConnectionLost
		}
	}
	return ErrTimeout
}
