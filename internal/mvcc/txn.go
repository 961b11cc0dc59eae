package mvcc

import (
	"bytes"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// txnPath records which branch a txn takes, and the same for each txn nested
// in that branch (indexed like the branch's ops; nil for other ops). etcd
// decides every branch, nested ones included, against the state before the
// txn runs, so the whole path is computed up front.
type txnPath struct {
	succeeded bool
	nested    []*txnPath
}

func (p *txnPath) ops(r *pb.TxnRequest) []*pb.RequestOp {
	if p.succeeded {
		return r.Success
	}
	return r.Failure
}

// Txn applies a TxnRequest as etcd does: the compares (its own and those of
// the txns nested in the chosen branches) are evaluated against the state
// before the txn; then every op of the chosen branches is checked against
// that state (a range at a compacted or future revision, a put with a lease
// that does not exist or ignore_value/ignore_lease on an absent key fail the
// whole txn before anything is written); then the ops run in order, each
// seeing the writes before it. All writes share one main revision.
func (w *Write) Txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	t, err := w.begin()
	if err != nil {
		return nil, err
	}
	defer t.end()
	path, err := t.comparePath(r)
	if err != nil {
		return nil, err
	}
	if err := t.checkTxn(r, path); err != nil {
		return nil, err
	}
	resp := newTxnResponse(r, path)
	if err := t.execTxn(r, path, resp); err != nil {
		return nil, err
	}
	resp.Header.Revision = t.readRev()
	return resp, nil
}

// errTxnNotReadOnly is returned by ReadTxn for a txn that may write.
var errTxnNotReadOnly = errors.New("mvcc: ReadTxn given a txn that writes")

// TxnReadOnly reports whether a txn only reads, by etcd's rule: every op of
// both branches is a range (a nested txn counts as a write). Such a txn
// takes no revision and may be served by ReadTxn instead of going through
// the log.
func TxnReadOnly(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if op.GetRequestRange() == nil {
				return false
			}
		}
	}
	return true
}

// ReadTxn runs a read-only txn (see TxnReadOnly) against the published
// state, as etcd serves read-only txns: its compares and ranges all see one
// revision, the header's. It returns the errors of Txn's checks
// (ErrCompacted, ErrFutureRev), and an error for a txn that is not
// read-only. Safe for concurrent use.
func (s *Store) ReadTxn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if !TxnReadOnly(r) {
		return nil, errTxnNotReadOnly
	}
	v, st, err := s.openView()
	if err != nil {
		return nil, err
	}
	defer s.closeView(v)
	t := &txnWrite{v: v, compactRev: st.compactRev, beginRev: st.rev}
	path, err := t.comparePath(r)
	if err != nil {
		return nil, err
	}
	if err := t.checkTxn(r, path); err != nil {
		return nil, err
	}
	resp := newTxnResponse(r, path)
	if err := t.execTxn(r, path, resp); err != nil {
		return nil, err
	}
	resp.Header.Revision = st.rev
	return resp, nil
}

