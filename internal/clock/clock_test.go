package clock

import (
	"testing"
	"time"
)

// waitFor bounds how long a test waits for the wall clock to do what it
// must; it is a deadline for a clear failure, not a measurement.
const waitFor = 10 * time.Second

func TestRealTickerTicksUntilStopped(t *testing.T) {
	var c Clock = Real{}
	tk := c.NewTicker(time.Millisecond)
	for range 2 {
		select {
		case <-tk.C():
		case <-time.After(waitFor):
			t.Fatal("a 1ms ticker did not tick")
		}
	}
	tk.Stop()
	tk.Stop() // idempotent
}

func TestRealAfterAndNow(t *testing.T) {
	var c Clock = Real{}
	before := c.Now()
	select {
	case at := <-c.After(time.Millisecond):
		if at.Before(before) {
			t.Fatalf("After delivered %v, before Now's %v", at, before)
		}
	case <-time.After(waitFor):
		t.Fatal("After(1ms) never fired")
	}
	if !c.Now().After(before) {
		t.Fatalf("Now did not move past %v after a timer fired", before)
	}
}
