package clustertest

import (
	"sync"
	"time"

	"github.com/cairn-db/cairn/internal/raftnode"
)

// Clock is the simulated time every member of a Cluster runs on. It moves
// only when the cluster's driver advances it. It implements server.Clock.
//
// Timers (After) fire as the clock passes them. Tickers (raft's logical
// clock) are different: each tick is handed to its ticker with a blocking
// send, so the driver does not move on until every member's raft loop has
// taken the tick. That keeps the members' raft clocks in step with each
// other and with the simulated time, however slow one of them is.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []timer
	tickers map[*ticker]struct{}
}

type timer struct {
	at time.Time
	c  chan time.Time
}

// NewClock returns a clock at an arbitrary fixed date.
func NewClock() *Clock {
	return &Clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), tickers: map[*ticker]struct{}{}}
}

// Now returns the simulated time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the time once d has passed.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, timer{at: c.now.Add(d), c: ch})
	return ch
}

// NewTicker returns a ticker that ticks every d of simulated time.
func (c *Clock) NewTicker(d time.Duration) raftnode.Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &ticker{clock: c, every: d, next: c.now.Add(d), c: make(chan time.Time), stopped: make(chan struct{})}
	c.tickers[t] = struct{}{}
	return t
}

// advance moves the clock by d, fires the timers that fall due, and hands
// each ticker the ticks it is owed, waiting until each is taken (or the
// ticker stopped).
func (c *Clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(now) {
			t.c <- now
		} else {
			kept = append(kept, t)
		}
	}
	clear(c.timers[len(kept):])
	c.timers = kept
	var due []*ticker
	for t := range c.tickers {
		for !t.next.After(now) {
			due = append(due, t)
			t.next = t.next.Add(t.every)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		select {
		case t.c <- now:
		case <-t.stopped:
		}
	}
}

type ticker struct {
	clock   *Clock
	every   time.Duration
	next    time.Time // guarded by clock.mu
	c       chan time.Time
	once    sync.Once
	stopped chan struct{}
}

func (t *ticker) C() <-chan time.Time { return t.c }

func (t *ticker) Stop() {
	t.once.Do(func() {
		close(t.stopped)
		t.clock.mu.Lock()
		delete(t.clock.tickers, t)
		t.clock.mu.Unlock()
	})
}
