package conformance

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestRandomOps drives etcd and cairn with the same seeded random op
// sequence and compares every outcome. Each seed is a subtest on fresh
// servers; the first mismatch ends the seed, because after it the two
// stores may legitimately diverge.
func TestRandomOps(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	ops := 5000
	if testing.Short() {
		seeds, ops = seeds[:1], 400
	} else {
		// One fresh seed per run explores beyond the fixed ones; it is
		// logged so that a failure can be replayed.
		seeds = append(seeds, uint64(time.Now().UnixNano()))
	}
	if s := os.Getenv("CAIRN_CONFORMANCE_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CAIRN_CONFORMANCE_SEED=%q: %v", s, err)
		}
		seeds = []uint64{seed}
	}
	if s := os.Getenv("CAIRN_CONFORMANCE_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("CAIRN_CONFORMANCE_OPS=%q: %v", s, err)
		}
		ops = n
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d, %d ops (replay: CAIRN_CONFORMANCE_SEED=%d go test -run 'TestRandomOps' ./tests/conformance/)", seed, ops, seed)
			runSeed(t, seed, ops)
		})
	}
}

func runSeed(t *testing.T, seed uint64, n int) {
	oracle, subject, stop := startPair(t)
	g := newGen(seed)
	history := make([]op, 0, n)
	tally := map[string]int{}
	var first []op // the history up to the first difference
	reported := map[string]bool{}
	for i := range n {
		o := g.next()
		history = append(history, o)
		want, got := step(oracle, subject, o)
		tally[o.kind()+": "+summary(want)]++
		if !want.equal(got) {
			// Report the first difference of each kind of op; the
			// same bug tends to show on every op of its kind.
			if kind := o.kind(); !reported[kind] {
				reported[kind] = true
				t.Errorf("seed %d: op #%d differs\n%s", seed, i, describe(o, oracle, subject, want, got))
			}
			if first == nil {
				first = slices.Clone(history)
			}
			// After a read the stores still agree, so the run goes on to
			// find differences in other kinds of ops; after a write they
			// may not.
			if !o.readOnly() {
				t.Logf("seed %d: stopping after op #%d, a write", seed, i)
				break
			}
		}
		g.observe(o, want)
	}
	if first != nil {
		stop()
		if os.Getenv("CAIRN_CONFORMANCE_SHRINK") == "" {
			t.Logf("for a minimal op sequence that shows the first difference: CAIRN_CONFORMANCE_SHRINK=1 CAIRN_CONFORMANCE_SEED=%d go test -run 'TestRandomOps' ./tests/conformance/", seed)
			return
		}
		reportMinimal(t, first)
		return
	}
	t.Logf("seed %d: %d ops agree, final revision %d, compacted at %d", seed, n, g.rev, g.compactRev)
	if testing.Verbose() {
		keys := slices.Sorted(maps.Keys(tally))
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "\n  %5d %s", tally[k], k)
		}
		t.Logf("outcomes:%s", b.String())
	}
}

// reportMinimal replays shrinking subsequences of history against fresh
// servers and logs the shortest one whose last op still differs. The last
// op is always kept; the ops before it are dropped in halving chunks while
// the difference persists (a greedy delta debugging).
func reportMinimal(t *testing.T, history []op) {
	t.Helper()
	budget := 60 // server pairs to start, a few seconds each at most
	differs := func(ops []op) bool {
		if budget == 0 {
			return false
		}
		budget--
		oracle, subject, stop := startPair(t)
		defer stop()
		for i, o := range ops {
			want, got := step(oracle, subject, o)
			if !want.equal(got) {
				return i == len(ops)-1
			}
		}
		return false
	}
	if !differs(history) {
		t.Logf("the difference does not reproduce on a replay of the same %d ops (timing-dependent?)", len(history))
		return
	}
	last := history[len(history)-1]
	prefix := history[:len(history)-1]
	if differs([]op{last}) {
		prefix = nil
	}
	for chunk := (len(prefix) + 1) / 2; chunk >= 1 && budget > 0; chunk /= 2 {
		for start := 0; start < len(prefix) && budget > 0; {
			end := min(start+chunk, len(prefix))
			cand := append(append(append([]op(nil), prefix[:start]...), prefix[end:]...), last)
			if differs(cand) {
				prefix = cand[:len(cand)-1]
			} else {
				start = end
			}
		}
	}
	seq := append(append([]op(nil), prefix...), last)
	oracle, subject, stop := startPair(t)
	defer stop()
	var b strings.Builder
	fmt.Fprintf(&b, "minimal sequence (%d ops) on fresh servers:\n", len(seq))
	for i, o := range seq {
		want, got := step(oracle, subject, o)
		fmt.Fprintf(&b, "  %d. %v\n", i+1, o)
		if i == len(seq)-1 || !want.equal(got) {
			fmt.Fprintf(&b, "     %s: %v\n     %s: %v\n", oracle.name, want, subject.name, got)
		}
	}
	t.Log(b.String())
}

// summary classifies an outcome for the coverage tally.
func summary(o outcome) string {
	if o.failed() {
		return o.code.String() + " " + o.msg
	}
	switch r := o.resp.(type) {
	case *pb.TxnResponse:
		if r.Succeeded {
			return "ok, succeeded"
		}
		return "ok, failed"
	case *pb.RangeResponse:
		s := "ok, no kvs"
		switch {
		case r.More:
			s = "ok, more"
		case len(r.Kvs) > 0:
			s = "ok, kvs"
		}
		if o.chunks > 1 {
			s += ", several chunks"
		}
		return s
	}
	return "ok"
}
