package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/tests/kit"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestLinearizableUnderFaults runs clients against random members of a
// cluster while a nemesis partitions, slows, drops and duplicates its
// messages, stops and restarts members and moves the leadership; then it
// checks that the members converged to the same state, the clients'
// history for linearizability, and the serializable reads against the
// final history. Each seed is one schedule; CAIRN_CLUSTER_SEEDS sets how
// many run. The schedules leave the key history uncompacted (raft's log is
// compacted all the time, so followers still catch up from snapshots): the
// check reads it back to settle writes whose outcome the clients did not
// learn.
func TestLinearizableUnderFaults(t *testing.T) {
	first := envInt("CAIRN_CLUSTER_SEED", 1)
	n := envInt("CAIRN_CLUSTER_SEEDS", 5)
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runSchedule(t, uint64(seed)) })
	}
}

// Schedule sizes; the defaults keep a seed to a few seconds. Clients pause
// up to clientPause of simulated time between operations, so their
// operations spread over the whole schedule.
const (
	nemesisSteps     = 20
	clients          = 4
	clientPause      = 60 * time.Millisecond
	serializableRate = 0.15
)

func runSchedule(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0xca1e))
	size := 3
	if rng.IntN(3) == 0 {
		size = 5
	}
	c := New(t, size, Options{
		Seed:                   seed,
		SnapshotCount:          uint64(30 + rng.IntN(100)),
		SnapshotCatchUpEntries: uint64(5 + rng.IntN(20)),
		// Membership churn below replaces members without waiting for
		// connections to count as healthy.
		Configure: func(cfg *server.Config) { cfg.DisableStrictReconfigCheck = true },
	})
	t.Logf("seed %d: %d members", seed, size)
	h := NewHistory()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Go(func() { runClient(ctx, c, h, seed, cl) })
	}

	var stopped []*Member
	for range nemesisSteps {
		c.Elapse(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		switch rng.IntN(9) {
		case 0, 1:
			m := c.Members()[rng.IntN(size)]
			t.Logf("isolate %s", m)
			c.Isolate(m)
		case 2:
			ms := c.Members()
			rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
			k := (size - 1) / 2
			t.Logf("partition %v | %v", ms[:k], ms[k:])
			c.Partition(ms[:k], ms[k:])
		case 3:
			t.Log("heal")
			c.Heal()
		case 4:
			if len(stopped) < (size-1)/2 {
				run := c.Running()
				m := run[rng.IntN(len(run))]
				t.Logf("stop %s", m)
				m.Stop()
				stopped = append(stopped, m)
			}
		case 5:
			for _, m := range stopped {
				t.Logf("restart %s", m)
				if err := m.Start(); err != nil {
					t.Fatal(err)
				}
			}
			stopped = nil
		case 6:
			f := Faults{
				Drop:      []float64{0, 0.02, 0.1}[rng.IntN(3)],
				Duplicate: []float64{0, 0.05}[rng.IntN(2)],
				MaxDelay:  time.Duration(rng.IntN(4)) * 10 * time.Millisecond,
			}
			t.Logf("faults %+v", f)
			c.Net.SetFaults(f)
		case 8:
			if len(stopped) == 0 { // the cluster can lose a voter
				replaceMember(t, c, rng)
			}
		case 7:
			if l := c.Leader(); l != nil {
				to := c.Members()[rng.IntN(size)]
				mctx, mcancel := context.WithTimeout(ctx, time.Second)
				err := l.Server().MoveLeader(mctx, to.ID())
				mcancel()
				t.Logf("move leader %s → %s: %v", l, to, err)
			}
		}
	}
	t.Log("heal, restart everything, settle")
	c.Heal()
	c.Net.SetFaults(Faults{})
	for _, m := range stopped {
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitLeader()
	cancel()
	wg.Wait()
	c.WaitConverged()
	lead := c.WaitLeader().Server()
	ops, unknown := h.Len()
	h.Resolve(t, lead)
	_, unresolved := h.Len()
	t.Logf("seed %d: %d operations (%d with unknown outcome, %d after resolving), %d snapshots sent",
		seed, ops, unknown, unresolved, c.Net.TotalSnapshots())
	h.CheckLinearizable(t, seed)
	h.CheckSerializable(t, seed, lead)
}

// replaceMember removes a running follower and adds a new member in its
// place (after healing the network, so the cluster can agree on a leader).
func replaceMember(t *testing.T, c *Cluster, rng *rand.Rand) {
	t.Log("heal, then replace a member")
	c.Heal()
	lead := c.WaitLeader()
	var cands []*Member
	for _, m := range c.Running() {
		if m != lead {
			cands = append(cands, m)
		}
	}
	if len(cands) == 0 {
		return
	}
	gone := cands[rng.IntN(len(cands))]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := lead.Server().MemberRemove(ctx, gone.ID())
	cancel()
	t.Logf("remove %s: %v", gone, err)
	if err != nil {
		return
	}
	c.WaitFor("the removed member to stop", func() bool { return gone.Server() == nil })
	m, err := c.AddMember(false)
	t.Logf("add %v: %v", m, err)
	if err != nil {
		t.Fatalf("adding a member after removing %s: %v", gone, err)
	}
}

// runClient runs operations against random running members until ctx ends.
func runClient(ctx context.Context, c *Cluster, h *History, seed uint64, id int) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)+1))
	last := map[int]string{}
	for n := 0; ctx.Err() == nil; n++ {
		select {
		case <-c.Clock.After(time.Duration(rng.Int64N(int64(clientPause)))):
		case <-ctx.Done():
			return
		}
		run := c.Running()
		if len(run) == 0 {
			continue
		}
		m := run[rng.IntN(len(run))]
		s := m.Server()
		if s == nil {
			continue
		}
		key := rng.IntN(kit.NumKeys)
		if rng.Float64() < serializableRate {
			h.SerializableGet(ctx, m.Name, s, key)
			continue
		}
		in := kit.Input{Key: key, Value: fmt.Sprintf("c%d-%d", id, n)}
		switch r := rng.IntN(10); {
		case r < 4:
			in.Op = kit.OpGet
		case r < 7:
			in.Op = kit.OpPut
		case r < 9:
			in.Op = kit.OpCAS
			in.Expect = last[key]
		default:
			in.Op = kit.OpDelete
		}
		h.Do(ctx, id, s, in)
		if in.Op == kit.OpPut || in.Op == kit.OpCAS {
			last[key] = in.Value
		}
	}
}
