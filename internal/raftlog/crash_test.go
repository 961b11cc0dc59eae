package raftlog

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.etcd.io/raft/v3/raftpb"
)

// The crash harness runs a random workload (appends synced and not, tail
// overwrites, appends reaching below the truncation point, compactions,
// resets, identities, syncs) on a crashable in-memory filesystem with 4 KiB
// segments, so segments roll and are removed often. It takes crash clones
// after every operation and, at random, in the middle of one (before any
// filesystem call the log makes), keeping all, half or none of what was not
// synced. Each clone must open without error to a state the workload passed
// through, no older than the last operation that promised durability before
// the crash, and must take a synced append and open again to the same
// state plus that append.
//
// CAIRN_CRASH_SEED replays one seed; CAIRN_CRASH_RUNS runs more seeds.

type crashPoint struct {
	fs     *vfs.MemFS
	lo, hi int // the states it may be in
	where  string
}

func TestCrash(t *testing.T) {
	seeds := []uint64{}
	if s := os.Getenv("CAIRN_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		must(t, err)
		seeds = append(seeds, v)
	} else {
		runs := 12
		if s := os.Getenv("CAIRN_CRASH_RUNS"); s != "" {
			runs, _ = strconv.Atoi(s)
		}
		for i := range runs {
			seeds = append(seeds, uint64(i+1))
		}
	}
	for _, seed := range seeds {
		for _, p := range []int{0, 50, 100} {
			t.Run(fmt.Sprintf("seed=%d/unsynced=%d", seed, p), func(t *testing.T) {
				runCrash(t, seed, p)
			})
		}
	}
}

func runCrash(t *testing.T, seed uint64, p int) {
	rng := rand.New(rand.NewPCG(seed, uint64(p)))
	mem := vfs.NewCrashableMem()
	var (
		points     []crashPoint
		lo, hi     int // the states a crash now may show
		inOp       string
		midOpCrash = 0.03
	)
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if inOp != "" && rng.Float64() < midOpCrash {
			c := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rng})
			points = append(points, crashPoint{c, lo, hi, fmt.Sprintf("during %s before %v %s", inOp, op.Kind, op.Path)})
		}
		return nil
	}))
	opts := Options{SegmentBytes: 4096}
	l, err := Open(fs, "log", opts)
	must(t, err)
	m := &model{}
	states := []*model{m.clone()}
	var history []string
	term := uint64(1)

	const ops = 120
	for k := 1; k <= ops; k++ {
		var desc string
		durable := false
		// A crash in the middle of this operation may show the state it
		// reaches, index len(states).
		hi = len(states)
		trunc, last := m.truncIndex, m.last()
		r := rng.IntN(100)
		switch {
		case r < 55 || last == trunc && r < 80:
			// Append, maybe overwriting the tail or reaching below the
			// truncation point.
			from := last + 1
			if rng.IntN(4) == 0 && last > 0 {
				back := uint64(rng.IntN(6))
				from = max(last+1, back+1) - back
				term++
			}
			n := uint64(rng.IntN(5))
			var es []*raftpb.Entry
			for i := from; i < from+n; i++ {
				size := rng.IntN(300)
				if rng.IntN(20) == 0 {
					size = 5000 // larger than a segment
				}
				es = append(es, ent(i, term, fmt.Sprintf("%d.%d.%s", k, i, strings.Repeat("x", size))))
			}
			var h *raftpb.HardState
			if rng.IntN(2) == 0 {
				h = hs(term, uint64(rng.IntN(3)), min(last, trunc+uint64(rng.IntN(5))))
			}
			sync := rng.IntN(2) == 0
			desc = fmt.Sprintf("append hs=%v [%d,%d) sync=%v", h != nil, from, from+n, sync)
			inOp = desc
			must(t, l.Append(h, es, sync))
			m.append(h, es)
			durable = sync
		case r < 75:
			if last == trunc {
				continue
			}
			i := trunc + 1 + uint64(rng.IntN(int(last-trunc)))
			desc = fmt.Sprintf("compact %d", i)
			inOp = desc
			must(t, l.Compact(i))
			m.compact(i)
		case r < 80:
			i := last + uint64(rng.IntN(10))
			if rng.IntN(3) == 0 && trunc > 0 {
				i = trunc - 1
			}
			term++
			var h *raftpb.HardState
			if rng.IntN(2) == 0 {
				h = hs(term, 1, i)
			}
			desc = fmt.Sprintf("reset %d/%d hs=%v", i, term, h != nil)
			inOp = desc
			must(t, l.Reset(i, term, h))
			m.reset(i, term, h)
			durable = true
		case r < 88:
			id := []byte(fmt.Sprintf("id-%d", k))
			desc = fmt.Sprintf("identity %s", id)
			inOp = desc
			must(t, l.SetIdentity(id))
			m.identity = id
			durable = true
		default:
			desc = "sync"
			inOp = desc
			must(t, l.Sync())
			durable = true
		}
		inOp = ""
		history = append(history, desc)
		check(t, l, m)
		states = append(states, m.clone())
		hi = len(states) - 1
		if durable {
			lo = hi
		}
		points = append(points, crashPoint{mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rng}), lo, hi, "after " + desc})
		for _, c := range points {
			verifyCrash(t, c, states, opts, history, rng)
		}
		points = points[:0]
	}
	must(t, l.Close())
}

// verifyCrash opens the clone in c and checks it against states[c.lo..c.hi].
func verifyCrash(t *testing.T, c crashPoint, states []*model, opts Options, history []string, rng *rand.Rand) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "crash %s: %s\nallowed states %d..%d:\n", c.where, fmt.Sprintf(format, args...), c.lo, min(c.hi, len(states)-1))
		for j := c.lo; j <= min(c.hi, len(states)-1); j++ {
			fmt.Fprintf(&b, "  %d: %v\n", j, states[j])
		}
		fmt.Fprintf(&b, "history: %s", strings.Join(history, "; "))
		t.Fatal(b.String())
	}
	l, err := Open(c.fs, "log", opts)
	if err != nil {
		fail("open: %v", err)
	}
	match := -1
	var diffs []string
	for j := c.lo; j <= min(c.hi, len(states)-1); j++ {
		d := diff(l, states[j])
		if d == "" {
			match = j
			break
		}
		diffs = append(diffs, d)
	}
	if match < 0 {
		fail("the log matches no allowed state: %s", strings.Join(diffs, " / "))
	}
	// The recovered log takes a synced append and keeps it.
	m := states[match].clone()
	next := m.last() + 1
	es := []*raftpb.Entry{ent(next, 1000, "after-crash")}
	if err := l.Append(hs(1000, 1, 0), es, true); err != nil {
		fail("append after recovery: %v", err)
	}
	m.append(hs(1000, 1, 0), es)
	if d := diff(l, m); d != "" {
		fail("after the append: %s", d)
	}
	// Crash again at once (nothing unsynced is kept), then reopen.
	again := c.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	_ = l.Close()
	l2, err := Open(again, "log", opts)
	if err != nil {
		fail("reopen after the append: %v", err)
	}
	if d := diff(l2, m); d != "" {
		fail("reopened after the append: %s", d)
	}
	_ = l2.Close()
}
