package mvcc

import (
	"bytes"
	"math"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// gteEnd turns a request's range_end into the end scan understands: nil for
// a single key, empty (non-nil) for "every key from key on" (etcd's "\x00"),
// otherwise the exclusive end itself.
func gteEnd(rangeEnd []byte) []byte {
	if len(rangeEnd) == 1 && rangeEnd[0] == 0 {
		return []byte{}
	}
	if len(rangeEnd) == 0 {
		return nil
	}
	return rangeEnd
}

// defaultOrder reports whether the request wants the keys in the order they
// are stored (ascending by key), so no sort is needed and limit can be
// pushed down into the scan.
func defaultOrder(target pb.RangeRequest_SortTarget, order pb.RangeRequest_SortOrder) bool {
	return order == pb.RangeRequest_NONE || (target == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND)
}

func hasRevisionFilters(r *pb.RangeRequest) bool {
	return r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
}

// rangeReq serves a RangeRequest from v as etcd does: curRev is the revision
// the reader stands at (the header revision), compactRev the compaction
// revision. Count is the number of keys in the range at the revision read,
// before the revision filters and limit are applied (as in etcd).
func (v *view) rangeReq(r *pb.RangeRequest, curRev, compactRev int64) (*pb.RangeResponse, error) {
	return v.rangeCounted(r, curRev, compactRev, true)
}

// rangeCounted is rangeReq; with countAll unset it stops reading at the
// limit instead of counting the rest of the range, and Count is only the
// number of keys read.
func (v *view) rangeCounted(r *pb.RangeRequest, curRev, compactRev int64, countAll bool) (*pb.RangeResponse, error) {
	rev := r.Revision
	if rev > curRev {
		return nil, ErrFutureRev
	}
	if rev <= 0 {
		rev = curRev
	}
	if rev < compactRev {
		return nil, ErrCompacted
	}
	ro := &rangeObjects{}
	resp := &ro.resp
	ro.hdr.Revision = curRev
	resp.Header = &ro.hdr
	end := gteEnd(r.RangeEnd)

	if r.CountOnly {
		n, err := v.count(r.Key, end, rev)
		if err != nil {
			return nil, err
		}
		resp.Count = n
		resp.Kvs = []*mvccpb.KeyValue{}
		return resp, nil
	}

	// As etcd: with a sort or a revision filter every key is fetched, since
	// the limit applies after them; otherwise one key more than the limit
	// is fetched, to tell whether there are more.
	limit := r.Limit
	if !defaultOrder(r.SortTarget, r.SortOrder) || hasRevisionFilters(r) {
		limit = 0
	}
	if limit > 0 && limit < math.MaxInt64 {
		limit++
	}
	// etcd answers keys_only requests not sorted by value from its index,
	// which does not hold the lease: those results carry lease 0.
	fastKeysOnly := r.KeysOnly && r.SortTarget != pb.RangeRequest_VALUE

	var kvs []*mvccpb.KeyValue
	var total int64
	var slab kvSlab
	// collect copies the key (raw, or as the escaped prefix to decode) and
	// the value out of the iterator, into one allocation.
	collect := func(rawKey, prefix []byte, ver *version) error {
		if limit > 0 && int64(len(kvs)) >= limit {
			return nil
		}
		kv := slab.next()
		kv.CreateRevision, kv.ModRevision, kv.Version = ver.create, ver.main, ver.ver
		var value []byte
		if !fastKeysOnly {
			kv.Lease = ver.lease
			value = ver.value // needed to sort by value even when keys_only
		}
		buf := make([]byte, 0, len(rawKey)+len(prefix)+len(value))
		if rawKey != nil {
			buf = append(buf, rawKey...)
		} else {
			var err error
			if buf, err = appendDecodedPrefix(buf, prefix); err != nil {
				return err
			}
		}
		kv.Key = buf[:len(buf):len(buf)]
		if !fastKeysOnly {
			kv.Value = append(buf[len(buf):], value...)
		}
		kvs = append(kvs, kv)
		return nil
	}
	if end == nil {
		var ver version
		ok, err := v.get(r.Key, rev, &ver)
		if err != nil {
			return nil, err
		}
		if ok {
			total = 1
			ro.one[0] = nil
			kvs = ro.one[:0]
			if err := collect(r.Key, nil, &ver); err != nil {
				return nil, err
			}
		}
	} else {
		err := v.scan(r.Key, end, rev, func(prefix []byte, ver *version) (bool, error) {
			if limit > 0 && int64(len(kvs)) >= limit {
				if !countAll {
					return false, nil
				}
				total++
				return true, nil // keep counting
			}
			total++
			return true, collect(nil, prefix, ver)
		})
		if err != nil {
			return nil, err
		}
	}

	kvs = filterKVs(kvs, r)
	sortKVs(kvs, r)
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs = kvs[:r.Limit]
		resp.More = true
	}
	if kvs == nil {
		kvs = []*mvccpb.KeyValue{}
	}
	if r.KeysOnly {
		for _, kv := range kvs {
			kv.Value = nil
		}
	}
	resp.Kvs = kvs
	resp.Count = total
	return resp, nil
}

