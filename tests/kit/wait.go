package kit

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// WaitTimeout is how long WaitFor and WaitForNil wait before they fail the
// test. It is a failure deadline for a loaded 2-core machine running many
// test binaries at once, never a measure of speed.
const WaitTimeout = 60 * time.Second

// maxPollInterval caps the back-off between two checks of a condition.
const maxPollInterval = 20 * time.Millisecond

// Poll calls cond until it returns nil or timeout has passed, and returns
// nil or, on timeout, an error that wraps cond's last one. It checks cond
// at once, then backs off from 1 ms to 20 ms between checks. Poll may be
// called from any goroutine.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	interval := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached after %v: %w", timeout, err)
		}
		time.Sleep(interval)
		interval = min(2*interval, maxPollInterval)
	}
}

// errNotYet is what a boolean condition reports while it does not hold.
var errNotYet = errors.New("the condition does not hold")

// WaitFor polls cond until it holds and fails the test, naming what it
// waited for, if it does not hold within WaitTimeout. Call it from the
// test's goroutine.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	err := Poll(WaitTimeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("timed out waiting for %s: %v", what, err)
	}
}

// WaitForNil polls cond until it returns nil and fails the test with what
// and cond's last error if that does not happen within WaitTimeout. Call it
// from the test's goroutine.
func WaitForNil(t testing.TB, what string, cond func() error) {
	t.Helper()
	if err := Poll(WaitTimeout, cond); err != nil {
		t.Fatalf("timed out waiting for %s: %v", what, err)
	}
}
