package mvcc

import (
	"bytes"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// model is a naive reference of etcd's mvcc semantics: every key's versions
// in a list, oldest first, and whole scans for everything. Tests run the
// same requests against it and the store and compare the answers.
type model struct {
	keys       map[string][]mver
	rev        int64
	compactRev int64
	leaseOK    func(int64) bool
	events     []*mvccpb.Event // of the current Write
}

type mver struct {
	main, sub, create, ver, lease int64
	value                         []byte
	tomb                          bool
}

func newModel(leaseOK func(int64) bool) *model {
	return &model{keys: map[string][]mver{}, rev: 1, compactRev: -1, leaseOK: leaseOK}
}

// at returns key's live version at rev, or nil.
func (m *model) at(key string, rev int64) *mver {
	vs := m.keys[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].main <= rev {
			if vs[i].tomb {
				return nil
			}
			return &vs[i]
		}
	}
	return nil
}

func (v *mver) kv(key string) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(key), CreateRevision: v.create, ModRevision: v.main, Version: v.ver, Value: bytes.Clone(v.value), Lease: v.lease}
}

func inRange(key string, start, end []byte) bool {
	k := []byte(key)
	switch {
	case len(end) == 0:
		return bytes.Equal(k, start)
	case len(end) == 1 && end[0] == 0:
		return bytes.Compare(k, start) >= 0
	default:
		return bytes.Compare(k, start) >= 0 && bytes.Compare(k, end) < 0
	}
}

// live returns the live KeyValues at rev in the range, in key order.
func (m *model) live(start, end []byte, rev int64) []*mvccpb.KeyValue {
	var names []string
	for k := range m.keys {
		if inRange(k, start, end) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var out []*mvccpb.KeyValue
	for _, k := range names {
		if v := m.at(k, rev); v != nil {
			out = append(out, v.kv(k))
		}
	}
	return out
}

type modelSorter struct {
	kvs  []*mvccpb.KeyValue
	less func(a, b *mvccpb.KeyValue) bool
}

func (s modelSorter) Len() int           { return len(s.kvs) }
func (s modelSorter) Less(i, j int) bool { return s.less(s.kvs[i], s.kvs[j]) }
func (s modelSorter) Swap(i, j int)      { s.kvs[i], s.kvs[j] = s.kvs[j], s.kvs[i] }

func (m *model) rangeAt(r *pb.RangeRequest, cur int64) (*pb.RangeResponse, error) {
	rev := r.Revision
	if rev > cur {
		return nil, ErrFutureRev
	}
	if rev <= 0 {
		rev = cur
	}
	if rev < m.compactRev {
		return nil, ErrCompacted
	}
	all := m.live(r.Key, r.RangeEnd, rev)
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: cur}, Count: int64(len(all))}
	if r.CountOnly {
		return resp, nil
	}
	var kvs []*mvccpb.KeyValue
	for _, kv := range all {
		ok := (r.MaxModRevision == 0 || kv.ModRevision <= r.MaxModRevision) &&
			(r.MinModRevision == 0 || kv.ModRevision >= r.MinModRevision) &&
			(r.MaxCreateRevision == 0 || kv.CreateRevision <= r.MaxCreateRevision) &&
			(r.MinCreateRevision == 0 || kv.CreateRevision >= r.MinCreateRevision)
		if ok {
			kvs = append(kvs, kv)
		}
	}
	// etcd's quirk: with sort_order NONE (and no revision filter) the limit
	// is applied, plus one, in key order before the implied ascending sort.
	filtered := r.MaxModRevision != 0 || r.MinModRevision != 0 || r.MaxCreateRevision != 0 || r.MinCreateRevision != 0
	if r.SortOrder == pb.RangeRequest_NONE && !filtered && r.Limit > 0 && int64(len(kvs)) > r.Limit+1 {
		kvs = kvs[:r.Limit+1]
	}
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if !(order == pb.RangeRequest_NONE || (r.SortTarget == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND)) {
		less := map[pb.RangeRequest_SortTarget]func(a, b *mvccpb.KeyValue) bool{
			pb.RangeRequest_KEY:     func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 },
			pb.RangeRequest_VERSION: func(a, b *mvccpb.KeyValue) bool { return a.Version < b.Version },
			pb.RangeRequest_CREATE:  func(a, b *mvccpb.KeyValue) bool { return a.CreateRevision < b.CreateRevision },
			pb.RangeRequest_MOD:     func(a, b *mvccpb.KeyValue) bool { return a.ModRevision < b.ModRevision },
			pb.RangeRequest_VALUE:   func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Value, b.Value) < 0 },
		}[r.SortTarget]
		var s sort.Interface = modelSorter{kvs, less}
		if order == pb.RangeRequest_DESCEND {
			s = sort.Reverse(s)
		}
		sort.Sort(s)
	}
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs, resp.More = kvs[:r.Limit], true
	}
	for _, kv := range kvs {
		if r.KeysOnly {
			kv.Value = nil
			if r.SortTarget != pb.RangeRequest_VALUE {
				kv.Lease = 0
			}
		}
	}
	resp.Kvs = kvs
	return resp, nil
}

