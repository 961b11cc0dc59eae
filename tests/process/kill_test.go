package process

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// schedule is how much a test does: the default is one pass, -short less,
// CAIRN_PROCESS_LONG=1 several passes with more clients.
type schedule struct {
	// passes over the kill schedule (leader, then each follower).
	passes int
	// workers is the number of concurrent clients.
	workers int
	// progress is how many writes the cluster must acknowledge between
	// two steps.
	progress int64
	seed     uint64
}

func newSchedule(t *testing.T) schedule {
	s := schedule{passes: 1, workers: 6, progress: 150}
	switch {
	case os.Getenv("CAIRN_PROCESS_LONG") == "1":
		s = schedule{passes: 8, workers: 12, progress: 500}
	case testing.Short():
		s = schedule{passes: 0, workers: 4, progress: 60}
	}
	s.seed = uint64(time.Now().UnixNano())
	if v := os.Getenv("CAIRN_PROCESS_SEED"); v != "" {
		var err error
		if s.seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CAIRN_PROCESS_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (rerun: CAIRN_PROCESS_SEED=%d), %d clients", s.seed, s.seed, s.workers)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("failed with seed %d (rerun: CAIRN_PROCESS_SEED=%d)", s.seed, s.seed)
		}
	})
	return s
}

// TestKillRestart kills the leader and then each follower in turn with
// SIGKILL under load; the two survivors keep acknowledging writes, and the
// killed member restarts on its data directory and catches up. In -short
// mode only the leader is killed. At the end every member is killed at
// once and restarted.
func TestKillRestart(t *testing.T) {
	s := newSchedule(t)
	c := newCluster(t, 3)
	l := startLoad(t, c.endpoints(), s.workers, s.seed)
	l.waitProgress(c, s.progress, "warm-up")

	rounds := 3 * s.passes
	if rounds == 0 {
		rounds = 1
	}
	for round := range rounds {
		lead, victim := c.victim(round)
		role := "follower"
		if victim == lead {
			role = "leader"
		}
		t.Logf("round %d: SIGKILL %s %s (%d writes acknowledged so far)", round, role, victim.name, l.acked.Load())
		victim.kill(t)
		l.waitProgress(c, s.progress, "two of three members serve writes")
		if role == "leader" {
			if newLead := c.waitLeader(); newLead == victim {
				c.fatalf("the killed member %s is still named leader", victim.name)
			}
		}

		victim.start(t, c.initialCluster(), "new", c.token)
		c.waitCaughtUp(victim)
		t.Logf("round %d: %s restarted and caught up", round, victim.name)
		l.waitProgress(c, s.progress, "after the restart")
	}

	// Then the whole cluster at once, as a power cut would: every member
	// restarts from its own disk, and what was acknowledged is still there.
	t.Logf("SIGKILL every member (%d writes acknowledged so far)", l.acked.Load())
	for _, m := range c.current() {
		m.kill(t)
	}
	for _, m := range c.current() {
		m.start(t, c.initialCluster(), "new", c.token)
	}
	c.waitLeader()
	l.waitProgress(c, s.progress, "after every member restarted")

	l.stop()
	c.logSnapshots()
	c.checkConverged()
	cli := newClient(t, c.endpoints()...)
	l.checkLedger(c, cli)
	l.checkLinearizable(c, cli)
}
