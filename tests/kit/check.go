package kit

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// checkTimeout bounds a linearizability check; a history it cannot decide
// in that time fails the test, as histories are sized to be checked in
// seconds.
const checkTimeout = 5 * time.Minute

// maxDescribed is how many operations a failure prints; a longer history is
// left to the visualization.
const maxDescribed = 400

// Resolve settles the outcome of the writes in ops whose outcome is
// unknown, from applied, the revision at which each value was written as
// the converged store's history shows it (values must be unique): a put,
// swap or other put whose value was applied at revision R gets R as its
// known outcome (its return stays open: it may have applied any time after
// its call); one whose value never applied is left out, as it had no
// effect. Unknown deletes stay unknown. This keeps the check fast: porcupine
// may place an operation with an unknown outcome anywhere after its call,
// and its search grows with each one. Resolve returns a new slice.
func Resolve(ops []porcupine.Operation, applied map[string]int64) []porcupine.Operation {
	kept := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		if out.Unknown && (in.Op == OpPut || in.Op == OpCAS || in.Op == OpPutOther) {
			rev, ok := applied[in.Value]
			if !ok {
				continue
			}
			op.Output = Output{Rev: rev, Succeeded: true}
		}
		kept = append(kept, op)
	}
	return kept
}

// CheckLinearizable checks ops against Model. On a violation it writes
// porcupine's visualization to a temporary file and fails the test with
// seed, the file's path and, when it is short, the history; it fails too
// when the check does not finish within a few minutes.
func CheckLinearizable(t testing.TB, ops []porcupine.Operation, seed uint64) {
	t.Helper()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(Model, ops, checkTimeout)
	switch res {
	case porcupine.Ok:
		t.Logf("the history of %d operations is linearizable (checked in %v)", len(ops), time.Since(start).Round(time.Millisecond))
		return
	case porcupine.Unknown:
		t.Fatalf("seed %d: the linearizability check of %d operations did not finish within %v", seed, len(ops), checkTimeout)
	}
	where := "(could not write the visualization)"
	if f, err := os.CreateTemp("", fmt.Sprintf("cairn-history-seed%d-*.html", seed)); err == nil {
		if err := porcupine.Visualize(Model, info, f); err == nil {
			where = f.Name()
		}
		f.Close()
	}
	t.Fatalf("seed %d: the history of %d operations is NOT linearizable; visualization in %s\n%s", seed, len(ops), where, describeHistory(ops))
}

// describeHistory lists ops by call time, or says how many there are when
// they are too many to read.
func describeHistory(ops []porcupine.Operation) string {
	if len(ops) > maxDescribed {
		return fmt.Sprintf("(%d operations: too many to list; see the visualization)", len(ops))
	}
	ops = slices.Clone(ops)
	slices.SortStableFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var b strings.Builder
	for _, op := range ops {
		ret := "∞"
		if op.Return < math.MaxInt64/2 {
			ret = fmt.Sprint(time.Duration(op.Return))
		}
		fmt.Fprintf(&b, "  client %d [%v, %s] %s\n", op.ClientId, time.Duration(op.Call), ret,
			Model.DescribeOperation(op.Input, op.Output))
	}
	return b.String()
}