// mtxn is one write request in progress in the model.
type mtxn struct {
	m        *model
	beginRev int64
	changes  int64
}

func (m *model) begin() *mtxn { return &mtxn{m: m, beginRev: m.rev} }

func (t *mtxn) readRev() int64 {
	if t.changes > 0 {
		return t.beginRev + 1
	}
	return t.beginRev
}

func (t *mtxn) end() {
	if t.changes > 0 {
		t.m.rev = t.beginRev + 1
	}
}

func (t *mtxn) write(key string, v mver) {
	v.main, v.sub = t.beginRev+1, t.changes
	t.changes++
	t.m.keys[key] = append(t.m.keys[key], v)
}

func (m *model) put(r *pb.PutRequest) (*pb.PutResponse, error) {
	if r.Lease != 0 && !m.leaseOK(r.Lease) {
		return nil, ErrLeaseNotFound
	}
	t := m.begin()
	defer t.end()
	if (r.IgnoreValue || r.IgnoreLease) && m.at(string(r.Key), t.readRev()) == nil {
		return nil, ErrKeyNotFound
	}
	return t.put(r), nil
}

func (t *mtxn) put(r *pb.PutRequest) *pb.PutResponse {
	key := string(r.Key)
	prev := t.m.at(key, t.readRev())
	val, lease := r.Value, r.Lease
	if r.IgnoreValue && prev != nil {
		val = prev.value
	}
	if r.IgnoreLease && prev != nil {
		lease = prev.lease
	}
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{Revision: t.beginRev + 1}}
	ev := &mvccpb.Event{Type: mvccpb.Event_PUT}
	nv := mver{create: t.beginRev + 1, ver: 1, lease: lease, value: bytes.Clone(val)}
	if prev != nil {
		if r.PrevKv {
			resp.PrevKv = prev.kv(key)
		}
		nv.create, nv.ver = prev.create, prev.ver+1
	}
	// A watch event's prev_kv is the key before the whole txn (etcd reads
	// it at mod_revision - 1), even if the txn changed it already; a create
	// event has none.
	if before := t.m.at(key, t.beginRev); before != nil && prev != nil {
		ev.PrevKv = before.kv(key)
	}
	t.write(key, nv)
	ev.Kv = t.m.at(key, t.beginRev+1).kv(key)
	t.m.events = append(t.m.events, ev)
	return resp
}

func (m *model) deleteRange(r *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	t := m.begin()
	defer t.end()
	return t.deleteRange(r)
}

func (t *mtxn) deleteRange(r *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	victims := t.m.live(r.Key, r.RangeEnd, t.readRev())
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{}, Deleted: int64(len(victims))}
	if r.PrevKv {
		resp.PrevKvs = victims
	}
	for _, kv := range victims {
		t.write(string(kv.Key), mver{tomb: true})
		var prev *mvccpb.KeyValue
		if before := t.m.at(string(kv.Key), t.beginRev); before != nil {
			prev = before.kv(string(kv.Key))
		}
		t.m.events = append(t.m.events, &mvccpb.Event{Type: mvccpb.Event_DELETE,
			Kv: &mvccpb.KeyValue{Key: kv.Key, ModRevision: t.beginRev + 1}, PrevKv: prev})
	}
	resp.Header.Revision = t.readRev()
	return resp
}