func (t *txnWrite) comparePath(r *pb.TxnRequest) (*txnPath, error) {
	ok, err := t.compareAll(r.Compare)
	if err != nil {
		return nil, err
	}
	p := &txnPath{succeeded: ok}
	for i, op := range p.ops(r) {
		nt := op.GetRequestTxn()
		if nt == nil {
			continue
		}
		if p.nested == nil {
			p.nested = make([]*txnPath, len(p.ops(r)))
		}
		if p.nested[i], err = t.comparePath(nt); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (t *txnWrite) compareAll(cmps []*pb.Compare) (bool, error) {
	for _, c := range cmps {
		ok, err := t.compare(c)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// compare evaluates one Compare. Over a range it must hold for every key in
// it; a range (or key) with no keys compares as one KeyValue of zeroes,
// except that a VALUE compare on no keys is always false (etcd: a missing
// value cannot be told from an empty one).
func (t *txnWrite) compare(c *pb.Compare) (bool, error) {
	v := t.view()
	rev := t.readRev()
	end := gteEnd(c.RangeEnd)
	var ver version
	if end == nil {
		ok := false
		// A write txn's key with no version compares as zeroes without
		// a lookup (see keyFilter): the create-if-absent txn of locks
		// and elections.
		if t.w == nil || !t.w.absent(c.Key) {
			var err error
			if ok, err = v.get(c.Key, rev, &ver); err != nil {
				return false, err
			}
		}
		if !ok {
			return c.Target != pb.Compare_VALUE && compareKV(c, &mvccpb.KeyValue{}), nil
		}
		return compareKV(c, keyValueNoCopy(c.Key, &ver)), nil
	}
	any, result := false, true
	err := v.scan(c.Key, end, rev, func(_ []byte, ver *version) (bool, error) {
		any = true
		result = compareKV(c, keyValueNoCopy(nil, ver))
		return result, nil
	})
	if err != nil {
		return false, err
	}
	if !any {
		return c.Target != pb.Compare_VALUE && compareKV(c, &mvccpb.KeyValue{}), nil
	}
	return result, nil
}

// keyValueNoCopy is keyValue without the copy, for a look that ends before
// the iterator moves.
func keyValueNoCopy(key []byte, ver *version) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: key, CreateRevision: ver.create, ModRevision: ver.main, Version: ver.ver, Value: ver.value, Lease: ver.lease}
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var result int
	switch c.Target {
	case pb.Compare_VALUE:
		result = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_CREATE:
		result = cmpInt64(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		result = cmpInt64(kv.ModRevision, c.GetModRevision())
	case pb.Compare_VERSION:
		result = cmpInt64(kv.Version, c.GetVersion())
	case pb.Compare_LEASE:
		result = cmpInt64(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return result == 0
	case pb.Compare_NOT_EQUAL:
		return result != 0
	case pb.Compare_GREATER:
		return result > 0
	case pb.Compare_LESS:
		return result < 0
	}
	return true // an unknown result passes, as in etcd
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkTxn checks the ops of the chosen branches against the state before
// the txn, in order, returning the first error.
func (t *txnWrite) checkTxn(r *pb.TxnRequest, p *txnPath) error {
	for i, op := range p.ops(r) {
		switch x := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			rr := x.RequestRange
			switch {
			case rr == nil || rr.Revision == 0:
			case rr.Revision > t.beginRev:
				return ErrFutureRev
			case rr.Revision < t.compactRev:
				return ErrCompacted
			}
		case *pb.RequestOp_RequestPut:
			if x.RequestPut == nil {
				continue
			}
			if t.w == nil {
				return errTxnNotReadOnly
			}
			if err := t.w.checkLease(x.RequestPut.Lease); err != nil {
				return err
			}
			if x.RequestPut.IgnoreValue || x.RequestPut.IgnoreLease {
				if t.w.absent(x.RequestPut.Key) {
					return ErrKeyNotFound
				}
				var ver version
				ok, err := t.view().get(x.RequestPut.Key, t.beginRev, &ver)
				if err != nil {
					return err
				}
				if !ok {
					return ErrKeyNotFound
				}
			}
		case *pb.RequestOp_RequestDeleteRange:
			if t.w == nil {
				return errTxnNotReadOnly
			}
		case *pb.RequestOp_RequestTxn:
			if x.RequestTxn == nil {
				continue
			}
			if err := t.checkTxn(x.RequestTxn, p.nested[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// newTxnResponse lays out the response of the chosen branches. As in etcd,
// the header of a nested txn's response stays empty.
func newTxnResponse(r *pb.TxnRequest, p *txnPath) *pb.TxnResponse {
	ops := p.ops(r)
	resp := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: p.succeeded, Responses: make([]*pb.ResponseOp, len(ops))}
	for i, op := range ops {
		ro := &pb.ResponseOp{}
		switch x := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			ro.Response = &pb.ResponseOp_ResponseRange{}
		case *pb.RequestOp_RequestPut:
			ro.Response = &pb.ResponseOp_ResponsePut{}
		case *pb.RequestOp_RequestDeleteRange:
			ro.Response = &pb.ResponseOp_ResponseDeleteRange{}
		case *pb.RequestOp_RequestTxn:
			if x.RequestTxn != nil {
				ro.Response = &pb.ResponseOp_ResponseTxn{ResponseTxn: newTxnResponse(x.RequestTxn, p.nested[i])}
			}
		}
		resp.Responses[i] = ro
	}
	return resp
}

func (t *txnWrite) execTxn(r *pb.TxnRequest, p *txnPath, resp *pb.TxnResponse) error {
	for i, op := range p.ops(r) {
		ro := resp.Responses[i]
		switch x := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			if x.RequestRange == nil {
				continue
			}
			rr, err := t.view().rangeReq(x.RequestRange, t.readRev(), t.compactRev)
			if err != nil {
				return err
			}
			ro.Response.(*pb.ResponseOp_ResponseRange).ResponseRange = rr
		case *pb.RequestOp_RequestPut:
			if x.RequestPut == nil {
				continue
			}
			prev, err := t.prevForPut(x.RequestPut)
			if err != nil {
				return err
			}
			pr, err := t.put(x.RequestPut, prev)
			if err != nil {
				return err
			}
			ro.Response.(*pb.ResponseOp_ResponsePut).ResponsePut = pr
		case *pb.RequestOp_RequestDeleteRange:
			if x.RequestDeleteRange == nil {
				continue
			}
			dr, err := t.deleteRange(x.RequestDeleteRange)
			if err != nil {
				return err
			}
			ro.Response.(*pb.ResponseOp_ResponseDeleteRange).ResponseDeleteRange = dr
		case *pb.RequestOp_RequestTxn:
			if x.RequestTxn == nil {
				continue
			}
			nested := ro.Response.(*pb.ResponseOp_ResponseTxn).ResponseTxn
			if err := t.execTxn(x.RequestTxn, p.nested[i], nested); err != nil {
				return err
			}
		}
	}
	return nil
}
