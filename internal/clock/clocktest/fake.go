// Package clocktest provides Fake, a clock.Clock for tests: its time moves
// only when the test says so, and the test can see the timers waiting on
// it, find the tickers code makes, and tick them by hand. It is the one
// fake clock of every package's tests; production code never imports it.
//
// A worked example, a request that must time out:
//
//	fc := clocktest.NewFake()
//	// ... start a server with fc as its clock ...
//	go func() { _, err := s.Put(ctx, req); errc <- err }() // waits on fc.After(timeout)
//	// wait until slices.Contains(fc.Timers(), timeout), then:
//	fc.Advance(timeout) // the Put now fails with ErrTimeout
package clocktest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cairn-db/cairn/internal/clock"
)

// ErrStopped is what FakeTicker.Tick returns when the ticker is stopped
// before its owner takes the tick.
var ErrStopped = errors.New("clocktest: ticker stopped")

// Fake is a clock.Clock whose time moves only when Advance moves it.
//
// Timers (After) fire as Advance passes them: their channels are buffered,
// so firing never waits. Tickers are different: Advance hands each tick to
// its ticker with a blocking send and returns only once every tick owed
// has been taken (or its ticker stopped). That keeps every ticker's owner
// in step with the fake time, however slowly the Go scheduler runs it:
// when Advance returns, every ticker's owner has taken its ticks up to the
// new time. The flip side: Advance blocks while a live ticker's owner does
// not read its channel, so a ticker's owner must not wait on the goroutine
// that calls Advance.
//
// All methods are safe for concurrent use, but Advance should be called
// from one goroutine at a time: two concurrent calls may hand one ticker
// its ticks out of order. A Fake remembers every ticker it made (for
// NextTicker): it is made for a test's lifetime, not for long runs.
type Fake struct {
	mu  sync.Mutex
	now time.Time
	// timers are the After channels not yet fired, in creation order.
	timers []fakeTimer
	// tickers are the live (not stopped) tickers, in creation order.
	tickers []*FakeTicker
	// made is every ticker made, in creation order; NextTicker has
	// returned made[:taken]. madec is closed (and replaced) whenever a
	// ticker is made, to wake NextTicker.
	made  []*FakeTicker
	taken int
	madec chan struct{}
}

// Start is the time a Fake made by NewFake starts at: an arbitrary fixed
// date, so that tests do not depend on the day they run.
var Start = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

type fakeTimer struct {
	at time.Time
	d  time.Duration // as asked of After, for Timers
	c  chan time.Time
}

var _ clock.Clock = (*Fake)(nil)

// NewFake returns a Fake at Start.
func NewFake() *Fake {
	return &Fake{now: Start, madec: make(chan struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After returns a channel that receives the fake time once Advance has
// moved it d past now; at once if d <= 0.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan time.Time, 1)
	if d <= 0 {
		c <- f.now
		return c
	}
	f.timers = append(f.timers, fakeTimer{at: f.now.Add(d), d: d, c: c})
	return c
}

// Timers returns the durations that the timers still waiting were asked
// for (After's argument, not what is left of it), oldest first. A test
// waits on it to know that code has reached the point where it waits for
// time to pass.
func (f *Fake) Timers() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds := make([]time.Duration, len(f.timers))
	for i, t := range f.timers {
		ds[i] = t.d
	}
	return ds
}

// NewTicker returns a ticker that ticks every d of fake time, as Advance
// moves it; the first tick is due d from now. It panics if d is not
// positive, as time.NewTicker does.
func (f *Fake) NewTicker(d time.Duration) clock.Ticker {
	if d <= 0 {
		panic("clocktest: non-positive interval for NewTicker")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &FakeTicker{f: f, every: d, next: f.now.Add(d), c: make(chan time.Time), stopped: make(chan struct{})}
	f.tickers = append(f.tickers, t)
	f.made = append(f.made, t)
	close(f.madec)
	f.madec = make(chan struct{})
	return t
}

// NextTicker returns the oldest ticker made (by NewTicker) that NextTicker
// has not returned yet, waiting for one to be made. It returns ctx's error
// if ctx ends first. Tickers come back in the order they were made,
// stopped ones included, each once.
func (f *Fake) NextTicker(ctx context.Context) (*FakeTicker, error) {
	for {
		f.mu.Lock()
		if f.taken < len(f.made) {
			t := f.made[f.taken]
			f.taken++
			f.mu.Unlock()
			return t, nil
		}
		madec := f.madec
		f.mu.Unlock()
		select {
		case <-madec:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Advance moves the fake time forward by d. It fires every timer that
// falls due, then hands each live ticker every tick it is owed (one per
// interval passed, each carrying the new time), waiting until each tick
// is taken or its ticker stopped.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	now := f.now
	kept := f.timers[:0]
	for _, t := range f.timers {
		if t.at.After(now) {
			kept = append(kept, t)
		} else {
			t.c <- now // buffered, and fired once: never blocks
		}
	}
	clear(f.timers[len(kept):])
	f.timers = kept
	var due []*FakeTicker
	for _, t := range f.tickers {
		for !t.next.After(now) {
			due = append(due, t)
			t.next = t.next.Add(t.every)
		}
	}
	f.mu.Unlock()
	// Not under f.mu: the tickers' owners may call Now or After before
	// they come back for their next tick.
	for _, t := range due {
		select {
		case t.c <- now:
		case <-t.stopped:
		}
	}
}

// FakeTicker is a ticker of a Fake. Besides the ticks Advance hands it on
// schedule, a test can hand it one with Tick.
type FakeTicker struct {
	f     *Fake
	every time.Duration
	// next is when the next scheduled tick is due; guarded by f.mu.
	next    time.Time
	c       chan time.Time // unbuffered: a send is a hand-over
	once    sync.Once
	stopped chan struct{} // closed by Stop
}

var _ clock.Ticker = (*FakeTicker)(nil)

// C returns the channel the ticks arrive on. It is unbuffered: a tick is
// handed over only when the owner takes it.
func (t *FakeTicker) C() <-chan time.Time { return t.c }

// Stop stops the ticker: Advance no longer waits for it, and a Tick
// waiting on it returns ErrStopped. Stop may be called more than once.
func (t *FakeTicker) Stop() {
	t.once.Do(func() {
		close(t.stopped)
		t.f.mu.Lock()
		defer t.f.mu.Unlock()
		for i, o := range t.f.tickers {
			if o == t {
				t.f.tickers = append(t.f.tickers[:i], t.f.tickers[i+1:]...)
				break
			}
		}
	})
}

// Interval returns the interval the ticker was made with.
func (t *FakeTicker) Interval() time.Duration { return t.every }

// Tick hands the ticker one tick, carrying the fake time, out of schedule
// (the fake time does not move), and waits until its owner takes it. It
// returns ErrStopped if the ticker is stopped first, or ctx's error if ctx
// ends first.
func (t *FakeTicker) Tick(ctx context.Context) error {
	now := t.f.Now()
	select {
	case <-t.stopped:
		return ErrStopped
	default:
	}
	select {
	case t.c <- now:
		return nil
	case <-t.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}
