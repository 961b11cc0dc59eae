package conformance

import (
	"fmt"
	"math/rand/v2"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// keySpace is small so that ops collide: keys are rewritten, deleted and
// recreated, ranges overlap, txn ops hit duplicate keys. It holds prefixes
// of one another, the lowest and highest bytes, and keys whose prefix range
// end needs carrying or has none.
var keySpace = []string{
	"a", "a/", "a/b", "a/b/c", "a/c", "ab",
	"b", "b\x00", "b\x00c", "bb",
	"foo", "foo/bar", "foo0", "fop",
	"x\xff", "x\xff\xff", "y",
	"\x00", "\x00\x01", "\xff", "\xff\xff",
}

// valuePool repeats values so that sorting by value and comparing values
// meet equal values.
var valuePool = []string{"", "v0", "v1", "v2", "v3", "\x00", "\xff\x00", "zz"}

// gen produces a random op sequence. It tracks the store's revision and
// compaction point from the oracle's answers so that revisions it picks
// land before, at and after the interesting points.
type gen struct {
	r          *rand.Rand
	rev        int64 // current revision, as last reported by the oracle
	compactRev int64 // last successful compaction revision
	// inTxn is set while generating a txn's ops: one bad op fails the
	// whole txn, so bad ops are made rarer there to let most txns apply.
	inTxn bool
}

func newGen(seed uint64) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), rev: 1}
}

// observe updates the generator from the oracle's outcome of o.
func (g *gen) observe(o op, out outcome) {
	if out.failed() {
		return
	}
	if r := out.revision(); r > g.rev {
		g.rev = r
	}
	if o.Compact != nil {
		g.compactRev = o.Compact.Revision
	}
}

func (g *gen) chance(p float64) bool { return g.r.Float64() < p }

// bad is chance for the choices that make a request invalid.
func (g *gen) bad(p float64) bool {
	if g.inTxn {
		p /= 5
	}
	return g.chance(p)
}

// next returns the next op.
func (g *gen) next() op {
	switch p := g.r.Float64(); {
	case p < 0.28:
		return op{Range: g.rangeReq()}
	case p < 0.36:
		return op{Stream: g.streamReq()}
	case p < 0.62:
		return op{Put: g.putReq()}
	case p < 0.72:
		return op{Delete: g.deleteReq()}
	case p < 0.99:
		return op{Txn: g.txnReq(0)}
	case p < 0.992:
		return op{Restart: true}
	default:
		return op{Compact: g.compactReq()}
	}
}

func (g *gen) key() []byte {
	if g.bad(0.01) {
		return nil // etcdserver: key is not provided
	}
	return []byte(keySpace[g.r.IntN(len(keySpace))])
}

// rangeEnd picks a range end for key: none (a single key), key's prefix
// end, "\x00" (every key from key on), another key of the space (possibly
// below key, an empty range) or a few random bytes.
func (g *gen) rangeEnd(key []byte, single float64) []byte {
	if g.chance(single) {
		return nil
	}
	switch g.r.IntN(10) {
	case 0, 1, 2, 3:
		return prefixEnd(key)
	case 4, 5:
		return []byte{0}
	case 6, 7, 8:
		return []byte(keySpace[g.r.IntN(len(keySpace))])
	default:
		b := make([]byte, 1+g.r.IntN(3))
		for i := range b {
			b[i] = byte(g.r.IntN(256))
		}
		return b
	}
}

