package server

import (
	"context"
	"sync"
)

// lifecycle is the member's run from New to Stop: the goroutines it owns,
// the signal that stopping has begun, and the guard that keeps requests
// off the engine once it is closing.
//
// Stopping goes in this order (Server.shutdown): stopc closes, which
// releases every request and goroutine waiting on something; then close
// waits for the requests inside enter/leave to leave and admits no more;
// then wg.Wait waits for the goroutines; only then is the engine closed,
// and done closes last.
type lifecycle struct {
	// mu guards the engine against use after Stop: requests hold it for
	// reading while they touch the engine (enter); shutdown takes it to
	// set closed.
	mu     sync.RWMutex
	closed bool

	stopOnce sync.Once
	stopc    chan struct{} // closed when stopping starts
	done     chan struct{} // closed when everything has stopped
	// wg counts the member's goroutines and open backup streams; shutdown
	// waits for them before it closes the engine. Nobody adds to it once
	// closed is set (see enter).
	wg sync.WaitGroup

	errMu sync.Mutex
	err   error // the fatal error that stopped the member, if any
}

func (l *lifecycle) init() {
	l.stopc = make(chan struct{})
	l.done = make(chan struct{})
}

// enter admits a request that will touch the engine or start work; it must
// call leave. It fails with ErrStopped once shutdown has begun. Only public
// entry points call it, never nested in one goroutine: a nested read lock
// deadlocks behind a pending shutdown.
func (l *lifecycle) enter() error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrStopped
	}
	return nil
}

// leave ends what enter admitted.
func (l *lifecycle) leave() { l.mu.RUnlock() }

// close waits for the admitted requests to leave and admits no more.
func (l *lifecycle) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// stopping reports whether stopping has begun.
func (l *lifecycle) stopping() bool {
	select {
	case <-l.stopc:
		return true
	default:
		return false
	}
}

// setErr records err as the fatal error, unless one is recorded already.
func (l *lifecycle) setErr(err error) {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

// fatal returns the recorded fatal error.
func (l *lifecycle) fatal() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

// untilStop returns a child of parent that is also cancelled when stopping
// begins, for work inside enter that Stop must be able to cut short (Stop
// waits for such work to leave). The caller calls cancel when done.
func (l *lifecycle) untilStop(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-l.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
