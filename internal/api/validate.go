package api

import (
	"bytes"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Request validation happens here, before a request reaches the server, and
// answers with exactly the error etcd's gRPC layer gives for the same request,
// so a client cannot tell the two apart. The checks never panic on any input:
// nil sub-messages (which the protobuf decoder never produces but a Go caller
// can) are treated as the empty message they stand for.

// checkRange validates a RangeRequest: a key is required and both sort fields
// must name a known enum value.
func checkRange(r *pb.RangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.GetSortOrder())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.GetSortTarget())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

// Errors RangeStream gives for the options it cannot stream, as etcd does:
// both would need every key in memory before the first chunk could be sent.
var (
	errStreamSort      = status.Error(codes.Unimplemented, "RangeStream does not support custom sort orders")
	errStreamRevFilter = status.Error(codes.Unimplemented, "RangeStream does not support revision filters")
)

// checkRangeStream validates a RangeStream request: a valid RangeRequest in
// key order without revision filters.
func checkRangeStream(r *pb.RangeRequest) error {
	if err := checkRange(r); err != nil {
		return err
	}
	if !keyOrdered(r) {
		return errStreamSort
	}
	if hasRevisionFilters(r) {
		return errStreamRevFilter
	}
	return nil
}

// keyOrdered reports whether r asks for the store's natural order (ascending
// by key), which is what paging by key can deliver.
func keyOrdered(r *pb.RangeRequest) bool {
	return r.GetSortOrder() == pb.RangeRequest_NONE ||
		(r.GetSortTarget() == pb.RangeRequest_KEY && r.GetSortOrder() == pb.RangeRequest_ASCEND)
}

func hasRevisionFilters(r *pb.RangeRequest) bool {
	return r.GetMinModRevision() != 0 || r.GetMaxModRevision() != 0 ||
		r.GetMinCreateRevision() != 0 || r.GetMaxCreateRevision() != 0
}