// prefixEnd is the range end that selects every key starting with key, as
// clientv3.WithPrefix computes it.
func prefixEnd(key []byte) []byte {
	end := append([]byte(nil), key...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// revision picks a read revision around the interesting points: the
// present, the future, the compaction point and below it, negative.
func (g *gen) revision() int64 {
	switch g.r.IntN(9) {
	case 0:
		return g.rev
	case 1:
		return g.rev + 1 + int64(g.r.IntN(2)) // future
	case 2:
		return g.compactRev // at the compaction point (0 before any)
	case 3:
		return g.compactRev - 1 // compacted, once there is a compaction
	case 4:
		return -1 - int64(g.r.IntN(3))
	default:
		return 1 + g.r.Int64N(g.rev)
	}
}

// revOrZero picks a revision filter or a compare target revision.
func (g *gen) revOrZero() int64 {
	if g.chance(0.2) {
		return 0
	}
	return g.r.Int64N(g.rev + 2)
}

func (g *gen) rangeReq() *pb.RangeRequest {
	key := g.key()
	r := &pb.RangeRequest{Key: key, RangeEnd: g.rangeEnd(key, 0.3)}
	if g.chance(0.4) {
		r.Limit = int64(g.r.IntN(14)) - 1
	}
	if g.bad(0.3) {
		r.Revision = g.revision()
	}
	if g.chance(0.4) {
		r.SortOrder = pb.RangeRequest_SortOrder(g.r.IntN(3))
		r.SortTarget = pb.RangeRequest_SortTarget(g.r.IntN(5))
		if g.bad(0.02) {
			r.SortOrder = 3 // not a valid order
		}
		if g.bad(0.02) {
			r.SortTarget = 9 // not a valid target
		}
	}
	r.Serializable = g.chance(0.2)
	r.KeysOnly = g.chance(0.15)
	r.CountOnly = g.chance(0.1)
	if g.chance(0.1) {
		r.MinModRevision = g.revOrZero()
	}
	if g.chance(0.1) {
		r.MaxModRevision = g.revOrZero()
	}
	if g.chance(0.1) {
		r.MinCreateRevision = g.revOrZero()
	}
	if g.chance(0.1) {
		r.MaxCreateRevision = g.revOrZero()
	}
	return r
}

// streamReq is mostly a request RangeStream serves; sometimes one with a
// sort order or revision filter, which etcd refuses as Unimplemented.
func (g *gen) streamReq() *pb.RangeRequest {
	r := g.rangeReq()
	if g.chance(0.85) {
		r.SortOrder, r.SortTarget = 0, 0
		if g.chance(0.3) {
			r.SortOrder, r.SortTarget = pb.RangeRequest_ASCEND, pb.RangeRequest_KEY
		}
		r.MinModRevision, r.MaxModRevision = 0, 0
		r.MinCreateRevision, r.MaxCreateRevision = 0, 0
	}
	if g.chance(0.5) {
		// Wide ranges make several chunks.
		r.RangeEnd = []byte{0}
	}
	return r
}

func (g *gen) value() []byte {
	if g.chance(0.1) {
		return []byte(fmt.Sprintf("rand-%d", g.r.IntN(1000)))
	}
	return []byte(valuePool[g.r.IntN(len(valuePool))])
}

func (g *gen) putReq() *pb.PutRequest {
	r := &pb.PutRequest{Key: g.key(), Value: g.value(), PrevKv: g.chance(0.4)}
	if g.bad(0.08) {
		r.IgnoreValue = true
		if g.chance(0.8) {
			r.Value = nil
		}
	}
	if g.bad(0.08) {
		r.IgnoreLease = true
	}
	if g.bad(0.04) {
		// No lease is ever granted, so every lease is missing.
		r.Lease = 1 + g.r.Int64N(1000)
	}
	return r
}

func (g *gen) deleteReq() *pb.DeleteRangeRequest {
	key := g.key()
	return &pb.DeleteRangeRequest{Key: key, RangeEnd: g.rangeEnd(key, 0.7), PrevKv: g.chance(0.5)}
}

func (g *gen) compactReq() *pb.CompactionRequest {
	r := &pb.CompactionRequest{Physical: g.chance(0.5)}
	switch g.r.IntN(6) {
	case 0:
		r.Revision = g.compactRev // already compacted (or 0 on a new store)
	case 1:
		r.Revision = g.rev + 1 // future
	case 2:
		r.Revision = g.rev
	default:
		// Keep most history: compact a little past the last point.
		r.Revision = g.compactRev + 1 + g.r.Int64N(max(1, (g.rev-g.compactRev)/3))
	}
	return r
}

func (g *gen) compare() *pb.Compare {
	key := g.key()
	c := &pb.Compare{
		Key:    key,
		Result: pb.Compare_CompareResult(g.r.IntN(4)),
		Target: pb.Compare_CompareTarget(g.r.IntN(5)),
	}
	if g.chance(0.2) {
		c.RangeEnd = g.rangeEnd(key, 0)
	}
	target := c.Target
	if g.chance(0.05) {
		// The union names another target than Target: etcd then compares
		// against the zero value.
		target = pb.Compare_CompareTarget(g.r.IntN(5))
	}
	if g.chance(0.03) {
		return c // no target value at all
	}
	switch target {
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: int64(g.r.IntN(5))}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: g.revOrZero()}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: g.revOrZero()}
	case pb.Compare_VALUE:
		c.TargetUnion = &pb.Compare_Value{Value: g.value()}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: int64(g.r.IntN(2))}
	}
	return c
}

