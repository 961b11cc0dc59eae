// Package clock is the source of time for everything in cairn whose
// behaviour time decides: request timeouts, lease expiry and checkpoints,
// raft's logical clock, auto-compaction, health intervals and watch
// progress notifications.
//
// Code that needs the time takes a Clock instead of calling the time
// package, so that tests move time by hand (clocktest.Fake) instead of
// sleeping. Production code uses Real, the wall clock.
package clock

import "time"

// Clock tells the time and makes timers and tickers. Implementations are
// safe for concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives the time once d has passed;
	// at once if d <= 0. The channel is buffered: nobody has to read it.
	After(d time.Duration) <-chan time.Time
	// NewTicker returns a ticker that ticks every d, which must be
	// positive. The caller must Stop it.
	NewTicker(d time.Duration) Ticker
}

// Ticker is a running ticker, as made by Clock.NewTicker. Its methods may
// be called from any goroutine.
type Ticker interface {
	// C returns the channel the ticks arrive on.
	C() <-chan time.Time
	// Stop stops the ticker; a tick already on its way may still arrive.
	// Stop may be called more than once.
	Stop()
}

// Real is the wall clock: the time package's Now, After and NewTicker.
// Its zero value is ready to use.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

// NewTicker returns a Ticker backed by time.NewTicker(d); it panics if d
// is not positive, as time.NewTicker does.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// realTicker adapts *time.Ticker, whose channel is a field, to Ticker.
type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }
