package kit

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestModel checks Model on small histories whose verdict is known, so a
// bug in the model cannot hide a bug in cairn: a model that accepts
// everything would pass every cluster and process test.
func TestModel(t *testing.T) {
	const end = 1 << 40 // the return of an operation whose outcome is unknown
	op := func(call, ret int64, in Input, out Output) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	put := func(k int, v string) Input { return Input{Op: OpPut, Key: k, Value: v} }
	get := func(k int) Input { return Input{Op: OpGet, Key: k} }
	cas := func(k int, expect, v string) Input { return Input{Op: OpCAS, Key: k, Expect: expect, Value: v} }
	del := func(k int) Input { return Input{Op: OpDelete, Key: k} }
	other := func(v string) Input { return Input{Op: OpPutOther, Value: v} }
	rev := func(r int64) Output { return Output{Rev: r} }
	read := func(r int64, v string, create, mod, version int64) Output {
		return Output{Rev: r, KV: KV{Value: v, Create: create, Mod: mod, Version: version, Exists: true}}
	}
	unknown := Output{Unknown: true}
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"read your write", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, get(0), read(2, "a", 2, 2, 1))}, true},
		{"a new store is at revision 1", []porcupine.Operation{
			op(0, 1, get(0), rev(1))}, true},
		{"a read reports the store's revision", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, get(1), rev(1))}, false},
		{"stale read", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, put(0, "b"), rev(3)),
			op(4, 5, get(0), read(3, "a", 2, 2, 1))}, false},
		{"version counts the puts", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, put(0, "b"), rev(3)),
			op(4, 5, get(0), read(3, "b", 2, 3, 2))}, true},
		{"wrong version", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, put(0, "b"), rev(3)),
			op(4, 5, get(0), read(3, "b", 2, 3, 1))}, false},
		{"lost acknowledged write", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, get(0), rev(2))}, false},
		{"two writes at one revision", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(0, 1, put(1, "b"), rev(2))}, false},
		{"concurrent writes take their revisions in either order", []porcupine.Operation{
			op(0, 5, put(0, "a"), rev(3)), op(0, 5, put(1, "b"), rev(2)),
			op(6, 7, get(0), read(3, "a", 3, 3, 1))}, true},
		{"concurrent reads either way", []porcupine.Operation{
			op(0, 10, put(0, "a"), rev(2)), op(1, 2, get(0), rev(1)),
			op(3, 4, get(0), read(2, "a", 2, 2, 1))}, true},
		{"read going back in time", []porcupine.Operation{
			op(0, 10, put(0, "a"), rev(2)), op(1, 2, get(0), read(2, "a", 2, 2, 1)),
			op(3, 4, get(0), rev(1))}, false},
		{"unknown put seen later", []porcupine.Operation{
			op(0, end, put(0, "a"), unknown), op(5, 6, get(0), read(2, "a", 2, 2, 1))}, true},
		{"unknown put never seen", []porcupine.Operation{
			op(0, end, put(0, "a"), unknown), op(5, 6, get(0), rev(1))}, true},
		{"unknown put seen then unseen", []porcupine.Operation{
			op(0, end, put(0, "a"), unknown), op(5, 6, get(0), read(2, "a", 2, 2, 1)),
			op(7, 8, get(0), rev(2))}, false},
		{"swap", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, cas(0, "a", "b"), Output{Rev: 3, Succeeded: true}),
			op(4, 5, cas(0, "a", "c"), Output{Rev: 3, KV: KV{Value: "b", Create: 2, Mod: 3, Version: 2, Exists: true}}),
			op(6, 7, get(0), read(3, "b", 2, 3, 2))}, true},
		{"swap that should have failed", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, cas(0, "z", "b"), Output{Rev: 3, Succeeded: true})}, false},
		{"swap that should have succeeded", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, cas(0, "a", "b"), Output{Rev: 2, KV: KV{Value: "a", Create: 2, Mod: 2, Version: 1, Exists: true}})}, false},
		{"create if absent", []porcupine.Operation{
			op(0, 1, cas(0, "", "a"), Output{Rev: 2, Succeeded: true}),
			op(2, 3, cas(0, "", "b"), Output{Rev: 2, KV: KV{Value: "a", Create: 2, Mod: 2, Version: 1, Exists: true}})}, true},
		{"create over a present key", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(2)), op(2, 3, cas(0, "", "b"), Output{Rev: 3, Succeeded: true})}, false},
		{"delete", []porcupine.Operation{
			op(0, 1, del(0), rev(1)), op(2, 3, put(0, "a"), rev(2)),
			op(4, 5, del(0), Output{Rev: 3, Deleted: 1}), op(6, 7, get(0), rev(3)),
			op(8, 9, put(0, "b"), rev(4)), op(10, 11, get(0), read(4, "b", 4, 4, 1))}, true},
		{"delete of an absent key takes a revision", []porcupine.Operation{
			op(0, 1, del(0), Output{Rev: 2})}, false},
		{"other writes take revisions", []porcupine.Operation{
			op(0, 1, other("x"), rev(2)), op(2, 3, put(0, "a"), rev(3)),
			op(4, 5, get(0), read(3, "a", 3, 3, 1))}, true},
		{"a write the history lacks", []porcupine.Operation{
			op(0, 1, put(0, "a"), rev(3))}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(Model, tc.ops); got != tc.want {
				t.Errorf("linearizable = %v, want %v", got, tc.want)
			}
		})
	}
}
