package server

import (
	"sync"
	"sync/atomic"
)

// appliedIndex is the index of the last entry whose effects are committed
// to the engine and visible to readers. Only the apply loop advances it;
// anyone may read it, and goroutines that need it to reach an index wait
// on next. The channel exists only while someone waits, so the apply loop
// pays nothing otherwise.
type appliedIndex struct {
	index atomic.Uint64

	mu sync.Mutex
	ch chan struct{} // closed at the next advance; nil when none waits
}

// Load returns the applied index.
func (a *appliedIndex) Load() uint64 { return a.index.Load() }

// advance records that everything up to index is applied and wakes the
// waiters. Only the apply loop calls it (after each batch and snapshot).
func (a *appliedIndex) advance(index uint64) {
	a.index.Store(index)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch != nil {
		close(a.ch)
		a.ch = nil
	}
}

// next returns a channel closed at the next advance.
func (a *appliedIndex) next() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch == nil {
		a.ch = make(chan struct{})
	}
	return a.ch
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
		ch := s.applied.next()
		if s.applied.Load() >= target {
			return nil
		}
		select {
		case <-ch:
		case <-timeout:
			return ErrTimeoutWaitAppliedIndex
		case <-s.life.stopc:
			return ErrStopped
		}
	}
}
