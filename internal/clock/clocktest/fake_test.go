package clocktest

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor is the deadline for something that must happen; tests fail
// clearly past it rather than hang.
const waitFor = 10 * time.Second

func received(c <-chan time.Time) (time.Time, bool) {
	select {
	case at := <-c:
		return at, true
	default:
		return time.Time{}, false
	}
}

func TestAfterFiresWhenAdvancePassesIt(t *testing.T) {
	f := NewFake()
	if !f.Now().Equal(Start) {
		t.Fatalf("NewFake().Now() = %v, want %v", f.Now(), Start)
	}
	now := f.After(0)
	if at, ok := received(now); !ok || !at.Equal(Start) {
		t.Fatalf("After(0) = %v, %v; want Start at once", at, ok)
	}
	a := f.After(2 * time.Second)
	b := f.After(time.Second)
	if got, want := f.Timers(), []time.Duration{2 * time.Second, time.Second}; !slices.Equal(got, want) {
		t.Fatalf("Timers() = %v, want %v", got, want)
	}
	f.Advance(999 * time.Millisecond)
	if _, ok := received(b); ok {
		t.Fatal("a 1s timer fired 999ms in")
	}
	f.Advance(time.Millisecond)
	if at, ok := received(b); !ok || !at.Equal(Start.Add(time.Second)) {
		t.Fatalf("1s timer at 1s: %v, %v", at, ok)
	}
	if got, want := f.Timers(), []time.Duration{2 * time.Second}; !slices.Equal(got, want) {
		t.Fatalf("Timers() after one fired = %v, want %v", got, want)
	}
	f.Advance(time.Hour)
	if at, ok := received(a); !ok || !at.Equal(Start.Add(time.Hour+time.Second)) {
		t.Fatalf("2s timer after an hour: %v, %v", at, ok)
	}
	if got := f.Timers(); len(got) != 0 {
		t.Fatalf("Timers() with all fired = %v", got)
	}
}

// TestAdvanceHandsOverEveryTick: Advance returns only once the owner has
// taken every tick owed, so the count is exact when it returns.
func TestAdvanceHandsOverEveryTick(t *testing.T) {
	f := NewFake()
	tk := f.NewTicker(10 * time.Millisecond)
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range tk.C() {
			// The tick is taken on receipt; count it before the next.
			n.Add(1)
			if n.Load() == 7 {
				return
			}
		}
	}()
	f.Advance(9 * time.Millisecond)
	if got := n.Load(); got != 0 {
		t.Fatalf("%d ticks before the first interval passed", got)
	}
	f.Advance(21 * time.Millisecond) // 30ms: three ticks
	// The third hand-over may complete just before n.Add runs.
	waitUntil(t, "three ticks counted", func() bool { return n.Load() == 3 })
	f.Advance(40 * time.Millisecond) // 70ms: seven in all
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatalf("owner saw %d ticks after 70ms of 10ms ticks, want 7", n.Load())
	}
	if got := n.Load(); got != 7 {
		t.Fatalf("ticks = %d, want 7", got)
	}
	tk.Stop()
	f.Advance(time.Second) // a stopped ticker holds nothing back
	tk.Stop()              // idempotent
}

// TestAdvanceWaitsForTheOwner: while the owner does not read, Advance does
// not return; it returns once the owner takes the tick or stops.
func TestAdvanceWaitsForTheOwner(t *testing.T) {
	for _, stop := range []bool{false, true} {
		f := NewFake()
		tk := f.NewTicker(time.Second)
		returned := make(chan struct{})
		go func() {
			f.Advance(time.Second)
			close(returned)
		}()
		// Advance must still be waiting a while later; this cannot prove
		// it waits forever, but a regression that does not wait fails here
		// nearly every run.
		select {
		case <-returned:
			t.Fatal("Advance returned before the tick was taken")
		case <-time.After(20 * time.Millisecond):
		}
		if stop {
			tk.Stop()
		} else if at := <-tk.C(); !at.Equal(Start.Add(time.Second)) {
			t.Fatalf("tick carries %v, want %v", at, Start.Add(time.Second))
		}
		select {
		case <-returned:
		case <-time.After(waitFor):
			t.Fatalf("Advance still waiting after the owner (stop=%v) let go", stop)
		}
	}
}

func TestNextTickerAndTick(t *testing.T) {
	f := NewFake()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	short, cancelShort := context.WithTimeout(ctx, 10*time.Millisecond)
	if tk, err := f.NextTicker(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NextTicker with none made = %v, %v; want DeadlineExceeded", tk, err)
	}
	cancelShort()

	got := make(chan *FakeTicker, 1)
	go func() {
		tk, err := f.NextTicker(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- tk
	}()
	first := f.NewTicker(time.Minute)
	second := f.NewTicker(2 * time.Minute)
	if tk := <-got; tk != first {
		t.Fatal("NextTicker did not return the first ticker made")
	}
	if tk, err := f.NextTicker(ctx); err != nil || tk != second || tk.Interval() != 2*time.Minute {
		t.Fatalf("second NextTicker = %v, %v; want the 2m ticker", tk, err)
	}

	errc := make(chan error, 1)
	go func() { errc <- second.(*FakeTicker).Tick(ctx) }()
	if at := <-second.C(); !at.Equal(Start) {
		t.Fatalf("Tick carried %v, want the fake time %v", at, Start)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Tick taken: %v", err)
	}

	short, cancelShort = context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancelShort()
	if err := second.(*FakeTicker).Tick(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Tick nobody takes = %v, want DeadlineExceeded", err)
	}
	go func() { errc <- first.(*FakeTicker).Tick(ctx) }()
	first.Stop()
	if err := <-errc; !errors.Is(err, ErrStopped) {
		t.Fatalf("Tick on a ticker stopped meanwhile = %v, want ErrStopped", err)
	}
	if err := first.(*FakeTicker).Tick(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Tick on a stopped ticker = %v, want ErrStopped", err)
	}
}

func TestNewTickerRejectsNonPositive(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewTicker(0) did not panic")
		}
	}()
	NewFake().NewTicker(0)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