func (m *model) compare(c *pb.Compare, rev int64) bool {
	kvs := m.live(c.Key, c.RangeEnd, rev)
	if len(kvs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false
		}
		kvs = []*mvccpb.KeyValue{{}}
	}
	for _, kv := range kvs {
		var a, b int64
		switch c.Target {
		case pb.Compare_VALUE:
			a, b = int64(bytes.Compare(kv.Value, c.GetValue())), 0
		case pb.Compare_CREATE:
			a, b = kv.CreateRevision, c.GetCreateRevision()
		case pb.Compare_MOD:
			a, b = kv.ModRevision, c.GetModRevision()
		case pb.Compare_VERSION:
			a, b = kv.Version, c.GetVersion()
		case pb.Compare_LEASE:
			a, b = kv.Lease, c.GetLease()
		}
		ok := map[pb.Compare_CompareResult]bool{
			pb.Compare_EQUAL: a == b, pb.Compare_NOT_EQUAL: a != b, pb.Compare_GREATER: a > b, pb.Compare_LESS: a < b,
		}[c.Result]
		if !ok {
			return false
		}
	}
	return true
}

// txn decides all branches first, checks them, then runs them.
func (m *model) txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	t := m.begin()
	defer t.end()
	type decided = mdecided
	var decide func(r *pb.TxnRequest) *decided
	decide = func(r *pb.TxnRequest) *decided {
		d := &decided{r: r, ok: true, kids: map[int]*decided{}}
		for _, c := range r.Compare {
			if !m.compare(c, t.beginRev) {
				d.ok = false
				break
			}
		}
		for i, op := range d.ops() {
			if nt := op.GetRequestTxn(); nt != nil {
				d.kids[i] = decide(nt)
			}
		}
		return d
	}
	root := decide(r)
	var check func(d *decided) error
	check = func(d *decided) error {
		for i, op := range d.ops() {
			switch {
			case op.GetRequestRange() != nil:
				rr := op.GetRequestRange()
				if rr.Revision != 0 && rr.Revision > t.beginRev {
					return ErrFutureRev
				}
				if rr.Revision != 0 && rr.Revision < m.compactRev {
					return ErrCompacted
				}
			case op.GetRequestPut() != nil:
				p := op.GetRequestPut()
				if p.Lease != 0 && !m.leaseOK(p.Lease) {
					return ErrLeaseNotFound
				}
				if (p.IgnoreValue || p.IgnoreLease) && m.at(string(p.Key), t.beginRev) == nil {
					return ErrKeyNotFound
				}
			case op.GetRequestTxn() != nil:
				if err := check(d.kids[i]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := check(root); err != nil {
		return nil, err
	}
	var run func(d *decided) *pb.TxnResponse
	run = func(d *decided) *pb.TxnResponse {
		resp := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: d.ok}
		for i, op := range d.ops() {
			ro := &pb.ResponseOp{}
			switch {
			case op.GetRequestRange() != nil:
				rr, err := m.rangeAt(op.GetRequestRange(), t.readRev())
				if err != nil {
					panic(err)
				}
				ro.Response = &pb.ResponseOp_ResponseRange{ResponseRange: rr}
			case op.GetRequestPut() != nil:
				ro.Response = &pb.ResponseOp_ResponsePut{ResponsePut: t.put(op.GetRequestPut())}
			case op.GetRequestDeleteRange() != nil:
				ro.Response = &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: t.deleteRange(op.GetRequestDeleteRange())}
			case op.GetRequestTxn() != nil:
				ro.Response = &pb.ResponseOp_ResponseTxn{ResponseTxn: run(d.kids[i])}
			}
			resp.Responses = append(resp.Responses, ro)
		}
		return resp
	}
	resp := run(root)
	resp.Header.Revision = t.readRev()
	return resp, nil
}

type mdecided struct {
	r    *pb.TxnRequest
	ok   bool
	kids map[int]*mdecided
}

func (d *mdecided) ops() []*pb.RequestOp {
	if d.ok {
		return d.r.Success
	}
	return d.r.Failure
}

func (m *model) compact(rev int64) error {
	if rev <= m.compactRev {
		return ErrCompacted
	}
	if rev > m.rev {
		return ErrFutureRev
	}
	m.compactRev = rev
	return nil
}

// kept returns how many versions and events the store should hold once the
// physical compaction at compactRev is done.
func (m *model) kept() (versions, events int) {
	c := m.compactRev
	for _, vs := range m.keys {
		newest := -1
		for i, v := range vs {
			if v.main <= c {
				newest = i
			}
		}
		for i, v := range vs {
			if v.main > c || (i == newest && !v.tomb) {
				versions++
			}
			if v.main >= c {
				events++
			}
		}
	}
	return versions, events
}
