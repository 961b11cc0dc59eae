package kit

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// NumKeys is how many keys a history of the model uses: few, so
// operations collide.
const NumKeys = 4

// KeyPrefix starts the names of the model's keys; no other key a test
// writes may start with it.
const KeyPrefix = "key"

// Key returns the name of model key i.
func Key(i int) string { return fmt.Sprintf("%s%d", KeyPrefix, i) }

// OpKind is a client operation of the key-value model.
type OpKind uint8

// The operations histories record.
const (
	// OpPut puts Value at Key.
	OpPut OpKind = iota
	// OpGet reads Key linearizably.
	OpGet
	// OpCAS is a txn: if Key's value is Expect, put Value, else read Key.
	// An empty Expect asks for the key to be absent instead (the txn
	// compares its create revision with 0): a value compare never holds on
	// an absent key in etcd.
	OpCAS
	// OpDelete deletes Key.
	OpDelete
	// OpPutOther puts a key outside the model's keys that is written once
	// (a ledger entry, say): it takes the next revision and changes none of
	// the model's keys. Key is unused. A history must record every write
	// to the store, these included, for the revisions to add up.
	OpPutOther
)

// Input is an operation as a client called it.
type Input struct {
	Op     OpKind
	Key    int
	Value  string
	Expect string
}

// KV is a key's state as etcd reports it.
type KV struct {
	Value                string
	Create, Mod, Version int64
	Exists               bool
}

// Output is what a client saw; Unknown when the call failed in a way that
// leaves its effect open (a timeout: it may apply later, or never).
type Output struct {
	Unknown   bool
	Rev       int64 // the response header's revision
	Succeeded bool  // OpCAS
	KV        KV    // OpGet, and OpCAS when it failed
	Deleted   int64 // OpDelete
}

// modelState is the whole key space and the store's revision. It is a
// comparable value, so porcupine can cache and compare states.
type modelState struct {
	rev int64
	kvs [NumKeys]KV
}

func (s modelState) put(k int, v string) modelState {
	s.rev++
	kv := s.kvs[k]
	if !kv.Exists {
		kv = KV{Exists: true, Create: s.rev}
	}
	kv.Value, kv.Mod = v, s.rev
	kv.Version++
	s.kvs[k] = kv
	return s
}

// Model is etcd's key-value semantics over NumKeys keys, starting from a
// new store (revision 1, no keys): every write that changes something takes
// the next revision; a key's version counts its puts since it was created;
// a read sees the latest write and reports the store's revision.
var Model = porcupine.Model{
	Init: func() any { return modelState{rev: 1} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(modelState), input.(Input), output.(Output)
		cur := st.kvs[in.Key]
		switch in.Op {
		case OpPut:
			next := st.put(in.Key, in.Value)
			return out.Unknown || out.Rev == next.rev, next
		case OpGet:
			return out.Rev == st.rev && out.KV == cur, st
		case OpCAS:
			holds := cur.Exists && cur.Value == in.Expect
			if in.Expect == "" {
				holds = !cur.Exists
			}
			if holds {
				next := st.put(in.Key, in.Value)
				return out.Unknown || out.Succeeded && out.Rev == next.rev, next
			}
			return out.Unknown || !out.Succeeded && out.Rev == st.rev && out.KV == cur, st
		case OpDelete:
			if !cur.Exists {
				return out.Unknown || out.Deleted == 0 && out.Rev == st.rev, st
			}
			next := st
			next.rev++
			next.kvs[in.Key] = KV{}
			return out.Unknown || out.Deleted == 1 && out.Rev == next.rev, next
		case OpPutOther:
			next := st
			next.rev++
			return out.Unknown || out.Rev == next.rev, next
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		var call string
		switch in.Op {
		case OpPut:
			call = fmt.Sprintf("put(%s, %q)", Key(in.Key), in.Value)
		case OpGet:
			call = fmt.Sprintf("get(%s)", Key(in.Key))
		case OpCAS:
			call = fmt.Sprintf("cas(%s, %q→%q)", Key(in.Key), in.Expect, in.Value)
		case OpDelete:
			call = fmt.Sprintf("delete(%s)", Key(in.Key))
		case OpPutOther:
			call = fmt.Sprintf("put(other, %q)", in.Value)
		}
		if out.Unknown {
			return call + " → ?"
		}
		res := fmt.Sprintf("rev %d", out.Rev)
		switch in.Op {
		case OpGet:
			res += " " + DescribeKV(out.KV)
		case OpCAS:
			if out.Succeeded {
				res += " ok"
			} else {
				res += " failed, " + DescribeKV(out.KV)
			}
		case OpDelete:
			res += fmt.Sprintf(" deleted %d", out.Deleted)
		}
		return call + " → " + res
	},
	DescribeState: func(state any) string {
		st := state.(modelState)
		s := fmt.Sprintf("rev %d", st.rev)
		for i, kv := range st.kvs {
			s += fmt.Sprintf(", %s=%s", Key(i), DescribeKV(kv))
		}
		return s
	},
}

// DescribeKV formats kv for a failure message.
func DescribeKV(kv KV) string {
	if !kv.Exists {
		return "<none>"
	}
	return fmt.Sprintf("%q(c%d m%d v%d)", kv.Value, kv.Create, kv.Mod, kv.Version)
}
