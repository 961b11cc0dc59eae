package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
)

// readIndexRetry is how long a read-index round waits for raft's answer
// before asking again (raft drops the request while there is no leader).
const readIndexRetry = 500 * time.Millisecond

// readBatch is the set of linearizable reads that share one read-index
// round. done closes when the member's applied state is recent enough for
// all of them; err says why not, if it is not.
type readBatch struct {
	done    chan struct{}
	err     error
	readers int // guarded by readIndexer.mu
}

// readIndexer batches linearizable reads: one goroutine (run) takes every
// read waiting when it is free, confirms with raft that this member's
// leadership was current at the time (ReadIndex), waits until the apply
// loop has applied up to the index raft returned, and releases the whole
// batch at once. Reads that arrive during a round form the next batch.
type readIndexer struct {
	s *Server

	mu      sync.Mutex
	pending *readBatch // collecting reads; nil when none wait
	wake    chan struct{}

	statesMu sync.Mutex
	states   []raft.ReadState
	statesc  chan struct{}
	appliedc chan struct{}
	// rounds counts read-index rounds started; it also makes each round's
	// request context unique.
	rounds atomic.Uint64
}

func newReadIndexer(s *Server) *readIndexer {
	return &readIndexer{
		s:        s,
		wake:     make(chan struct{}, 1),
		statesc:  make(chan struct{}, 1),
		appliedc: make(chan struct{}, 1),
	}
}

// wait blocks until a read-index round that started after the call has
// confirmed the applied state, i.e. until a read now observes every write
// that completed before wait was called.
func (ri *readIndexer) wait(ctx context.Context) error {
	ri.mu.Lock()
	b := ri.pending
	if b == nil {
		b = &readBatch{done: make(chan struct{})}
		ri.pending = b
	}
	b.readers++
	ri.mu.Unlock()
	select {
	case ri.wake <- struct{}{}:
	default:
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctxErr(ctx.Err())
	case <-ri.s.life.stopc:
		return ErrStopped
	}
}

// onReadStates is raft's answer; it runs on the raft loop and must not block.
func (ri *readIndexer) onReadStates(rs []raft.ReadState) {
	ri.statesMu.Lock()
	ri.states = append(ri.states, rs...)
	ri.statesMu.Unlock()
	select {
	case ri.statesc <- struct{}{}:
	default:
	}
}

// appliedAdvanced is called by the apply loop after each batch.
func (ri *readIndexer) appliedAdvanced() {
	select {
	case ri.appliedc <- struct{}{}:
	default:
	}
}

func (ri *readIndexer) run() {
	defer ri.s.life.wg.Done()
	for {
		select {
		case <-ri.wake:
		case <-ri.s.life.stopc:
			ri.release(ErrStopped)
			return
		}
		// Let the goroutines that are ready to run go first: on a busy
		// member they are mostly reads on their way to wait, which then
		// join this round instead of each starting the next one. Without
		// it, 100 clients on 2 cores averaged 1.2 reads a round, so nearly
		// every read paid for a round of its own (a raft Ready, two timers
		// and four goroutine switches); with it, about 12. An idle member
		// has nothing else to run and loses nothing.
		runtime.Gosched()
		ri.mu.Lock()
		b := ri.pending
		ri.pending = nil
		ri.mu.Unlock()
		if b == nil {
			continue
		}
		if h := ri.s.knobs.beforeReadRound; h != nil {
			h()
		}
		b.err = ri.round()
		if b.err != nil && b.err != ErrStopped {
			ri.s.metrics.readIndexFailed.Inc()
		}
		close(b.done)
	}
}

// release fails the collecting batch at shutdown.
func (ri *readIndexer) release(err error) {
	ri.mu.Lock()
	b := ri.pending
	ri.pending = nil
	ri.mu.Unlock()
	if b != nil {
		b.err = err
		close(b.done)
	}
}

// round runs one read-index round and waits for the applied index to reach
// the answer.
func (ri *readIndexer) round() error {
	var rctx [8]byte
	binary.BigEndian.PutUint64(rctx[:], ri.rounds.Add(1))
	// Answers to earlier rounds (late, after a retry) are of no use now.
	ri.statesMu.Lock()
	ri.states = ri.states[:0]
	ri.statesMu.Unlock()

	s := ri.s
	// A leader change loses the request (the old leader's pending reads,
	// or the forwarded one): say so at once, as etcd does, rather than
	// time out.
	changed := s.lead.changedC()
	deadline := s.clock.After(s.cfg.RequestTimeout)
	s.node.ReadIndex(rctx[:])
	retry := s.clock.After(readIndexRetry)
	var index uint64
	for found := false; !found; {
		select {
		case <-ri.statesc:
			ri.statesMu.Lock()
			for _, st := range ri.states {
				if bytes.Equal(st.RequestCtx, rctx[:]) {
					index, found = st.Index, true
				} else {
					// An answer to an earlier round, late.
					s.metrics.slowReadIndex.Inc()
				}
			}
			ri.states = ri.states[:0]
			ri.statesMu.Unlock()
		case <-retry:
			s.metrics.slowReadIndex.Inc()
			s.node.ReadIndex(rctx[:])
			retry = s.clock.After(readIndexRetry)
		case <-changed:
			return ErrLeaderChanged
		case <-deadline:
			return ErrTimeout
		case <-s.life.stopc:
			return ErrStopped
		}
	}
	for s.applied.Load() < index {
		select {
		case <-ri.appliedc:
		case <-deadline:
			return ErrTimeout
		case <-s.life.stopc:
			return ErrStopped
		}
	}
	return nil
}