// checkPut validates a PutRequest: a key is required, and ignore_value /
// ignore_lease exclude giving a value / lease.
func checkPut(r *pb.PutRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.GetIgnoreValue() && len(r.GetValue()) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.GetIgnoreLease() && r.GetLease() != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

// checkDelete validates a DeleteRangeRequest: a key is required.
func checkDelete(r *pb.DeleteRangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// checkTxn validates a TxnRequest in full: the op-count limit and every
// operation (checkTxnOps), then the write overlaps of each branch
// (checkTxnWrites, then checkKeptAfterFromKeyDelete). The overlap checks run
// last because they are the costly ones and the count limit bounds their
// input.
func checkTxn(r *pb.TxnRequest, maxTxnOps int) error {
	if err := checkTxnOps(r, maxTxnOps); err != nil {
		return err
	}
	if _, err := checkTxnWrites(r.GetSuccess()); err != nil {
		return err
	}
	if _, err := checkTxnWrites(r.GetFailure()); err != nil {
		return err
	}
	for _, branch := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		if _, err := checkKeptAfterFromKeyDelete(branch, nil); err != nil {
			return err
		}
	}
	return nil
}

// checkTxnOps checks the count limit and each operation of r. The limit
// applies to the largest of the compare, success and failure lists (they are
// not summed); a nested txn gets what the enclosing one leaves of the limit,
// so nesting cannot multiply it.
func checkTxnOps(r *pb.TxnRequest, maxTxnOps int) error {
	n := max(len(r.GetCompare()), len(r.GetSuccess()), len(r.GetFailure()))
	if n > maxTxnOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.GetCompare() {
		if len(c.GetKey()) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, branch := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range branch {
			if err := checkRequestOp(op, maxTxnOps-n); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkRequestOp(op *pb.RequestOp, maxTxnOps int) error {
	switch u := op.GetRequest().(type) {
	case *pb.RequestOp_RequestRange:
		return checkRange(u.RequestRange)
	case *pb.RequestOp_RequestPut:
		return checkPut(u.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		return checkDelete(u.RequestDeleteRange)
	case *pb.RequestOp_RequestTxn:
		return checkTxnOps(u.RequestTxn, maxTxnOps)
	default:
		// An op with no request set: etcd answers "key not found" here.
		return rpctypes.ErrGRPCKeyNotFound
	}
}

// keyInterval is the set of keys a delete in a txn covers: [begin, end) by
// byte order, or the one key begin when end is nil.
//
// A delete whose range_end is "\x00" (every key from begin on) is kept as the
// interval [begin, "\x00"), which holds no key. That is how etcd's check
// treats it (it reads "\x00" as an ordinary bound), so a txn that puts a key
// and deletes "from a key onwards" is accepted by both; being stricter here
// would reject requests etcd accepts.
type keyInterval struct {
	begin, end []byte
}

func (iv keyInterval) contains(key []byte) bool {
	if iv.end == nil {
		return bytes.Equal(key, iv.begin)
	}
	return bytes.Compare(iv.begin, key) <= 0 && bytes.Compare(key, iv.end) < 0
}

// txnWrites is what one list of ops writes: the keys it puts and the
// intervals it deletes, nested txns included.
type txnWrites struct {
	puts map[string]struct{}
	dels []keyInterval
}

func (w *txnWrites) deletes(key []byte) bool {
	for _, iv := range w.dels {
		if iv.contains(key) {
			return true
		}
	}
	return false
}

// checkTxnWrites rejects with ErrGRPCDuplicateKey a list of ops in which one
// key is written twice: put twice, or put and covered by a delete. Two
// deletes may overlap. A nested txn's success and failure branches exclude
// each other, so they may put the same key. The order of the checks follows
// etcd's so that exactly the same requests are accepted: the deletes of this
// level first, then each nested txn in order (its puts against the puts and
// deletes gathered so far, after which its deletes join them), then the puts
// of this level.
func checkTxnWrites(ops []*pb.RequestOp) (txnWrites, error) {
	w := txnWrites{puts: make(map[string]struct{})}
	for _, op := range ops {
		if d, ok := op.GetRequest().(*pb.RequestOp_RequestDeleteRange); ok && d.RequestDeleteRange != nil {
			iv := keyInterval{begin: d.RequestDeleteRange.Key}
			if len(d.RequestDeleteRange.RangeEnd) != 0 {
				iv.end = d.RequestDeleteRange.RangeEnd
			}
			w.dels = append(w.dels, iv)
		}
	}
	for _, op := range ops {
		t, ok := op.GetRequest().(*pb.RequestOp_RequestTxn)
		if !ok {
			continue
		}
		then, err := checkTxnWrites(t.RequestTxn.GetSuccess())
		if err != nil {
			return w, err
		}
		els, err := checkTxnWrites(t.RequestTxn.GetFailure())
		if err != nil {
			return w, err
		}
		for k := range then.puts {
			if _, dup := w.puts[k]; dup || w.deletes([]byte(k)) {
				return w, rpctypes.ErrGRPCDuplicateKey
			}
			w.puts[k] = struct{}{}
		}
		for k := range els.puts {
			_, dup := w.puts[k]
			_, fromThen := then.puts[k]
			if (dup && !fromThen) || w.deletes([]byte(k)) {
				return w, rpctypes.ErrGRPCDuplicateKey
			}
			w.puts[k] = struct{}{}
		}
		w.dels = append(w.dels, then.dels...)
		w.dels = append(w.dels, els.dels...)
	}
	for _, op := range ops {
		p, ok := op.GetRequest().(*pb.RequestOp_RequestPut)
		if !ok || p.RequestPut == nil {
			continue
		}
		k := string(p.RequestPut.Key)
		if _, dup := w.puts[k]; dup || w.deletes(p.RequestPut.Key) {
			return w, rpctypes.ErrGRPCDuplicateKey
		}
		w.puts[k] = struct{}{}
	}
	return w, nil
}

// checkKeptAfterFromKeyDelete refuses, with ErrGRPCDuplicateKey, a put with
// ignore_value or ignore_lease of a key that an earlier from-key delete
// (range_end "\x00") of the same txn removes. etcd's overlap check misses
// that pair (see keyInterval), its pre-check finds the key still there, and
// applying the put then crashes etcd's apply loop: etcd has no answer to
// give, and the overlap is what its duplicate-key rule exists to refuse.
// Only that pair is refused; a plain put after a from-key delete, or an
// ignore_value put before one, is accepted and applied as in etcd.
//
// Ops are walked in the order a txn applies them. fromKey holds the begin
// keys of the from-key deletes applied before ops; a nested txn sees those
// and its own, and afterwards either of its branches may have run, so the
// deletes of both are added. It returns the updated fromKey.
func checkKeptAfterFromKeyDelete(ops []*pb.RequestOp, fromKey [][]byte) ([][]byte, error) {
	for _, op := range ops {
		switch u := op.GetRequest().(type) {
		case *pb.RequestOp_RequestDeleteRange:
			if bytes.Equal(u.RequestDeleteRange.GetRangeEnd(), []byte{0}) {
				fromKey = append(fromKey, u.RequestDeleteRange.GetKey())
			}
		case *pb.RequestOp_RequestPut:
			p := u.RequestPut
			if !p.GetIgnoreValue() && !p.GetIgnoreLease() {
				continue
			}
			for _, begin := range fromKey {
				if bytes.Compare(p.GetKey(), begin) >= 0 {
					return nil, rpctypes.ErrGRPCDuplicateKey
				}
			}
		case *pb.RequestOp_RequestTxn:
			base := fromKey[:len(fromKey):len(fromKey)]
			then, err := checkKeptAfterFromKeyDelete(u.RequestTxn.GetSuccess(), base)
			if err != nil {
				return nil, err
			}
			els, err := checkKeptAfterFromKeyDelete(u.RequestTxn.GetFailure(), base)
			if err != nil {
				return nil, err
			}
			fromKey = append(append(base, then[len(base):]...), els[len(base):]...)
		}
	}
	return fromKey, nil
}
