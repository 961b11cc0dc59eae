package process

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// opKind is an operation of the load on a hot key.
type opKind uint8

const (
	opGet opKind = iota
	opPut
	opDelete
	opCAS
)

// kvInput is what a client asked.
type kvInput struct {
	op     opKind
	key    string
	value  string // opPut, opCAS: the new value (unique in the history)
	expect string // opCAS: the value it must find ("" = the key is absent)
}

// kvOutput is what it learned.
type kvOutput struct {
	// unknown: the request failed or timed out, so it may have taken effect
	// or not; such operations return at the end of the history.
	unknown bool
	value   string // opGet: the value read ("" = absent)
	ok      bool   // opDelete: something was deleted; opCAS: it swapped
}

// kvModel is a register per key: a key holds one value or is absent ("").
// Values are unique, so a read pins down which write it saw.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.op {
		case opGet:
			return out.value == s, s
		case opPut:
			return true, in.value
		case opDelete:
			if out.unknown {
				return true, ""
			}
			return out.ok == (s != ""), ""
		case opCAS:
			if out.unknown || out.ok {
				if s == in.expect {
					return true, in.value
				}
				// A swap that failed to take effect is only possible when
				// its outcome is unknown.
				return out.unknown, s
			}
			return s != in.expect, s
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		res := ""
		switch in.op {
		case opGet:
			res = fmt.Sprintf("get(%s) -> %q", in.key, out.value)
		case opPut:
			res = fmt.Sprintf("put(%s, %q)", in.key, in.value)
		case opDelete:
			res = fmt.Sprintf("delete(%s) -> %v", in.key, out.ok)
		case opCAS:
			res = fmt.Sprintf("cas(%s, %q -> %q) -> %v", in.key, in.expect, in.value, out.ok)
		}
		if out.unknown {
			res += " (outcome unknown)"
		}
		return res
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// checkTimeout bounds the linearizability check; a history it cannot decide
// in that time fails the test, as the load is sized to be checked in
// seconds.
const checkTimeout = 5 * time.Minute

// checkLinearizable checks the history and, when it is not linearizable,
// writes porcupine's visualization to a temporary file and fails with its
// path and the seed.
func checkLinearizable(t testing.TB, ops []porcupine.Operation, seed uint64) {
	t.Helper()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, checkTimeout)
	switch res {
	case porcupine.Ok:
		t.Logf("history of %d operations on the hot keys is linearizable (checked in %v)", len(ops), time.Since(start).Round(time.Millisecond))
		return
	case porcupine.Unknown:
		t.Fatalf("seed %d: the linearizability check of %d operations did not finish within %v", seed, len(ops), checkTimeout)
	}
	f, err := os.CreateTemp("", "cairn-processtest-history-*.html")
	if err != nil {
		t.Fatalf("seed %d: the history of %d operations is NOT linearizable (and the visualization could not be written: %v)", seed, len(ops), err)
	}
	defer f.Close()
	if err := porcupine.Visualize(kvModel, info, f); err != nil {
		t.Fatalf("seed %d: the history of %d operations is NOT linearizable (and the visualization failed: %v)", seed, len(ops), err)
	}
	t.Fatalf("seed %d: the history of %d operations is NOT linearizable; visualization: %s", seed, len(ops), f.Name())
}

// TestModel checks the model on small histories whose verdict is known, so
// a bug in the model cannot hide a bug in cairn.
func TestModel(t *testing.T) {
	op := func(call, ret int64, in kvInput, out kvOutput) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	put := func(k, v string) kvInput { return kvInput{op: opPut, key: k, value: v} }
	get := func(k string) kvInput { return kvInput{op: opGet, key: k} }
	cas := func(k, expect, v string) kvInput { return kvInput{op: opCAS, key: k, expect: expect, value: v} }
	del := func(k string) kvInput { return kvInput{op: opDelete, key: k} }
	const end = 1 << 40
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"read your write", []porcupine.Operation{
			op(0, 1, put("a", "1"), kvOutput{}), op(2, 3, get("a"), kvOutput{value: "1"})}, true},
		{"stale read", []porcupine.Operation{
			op(0, 1, put("a", "1"), kvOutput{}), op(2, 3, put("a", "2"), kvOutput{}),
			op(4, 5, get("a"), kvOutput{value: "1"})}, false},
		{"lost acknowledged write", []porcupine.Operation{
			op(0, 1, put("a", "1"), kvOutput{}), op(2, 3, get("a"), kvOutput{value: ""})}, false},
		{"concurrent reads either way", []porcupine.Operation{
			op(0, 10, put("a", "1"), kvOutput{}), op(1, 2, get("a"), kvOutput{value: ""}),
			op(3, 4, get("a"), kvOutput{value: "1"})}, true},
		{"read going back in time", []porcupine.Operation{
			op(0, 10, put("a", "1"), kvOutput{}), op(1, 2, get("a"), kvOutput{value: "1"}),
			op(3, 4, get("a"), kvOutput{value: ""})}, false},
		{"unknown put seen later", []porcupine.Operation{
			op(0, end, put("a", "1"), kvOutput{unknown: true}), op(5, 6, get("a"), kvOutput{value: "1"})}, true},
		{"unknown put never seen", []porcupine.Operation{
			op(0, end, put("a", "1"), kvOutput{unknown: true}), op(5, 6, get("a"), kvOutput{value: ""})}, true},
		{"unknown put seen then unseen", []porcupine.Operation{
			op(0, end, put("a", "1"), kvOutput{unknown: true}), op(5, 6, get("a"), kvOutput{value: "1"}),
			op(7, 8, get("a"), kvOutput{value: ""})}, false},
		{"swap", []porcupine.Operation{
			op(0, 1, put("a", "1"), kvOutput{}), op(2, 3, cas("a", "1", "2"), kvOutput{ok: true}),
			op(4, 5, cas("a", "1", "3"), kvOutput{ok: false}), op(6, 7, get("a"), kvOutput{value: "2"})}, true},
		{"swap that should have failed", []porcupine.Operation{
			op(0, 1, put("a", "1"), kvOutput{}), op(2, 3, cas("a", "0", "2"), kvOutput{ok: true})}, false},
		{"swap that should have succeeded", []porcupine.Operation{
			op(0, 1, cas("a", "", "1"), kvOutput{ok: false})}, false},
		{"delete", []porcupine.Operation{
			op(0, 1, del("a"), kvOutput{ok: false}), op(2, 3, put("a", "1"), kvOutput{}),
			op(4, 5, del("a"), kvOutput{ok: true}), op(6, 7, get("a"), kvOutput{value: ""})}, true},
		{"keys are independent", []porcupine.Operation{
			op(0, 1, put("a", "1"), kvOutput{}), op(2, 3, get("b"), kvOutput{value: ""})}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(kvModel, tc.ops); got != tc.want {
				t.Errorf("linearizable = %v, want %v", got, tc.want)
			}
		})
	}
}
