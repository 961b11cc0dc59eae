package crashpoint

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestDisarmTakesACrashUnderWay checks that a crash point firing while the
// round gives up on it is returned by disarm, not left behind: the member
// is killed either way, and a clone left in the channel was once taken by
// the next round for its own (a restart onto a disk older than what the
// member had acknowledged since).
func TestDisarmTakesACrashUnderWay(t *testing.T) {
	d := newDisk("n1")
	entered, release := make(chan struct{}), make(chan struct{})
	killed := 0
	fired := d.arm(1, rand.New(rand.NewPCG(1, 2)), func() {
		killed++
		close(entered)
		<-release
	})
	opDone := make(chan error, 1)
	go func() { opDone <- d.FS().MkdirAll("data", 0o755) }()
	<-entered // the crash point fell: the member is being killed
	disarmed := make(chan bool, 1)
	go func() {
		_, ok := d.disarm()
		disarmed <- ok
	}()
	// Give disarm the chance to run inside the crash; it must wait for the
	// crash to finish rather than report none. (The pause only makes a
	// regression likely to show; the assertions hold at any timing.)
	time.Sleep(20 * time.Millisecond)
	close(release)
	if err := <-opDone; err != nil {
		t.Fatalf("the operation at the crash point failed: %v", err)
	}
	if ok := <-disarmed; !ok {
		t.Fatal("disarm reported no crash while the member was being killed at its crash point")
	}
	if killed != 1 {
		t.Fatalf("kill ran %d times, want 1", killed)
	}
	select {
	case cr := <-fired:
		t.Fatalf("the crash at %s is still in the channel after disarm returned it", cr.op)
	default:
	}
	// A new arm never sees an old crash, and a disarmed disk fires no more.
	again := d.arm(1_000_000, rand.New(rand.NewPCG(3, 4)), func() { t.Error("kill ran after the crash point was disarmed") })
	if _, ok := d.disarm(); ok {
		t.Fatal("disarm of a new arm returned a crash")
	}
	select {
	case cr := <-again:
		t.Fatalf("a new arm received the crash at %s", cr.op)
	default:
	}
}