// rangeObjects are the messages every range makes, allocated together;
// one backs the result of a single-key range.
type rangeObjects struct {
	resp pb.RangeResponse
	hdr  pb.ResponseHeader
	one  [1]*mvccpb.KeyValue
}

// kvSlab hands out KeyValues from slabs that double in size up to
// maxKVSlab, so that a range of n keys makes about n/maxKVSlab allocations
// for them, and one of a single key makes one.
type kvSlab struct {
	free []mvccpb.KeyValue
	size int
}

const maxKVSlab = 256

func (s *kvSlab) next() *mvccpb.KeyValue {
	if len(s.free) == 0 {
		s.size = min(max(1, 2*s.size), maxKVSlab)
		s.free = make([]mvccpb.KeyValue, s.size)
	}
	kv := &s.free[0]
	s.free = s.free[1:]
	return kv
}

// count returns how many keys in the range are live at rev.
func (v *view) count(key, end []byte, rev int64) (int64, error) {
	if end == nil {
		var ver version
		ok, err := v.get(key, rev, &ver)
		if ok {
			return 1, err
		}
		return 0, err
	}
	var n int64
	err := v.scan(key, end, rev, func([]byte, *version) (bool, error) {
		n++
		return true, nil
	})
	return n, err
}

func filterKVs(kvs []*mvccpb.KeyValue, r *pb.RangeRequest) []*mvccpb.KeyValue {
	if !hasRevisionFilters(r) {
		return kvs
	}
	out := kvs[:0]
	for _, kv := range kvs {
		switch {
		case r.MaxModRevision != 0 && kv.ModRevision > r.MaxModRevision:
		case r.MinModRevision != 0 && kv.ModRevision < r.MinModRevision:
		case r.MaxCreateRevision != 0 && kv.CreateRevision > r.MaxCreateRevision:
		case r.MinCreateRevision != 0 && kv.CreateRevision < r.MinCreateRevision:
		default:
			out = append(out, kv)
		}
	}
	return out
}

// sortKVs orders the results as etcd does. A sort target other than KEY
// with order NONE means ascending. sort.Sort (not a stable sort) is used on
// purpose: on ties it leaves the keys in the same order etcd's does, since
// both start from key order and run the same algorithm.
func sortKVs(kvs []*mvccpb.KeyValue, r *pb.RangeRequest) {
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if defaultOrder(r.SortTarget, order) {
		return
	}
	var s sort.Interface
	switch r.SortTarget {
	case pb.RangeRequest_KEY:
		s = byField{kvs, func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }}
	case pb.RangeRequest_VERSION:
		s = byField{kvs, func(a, b *mvccpb.KeyValue) bool { return a.Version < b.Version }}
	case pb.RangeRequest_CREATE:
		s = byField{kvs, func(a, b *mvccpb.KeyValue) bool { return a.CreateRevision < b.CreateRevision }}
	case pb.RangeRequest_MOD:
		s = byField{kvs, func(a, b *mvccpb.KeyValue) bool { return a.ModRevision < b.ModRevision }}
	case pb.RangeRequest_VALUE:
		s = byField{kvs, func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Value, b.Value) < 0 }}
	default:
		return // rejected by the api's validation; leave key order
	}
	switch order {
	case pb.RangeRequest_ASCEND:
		sort.Sort(s)
	case pb.RangeRequest_DESCEND:
		sort.Sort(sort.Reverse(s))
	}
}

type byField struct {
	kvs  []*mvccpb.KeyValue
	less func(a, b *mvccpb.KeyValue) bool
}

func (s byField) Len() int           { return len(s.kvs) }
func (s byField) Less(i, j int) bool { return s.less(s.kvs[i], s.kvs[j]) }
func (s byField) Swap(i, j int)      { s.kvs[i], s.kvs[j] = s.kvs[j], s.kvs[i] }
