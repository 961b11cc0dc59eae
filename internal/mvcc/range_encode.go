package mvcc

import (
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// EncodedKVs are a range's KeyValues in protobuf's wire form, each already
// framed as field 2 (kvs) of a RangeResponse: concatenating a marshalled
// RangeResponse holding only the header, the chunks in order, and one
// holding only more and count gives exactly the bytes proto.Marshal makes
// of the whole response (fields in number order: header 1, kvs 2, more 3,
// count 4).
//
// They exist so that a large range is never held twice, once as
// KeyValues and once marshalled: the chunks are written straight from the
// iterator and then straight to the connection.
type EncodedKVs struct {
	// Chunks hold whole records; none is empty.
	Chunks [][]byte
	// N is the number of KeyValues in them.
	N int
}

// Len returns the encoded size in bytes.
func (e *EncodedKVs) Len() int {
	n := 0
	for _, c := range e.Chunks {
		n += len(c)
	}
	return n
}

// Chunk sizes: the first chunk is small so that a one-key range costs one
// small allocation; they double up to maxEncodedChunk, so a range of n
// bytes makes about n/maxEncodedChunk allocations and never copies what
// it has written (a single growing buffer would hold 1.5x its size while
// it is copied).
const (
	minEncodedChunk = 256
	maxEncodedChunk = 1 << 20
)

// kvEncoder appends KeyValue records to chunks.
type kvEncoder struct {
	out   EncodedKVs
	cur   []byte
	next  int
	alloc func(n int) []byte // nil: make
}

// add appends the record of one KeyValue.
func (e *kvEncoder) add(key []byte, create, mod, ver, lease int64, value []byte) {
	body := 0
	if len(key) > 0 {
		body += 1 + protowire.SizeBytes(len(key))
	}
	for _, n := range [...]int64{create, mod, ver} {
		if n != 0 {
			body += 1 + protowire.SizeVarint(uint64(n))
		}
	}
	if len(value) > 0 {
		body += 1 + protowire.SizeBytes(len(value))
	}
	if lease != 0 {
		body += 1 + protowire.SizeVarint(uint64(lease))
	}
	size := 1 + protowire.SizeBytes(body)
	if cap(e.cur)-len(e.cur) < size {
		e.flush()
		e.next = min(max(minEncodedChunk, 2*e.next), maxEncodedChunk)
		n := max(e.next, size)
		if e.alloc != nil {
			e.cur = e.alloc(n)[:0]
		} else {
			e.cur = make([]byte, 0, n)
		}
	}
	b := protowire.AppendTag(e.cur, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(body))
	if len(key) > 0 {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, key)
	}
	for i, n := range [...]int64{create, mod, ver} {
		if n != 0 {
			b = protowire.AppendTag(b, protowire.Number(2+i), protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(n))
		}
	}
	if len(value) > 0 {
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, value)
	}
	if lease != 0 {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(lease))
	}
	e.cur = b
	e.out.N++
}

func (e *kvEncoder) flush() {
	if len(e.cur) > 0 {
		e.out.Chunks = append(e.out.Chunks, e.cur)
	}
	e.cur = nil
}

// encodable reports whether a range can be answered encoded: its results
// come in key order, unfiltered, so each key can be written as it is read.
// A sort (sort_order NONE with a target other than KEY sorts too) or a
// revision filter needs the KeyValues first.
func encodable(r *pb.RangeRequest) bool {
	return !r.CountOnly && r.SortTarget == pb.RangeRequest_KEY &&
		(r.SortOrder == pb.RangeRequest_NONE || r.SortOrder == pb.RangeRequest_ASCEND) &&
		!hasRevisionFilters(r)
}

// RangeEncoded is Range with the KeyValues returned encoded (see
// EncodedKVs) when the request lets them be written in the order they are
// read (no sort, no revision filter, not count_only): the response then
// has no Kvs and carries Header, More and Count, and kvs holds the
// KeyValues. For any other request kvs is nil and the response is Range's.
// The answer means exactly what Range's does; errors are Range's. Safe for
// concurrent use.
//
// alloc, if not nil, gives the chunks: a slice of at least n bytes (its
// length is ignored), for a caller that recycles them once sent.
func (s *Store) RangeEncoded(r *pb.RangeRequest, alloc func(n int) []byte) (*pb.RangeResponse, *EncodedKVs, error) {
	if !encodable(r) {
		resp, err := s.Range(r)
		return resp, nil, err
	}
	v, st, err := s.openView()
	if err != nil {
		return nil, nil, err
	}
	defer s.closeView(v)
	return v.rangeEncoded(r, st.rev, st.compactRev, alloc)
}

// encodedObjects are what every encoded range makes, allocated together;
// chunks holds the Chunks of a range that fits in one.
type encodedObjects struct {
	rangeObjects
	enc    kvEncoder
	chunks [1][]byte
}

// rangeEncoded is rangeCounted (with countAll) for an encodable request.
func (v *view) rangeEncoded(r *pb.RangeRequest, curRev, compactRev int64, alloc func(int) []byte) (*pb.RangeResponse, *EncodedKVs, error) {
	rev := r.Revision
	if rev > curRev {
		return nil, nil, ErrFutureRev
	}
	if rev <= 0 {
		rev = curRev
	}
	if rev < compactRev {
		return nil, nil, ErrCompacted
	}
	eo := &encodedObjects{}
	resp := &eo.resp
	eo.hdr.Revision = curRev
	resp.Header = &eo.hdr

	limit := r.Limit
	if limit <= 0 {
		limit = math.MaxInt64
	}
	enc := &eo.enc
	enc.alloc = alloc
	enc.out.Chunks = eo.chunks[:0]
	var keyBuf []byte
	// keys_only answers carry no value and, as etcd answers them from its
	// index, lease 0 (see Range).
	add := func(key []byte, ver *version) {
		value, lease := ver.value, ver.lease
		if r.KeysOnly {
			value, lease = nil, 0
		}
		enc.add(key, ver.create, ver.main, ver.ver, lease, value)
	}
	end := gteEnd(r.RangeEnd)
	if end == nil {
		var ver version
		ok, err := v.get(r.Key, rev, &ver)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			resp.Count = 1
			add(r.Key, &ver)
		}
	} else {
		err := v.scan(r.Key, end, rev, func(prefix []byte, ver *version) (bool, error) {
			resp.Count++
			if int64(enc.out.N) >= limit {
				resp.More = true
				return true, nil // keep counting
			}
			var err error
			if keyBuf, err = appendDecodedPrefix(keyBuf[:0], prefix); err != nil {
				return false, err
			}
			add(keyBuf, ver)
			return true, nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	enc.flush()
	return resp, &enc.out, nil
}