func (g *gen) txnReq(depth int) *pb.TxnRequest {
	if depth == 0 && g.chance(0.01) {
		return g.hugeTxn()
	}
	r := &pb.TxnRequest{}
	for range g.r.IntN(4) {
		r.Compare = append(r.Compare, g.compare())
	}
	r.Success = g.requestOps(depth)
	r.Failure = g.requestOps(depth)
	if depth == 0 {
		avoidEtcdPanic(r)
	}
	return r
}

// avoidEtcdPanic clears ignore_value and ignore_lease from r's puts when
// r also deletes with range end "\x00". etcd 3.7.3's duplicate-key check
// treats [key, "\x00") as an empty interval, so it lets such a delete run
// before a put of a key it removed; the put then finds no previous value
// and etcd's apply loop panics (see TestEtcdPanickingTxn). Without the
// ignore flags the same txn is well defined and stays in the sequence.
func avoidEtcdPanic(r *pb.TxnRequest) {
	var fromKeyDelete bool
	var puts []*pb.PutRequest
	var walk func(*pb.TxnRequest)
	walk = func(t *pb.TxnRequest) {
		for _, ro := range append(append([]*pb.RequestOp(nil), t.Success...), t.Failure...) {
			switch v := ro.GetRequest().(type) {
			case *pb.RequestOp_RequestDeleteRange:
				if string(v.RequestDeleteRange.GetRangeEnd()) == "\x00" {
					fromKeyDelete = true
				}
			case *pb.RequestOp_RequestPut:
				puts = append(puts, v.RequestPut)
			case *pb.RequestOp_RequestTxn:
				walk(v.RequestTxn)
			}
		}
	}
	walk(r)
	if !fromKeyDelete {
		return
	}
	for _, p := range puts {
		p.IgnoreValue, p.IgnoreLease = false, false
	}
}

// requestOps returns a txn branch. Its keys are distinct most of the time,
// so that most txns pass the duplicate-key check and get applied.
func (g *gen) requestOps(depth int) []*pb.RequestOp {
	outer := g.inTxn
	g.inTxn = true
	defer func() { g.inTxn = outer }()
	n := g.r.IntN(5)
	distinct := g.chance(0.7)
	used := map[string]bool{}
	var ops []*pb.RequestOp
	for range n {
		var ro *pb.RequestOp
		switch p := g.r.Float64(); {
		case p < 0.3:
			ro = &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: g.rangeReq()}}
		case p < 0.65:
			put := g.putReq()
			if distinct && used[string(put.Key)] {
				continue
			}
			used[string(put.Key)] = true
			ro = &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: put}}
		case p < 0.85:
			del := g.deleteReq()
			if distinct {
				del.RangeEnd = nil
				if used[string(del.Key)] {
					continue
				}
				used[string(del.Key)] = true
			}
			ro = &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: del}}
		case p < 0.99 && depth < 2:
			ro = &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: g.txnReq(depth + 1)}}
		case p < 0.99:
			continue
		default:
			ro = &pb.RequestOp{} // an empty op: etcd says "key not found"
		}
		ops = append(ops, ro)
	}
	return ops
}

// hugeTxn builds a txn at or just past the op limit (128 by default), in
// its compares, a branch, or a nested txn's share of the limit.
func (g *gen) hugeTxn() *pb.TxnRequest {
	n := 128 + g.r.IntN(2)
	r := &pb.TxnRequest{}
	read := func() *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: g.key()}}}
	}
	switch g.r.IntN(4) {
	case 0:
		for range n {
			r.Compare = append(r.Compare, &pb.Compare{Key: []byte("a"), Target: pb.Compare_VERSION,
				Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: -1}})
		}
	case 1:
		for range n {
			r.Success = append(r.Success, read())
		}
	case 2:
		for i := range n {
			r.Failure = append(r.Failure, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{
				RequestPut: &pb.PutRequest{Key: []byte(fmt.Sprintf("many/%03d", i))}}})
		}
	default:
		// The outer txn's own ops count against the nested one's limit.
		outer := 1 + g.r.IntN(100)
		inner := &pb.TxnRequest{}
		for range 128 - outer + g.r.IntN(2) {
			inner.Success = append(inner.Success, read())
		}
		for range outer - 1 {
			r.Success = append(r.Success, read())
		}
		r.Success = append(r.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: inner}})
	}
	return r
}
