package api

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/pkg/v3/adt"
	etcdtxn "go.etcd.io/etcd/server/v3/etcdserver/txn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The validation model: what etcd 3.7 answers each request with before it
// touches the store, computed another way than validate.go computes it, so
// that the fuzz targets can hold validate.go to the exact error for every
// request they generate. The model is itself held to the table of cases
// that TestValidationMatchesEtcd checks against a real etcd
// (TestValidationModel).
//
// The per-field checks are etcd's rules in etcd's order; there is no other
// way to state them. The duplicate-key rule is where an independent
// formulation pays: validate.go follows etcd's algorithm (deletes of a level
// first, nested txns in order, then the level's puts, intervals gathered on
// the way); the model instead lists every write of a branch with its path
// through the nested txns and decides each pair of writes on its own, with
// etcd's own interval type (pkg/v3/adt) deciding whether a delete covers a
// key.

// modelRange is etcd's check of a Range.
func modelRange(r *pb.RangeRequest) error {
	switch {
	case len(r.GetKey()) == 0:
		return rpctypes.ErrGRPCEmptyKey
	case pb.RangeRequest_SortOrder_name[int32(r.GetSortOrder())] == "":
		return rpctypes.ErrGRPCInvalidSortOption
	case pb.RangeRequest_SortTarget_name[int32(r.GetSortTarget())] == "":
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

// modelRangeStream is etcd's check of a RangeStream, with etcd's own
// ordering and filter predicates.
func modelRangeStream(r *pb.RangeRequest) error {
	if err := modelRange(r); err != nil {
		return err
	}
	if !etcdtxn.IsDefaultOrdering(r.GetSortTarget(), r.GetSortOrder()) {
		return status.Error(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if etcdtxn.HasRevisionFilters(r) {
		return status.Error(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	return nil
}

// modelPut is etcd's check of a Put.
func modelPut(r *pb.PutRequest) error {
	switch {
	case len(r.GetKey()) == 0:
		return rpctypes.ErrGRPCEmptyKey
	case r.GetIgnoreValue() && len(r.GetValue()) > 0:
		return rpctypes.ErrGRPCValueProvided
	case r.GetIgnoreLease() && r.GetLease() != 0:
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

// modelDelete is etcd's check of a DeleteRange.
func modelDelete(r *pb.DeleteRangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// modelTxn is what etcd answers a Txn with before applying it (and, for
// the txns that crash etcd, what cairn answers instead: see
// checkKeptAfterFromKeyDelete): the first failing per-op check, or else
// ErrGRPCDuplicateKey if any pair of writes of one branch conflicts.
func modelTxn(r *pb.TxnRequest, maxTxnOps int) error {
	if err := modelTxnOps(r, maxTxnOps); err != nil {
		return err
	}
	for _, branch := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		ws := modelWrites(branch, nil, nil)
		for i := range ws {
			for j := range ws {
				if i != j && (ws[i].overwrites(ws[j]) || ws[i].keptAfterFromKeyDelete(ws[j])) {
					return rpctypes.ErrGRPCDuplicateKey
				}
			}
		}
	}
	return nil
}

// modelTxnOps checks the op counts and every op, depth first, in request
// order. A nested txn's limit is what its parent's largest list leaves.
func modelTxnOps(r *pb.TxnRequest, limit int) error {
	largest := max(len(r.GetCompare()), len(r.GetSuccess()), len(r.GetFailure()))
	if largest > limit {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.GetCompare() {
		if len(c.GetKey()) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, op := range append(append([]*pb.RequestOp(nil), r.GetSuccess()...), r.GetFailure()...) {
		var err error
		switch {
		case op.GetRequestRange() != nil:
			err = modelRange(op.GetRequestRange())
		case op.GetRequestPut() != nil:
			err = modelPut(op.GetRequestPut())
		case op.GetRequestDeleteRange() != nil:
			err = modelDelete(op.GetRequestDeleteRange())
		case op.GetRequestTxn() != nil:
			err = modelTxnOps(op.GetRequestTxn(), limit-largest)
		default:
			err = rpctypes.ErrGRPCKeyNotFound
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// modelStep is one step of a write's path from its branch: the index of
// the op in a list and, for a nested txn, the branch taken (0 success, 1
// failure; -1 for the write itself).
type modelStep struct{ index, branch int }

// modelWrite is a put or a delete of a txn branch.
type modelWrite struct {
	path  []modelStep
	order int // position in the order the txn applies its ops
	put   *pb.PutRequest
	del   *pb.DeleteRangeRequest
}

// modelWrites lists the writes of ops, nested txns included, in apply
// order.
func modelWrites(ops []*pb.RequestOp, path []modelStep, out []modelWrite) []modelWrite {
	for i, op := range ops {
		here := append(path[:len(path):len(path)], modelStep{i, -1})
		switch {
		case op.GetRequestPut() != nil:
			out = append(out, modelWrite{path: here, order: len(out), put: op.GetRequestPut()})
		case op.GetRequestDeleteRange() != nil:
			out = append(out, modelWrite{path: here, order: len(out), del: op.GetRequestDeleteRange()})
		case op.GetRequestTxn() != nil:
			for b, branch := range [][]*pb.RequestOp{op.GetRequestTxn().GetSuccess(), op.GetRequestTxn().GetFailure()} {
				inner := append(path[:len(path):len(path)], modelStep{i, b})
				out = modelWrites(branch, inner, out)
			}
		}
	}
	return out
}

// split finds where the paths of w and o part: the depth, whether they
// part on ops of one list (rather than on the two branches of one nested
// txn, which never both run), and whether each is an op of that list
// itself rather than inside a nested txn there.
func (w modelWrite) split(o modelWrite) (sameRun bool, wDirect, oDirect bool, wFirst bool) {
	d := 0
	for w.path[d] == o.path[d] {
		d++
	}
	if w.path[d].index == o.path[d].index {
		return false, false, false, false
	}
	return true, len(w.path) == d+1, len(o.path) == d+1, w.path[d].index < o.path[d].index
}

// covers reports whether delete d removes key, by etcd's interval rules:
// [key, range_end) or the key alone, range_end "\x00" being an ordinary
// bound. (etcd drops a nested txn's intervals that end at "\x00" when it
// gathers them, but those hold no non-empty key anyway.)
func covers(d *pb.DeleteRangeRequest, key []byte) bool {
	iv := adt.NewStringAffinePoint(string(d.GetKey()))
	if len(d.GetRangeEnd()) > 0 {
		iv = adt.NewStringAffineInterval(string(d.GetKey()), string(d.GetRangeEnd()))
	}
	t := adt.NewIntervalTree()
	t.Insert(iv, nil)
	return t.Intersects(adt.NewStringAffinePoint(string(key)))
}

// overwrites reports whether etcd refuses the pair (w, o) as writing a key
// twice. Two writes that can run in the same execution conflict when both
// put one key, or one puts a key the other deletes, except where etcd's
// order of checks lets it pass: a put inside a nested txn followed by a
// delete inside a later nested txn of the same list.
func (w modelWrite) overwrites(o modelWrite) bool {
	sameRun, wDirect, oDirect, wFirst := w.split(o)
	switch {
	case !sameRun:
		return false
	case w.put != nil && o.put != nil:
		return bytes.Equal(w.put.GetKey(), o.put.GetKey())
	case w.del != nil && o.put != nil:
		// w deletes, o puts: a delete of a list itself covers every put
		// under it; a delete inside a nested txn only the puts of later
		// nested txns and of the list itself.
		if !covers(w.del, o.put.GetKey()) {
			return false
		}
		return wDirect || oDirect || wFirst
	}
	return false // two deletes, or (w put, o delete) which the swapped pair decides
}

// keptAfterFromKeyDelete reports whether w is a from-key delete (range_end
// "\x00") that runs before o, an ignore_value or ignore_lease put of a key
// at or after w's in the same execution: the pair that crashes etcd and
// that cairn refuses as a duplicate key.
func (w modelWrite) keptAfterFromKeyDelete(o modelWrite) bool {
	if w.del == nil || !bytes.Equal(w.del.GetRangeEnd(), []byte{0}) || o.put == nil {
		return false
	}
	if !o.put.GetIgnoreValue() && !o.put.GetIgnoreLease() {
		return false
	}
	sameRun, _, _, _ := w.split(o)
	return sameRun && w.order < o.order && bytes.Compare(o.put.GetKey(), w.del.GetKey()) >= 0
}

// modelValidate is the model's answer for one request.
func modelValidate(req any, maxTxnOps int) error {
	switch r := req.(type) {
	case *pb.RangeRequest:
		return modelRange(r)
	case *pb.PutRequest:
		return modelPut(r)
	case *pb.DeleteRangeRequest:
		return modelDelete(r)
	case *pb.TxnRequest:
		return modelTxn(r, maxTxnOps)
	}
	panic("modelValidate: unknown request")
}

// sameError reports whether two validation answers are the same for a
// client: both nil, or the same status code and message.
func sameError(got, want error) bool {
	if got == nil || want == nil {
		return got == want
	}
	g, w := status.Convert(got), status.Convert(want)
	return g.Code() == w.Code() && g.Message() == w.Message()
}

// TestValidationModel holds the model to the cases whose answers etcd
// itself confirms (TestValidationMatchesEtcd) and to the txns cairn
// refuses where etcd crashes.
func TestValidationModel(t *testing.T) {
	for _, tc := range append(append([]validationCase(nil), validationCases...), keptAfterFromKeyDeleteCases...) {
		if got := modelValidate(tc.req, DefaultMaxTxnOps); !sameError(got, tc.want) {
			t.Errorf("%s: the model answers %v, etcd %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		req  *pb.RangeRequest
		want error
	}{
		{&pb.RangeRequest{Key: []byte("a")}, nil},
		{&pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_ASCEND}, nil},
		{&pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_KEY}, nil},
		{&pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND}, errStreamSort},
		{&pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_MOD}, errStreamSort},
		{&pb.RangeRequest{Key: []byte("a"), MaxCreateRevision: 3}, errStreamRevFilter},
		{&pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND, MinModRevision: 3}, errStreamSort},
		{&pb.RangeRequest{SortOrder: pb.RangeRequest_DESCEND}, rpctypes.ErrGRPCEmptyKey},
	} {
		if got := modelRangeStream(tc.req); !sameError(got, tc.want) {
			t.Errorf("RangeStream %v: the model answers %v, want %v", tc.req, got, tc.want)
		}
	}
}
