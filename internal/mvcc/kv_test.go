package mvcc

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// kvString renders KeyValues compactly: key=value@create/mod/version[/lease].
func kvString(kvs []*mvccpb.KeyValue) string {
	var parts []string
	for _, kv := range kvs {
		s := fmt.Sprintf("%s=%s@%d/%d/%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
		if kv.Lease != 0 {
			s += fmt.Sprintf("/L%d", kv.Lease)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func withLease(id int64) func(*pb.PutRequest) { return func(r *pb.PutRequest) { r.Lease = id } }
func withPrev() func(*pb.PutRequest)          { return func(r *pb.PutRequest) { r.PrevKv = true } }
func ignoreValue() func(*pb.PutRequest)       { return func(r *pb.PutRequest) { r.IgnoreValue = true } }
func ignoreLease() func(*pb.PutRequest)       { return func(r *pb.PutRequest) { r.IgnoreLease = true } }
func opPut(k, v string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}
func opGet(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}
func opTxn(r *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}}
}
func opDel(k, end string) *pb.RequestOp {
	r := &pb.DeleteRangeRequest{Key: []byte(k)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}
}

func TestRevisionsAndVersions(t *testing.T) {
	ts := newTestStore(t)
	if ts.Rev() != 1 || ts.CompactRev() != -1 {
		t.Fatalf("new store: rev %d compact %d, want 1 -1", ts.Rev(), ts.CompactRev())
	}
	ts.mustPut("a", "1")               // 2
	ts.mustPut("a", "2", withLease(7)) // 3
	ts.del("a", "", false)             // 4
	ts.mustPut("a", "3")               // 5
	for _, tc := range []struct {
		rev  int64
		want string
	}{
		{1, ""},
		{2, "a=1@2/2/1"},
		{3, "a=2@2/3/2/L7"},
		{4, ""},
		{5, "a=3@5/5/1"},
		{0, "a=3@5/5/1"},
		{-3, "a=3@5/5/1"}, // a negative revision reads the current one, as in etcd
	} {
		resp := ts.get("a", tc.rev)
		if got := kvString(resp.Kvs); got != tc.want || resp.Header.Revision != 5 {
			t.Errorf("get a@%d = %q (header %d), want %q (header 5)", tc.rev, got, resp.Header.Revision, tc.want)
		}
	}
}

func TestPutChecks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   bool // put k=old with lease 5 first
		opts    []func(*pb.PutRequest)
		wantErr error
		want    string // k after the put
		prev    string // the response's prev_kv
	}{
		{name: "lease missing", opts: []func(*pb.PutRequest){withLease(100)}, wantErr: ErrLeaseNotFound},
		// The lease is checked before the key, as in etcd.
		{name: "lease missing and key absent", opts: []func(*pb.PutRequest){withLease(100), ignoreValue()}, wantErr: ErrLeaseNotFound},
		{name: "ignore value on absent key", opts: []func(*pb.PutRequest){ignoreValue()}, wantErr: ErrKeyNotFound},
		{name: "ignore lease on absent key", opts: []func(*pb.PutRequest){ignoreLease()}, wantErr: ErrKeyNotFound},
		{name: "ignore value keeps the value", setup: true, opts: []func(*pb.PutRequest){ignoreValue(), withLease(9)}, want: "k=old@2/3/2/L9"},
		{name: "ignore lease keeps the lease", setup: true, opts: []func(*pb.PutRequest){ignoreLease()}, want: "k=new@2/3/2/L5"},
		{name: "plain put drops the lease", setup: true, want: "k=new@2/3/2"},
		{name: "prev_kv", setup: true, opts: []func(*pb.PutRequest){withPrev()}, want: "k=new@2/3/2", prev: "k=old@2/2/1/L5"},
		{name: "prev_kv of absent key", opts: []func(*pb.PutRequest){withPrev()}, want: "k=new@2/2/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			if tc.setup {
				ts.mustPut("k", "old", withLease(5))
			}
			before := ts.Rev()
			val := "new"
			for _, o := range tc.opts {
				r := &pb.PutRequest{}
				o(r)
				if r.IgnoreValue {
					val = ""
				}
			}
			resp, err := ts.put("k", val, tc.opts...)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if ts.Rev() != before {
					t.Fatalf("a failed put moved the revision from %d to %d", before, ts.Rev())
				}
				return
			}
			if got := kvString(ts.get("k", 0).Kvs); got != tc.want {
				t.Errorf("k = %q, want %q", got, tc.want)
			}
			var prev []*mvccpb.KeyValue
			if resp.PrevKv != nil {
				prev = append(prev, resp.PrevKv)
			}
			if got := kvString(prev); got != tc.prev {
				t.Errorf("prev_kv = %q, want %q", got, tc.prev)
			}
		})
	}
}

func TestDeleteRange(t *testing.T) {
	ts := newTestStore(t)
	for _, k := range []string{"a", "b", "b\x00", "c", "\xff"} {
		ts.mustPut(k, "v")
	}
	// Deleting nothing takes no revision.
	resp := ts.del("nothing", "", true)
	if resp.Deleted != 0 || resp.Header.Revision != 6 || ts.Rev() != 6 || len(resp.PrevKvs) != 0 {
		t.Fatalf("delete of nothing: %v, store rev %d; want 0 deleted at revision 6", resp, ts.Rev())
	}
	resp = ts.del("b", "c", true)
	if resp.Deleted != 2 || resp.Header.Revision != 7 || kvString(resp.PrevKvs) != "b=v@3/3/1 b\x00=v@4/4/1" {
		t.Fatalf("delete [b, c): %v", resp)
	}
	resp = ts.del("c", "\x00", false) // from c on
	if resp.Deleted != 2 || resp.Header.Revision != 8 || resp.PrevKvs != nil {
		t.Fatalf("delete from c: %v", resp)
	}
	if got := kvString(ts.get("a", 0).Kvs); got != "a=v@2/2/1" {
		t.Fatalf("a = %q", got)
	}
}

func TestRangeOptions(t *testing.T) {
	ts := newTestStore(t)
	ts.mustPut("a", "3")               // 2
	ts.mustPut("b", "1", withLease(4)) // 3
	ts.mustPut("c", "2")               // 4
	ts.mustPut("a", "4")               // 5: a is version 2
	ts.mustPut("d\x00", "0")           // 6
	for _, tc := range []struct {
		name  string
		req   *pb.RangeRequest
		want  string
		more  bool
		count int64
	}{
		{name: "single", req: &pb.RangeRequest{Key: []byte("b")}, want: "b=1@3/3/1/L4", count: 1},
		{name: "missing", req: &pb.RangeRequest{Key: []byte("bb")}, count: 0},
		{name: "range", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")}, want: "a=4@2/5/2 b=1@3/3/1/L4", count: 2},
		{name: "from key", req: &pb.RangeRequest{Key: []byte("c"), RangeEnd: []byte{0}}, want: "c=2@4/4/1 d\x00=0@6/6/1", count: 2},
		{name: "all", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Limit: 2}, want: "a=4@2/5/2 b=1@3/3/1/L4", more: true, count: 4},
		{name: "limit equal to count", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("e"), Limit: 4}, want: "a=4@2/5/2 b=1@3/3/1/L4 c=2@4/4/1 d\x00=0@6/6/1", count: 4},
		{name: "empty range", req: &pb.RangeRequest{Key: []byte("c"), RangeEnd: []byte("a")}, count: 0},
		{name: "at revision", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Revision: 3}, want: "a=3@2/2/1 b=1@3/3/1/L4", count: 2},
		{name: "count only", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), CountOnly: true, Limit: 1}, count: 4},
		// etcd serves keys_only from its index, which has no lease.
		{name: "keys only", req: &pb.RangeRequest{Key: []byte("b"), KeysOnly: true}, want: "b=@3/3/1", count: 1},
		{name: "keys only sorted by value keeps the lease", req: &pb.RangeRequest{Key: []byte("b"), KeysOnly: true, SortTarget: pb.RangeRequest_VALUE}, want: "b=@3/3/1/L4", count: 1},
		{name: "sort value desc", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: pb.RangeRequest_VALUE, SortOrder: pb.RangeRequest_DESCEND, Limit: 2}, want: "a=4@2/5/2 c=2@4/4/1", more: true, count: 4},
		{name: "sort key desc", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: pb.RangeRequest_KEY, SortOrder: pb.RangeRequest_DESCEND, Limit: 1}, want: "d\x00=0@6/6/1", more: true, count: 4},
		// A target other than KEY with order NONE sorts ascending...
		{name: "sort mod, order none", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: pb.RangeRequest_MOD}, want: "b=1@3/3/1/L4 c=2@4/4/1 a=4@2/5/2 d\x00=0@6/6/1", count: 4},
		// ...but, as in etcd, after the limit (plus one) is taken in key order.
		{name: "sort mod, order none, limit", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: pb.RangeRequest_MOD, Limit: 1}, want: "b=1@3/3/1/L4", more: true, count: 4},
		{name: "sort mod ascend, limit", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_ASCEND, Limit: 1}, want: "b=1@3/3/1/L4", more: true, count: 4},
		{name: "sort create desc", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_DESCEND, Limit: 2}, want: "d\x00=0@6/6/1 c=2@4/4/1", more: true, count: 4},
		{name: "sort version desc", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: pb.RangeRequest_VERSION, SortOrder: pb.RangeRequest_DESCEND, Limit: 1}, want: "a=4@2/5/2", more: true, count: 4},
		// Count ignores the revision filters; more reflects them.
		{name: "min mod", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MinModRevision: 4}, want: "a=4@2/5/2 c=2@4/4/1 d\x00=0@6/6/1", count: 4},
		{name: "max mod with limit", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MaxModRevision: 4, Limit: 1}, want: "b=1@3/3/1/L4", more: true, count: 4},
		{name: "create window", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MinCreateRevision: 3, MaxCreateRevision: 4}, want: "b=1@3/3/1/L4 c=2@4/4/1", count: 4},
		{name: "filters exclude all", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MinModRevision: 100, Limit: 1}, count: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := ts.Range(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := kvString(resp.Kvs); got != tc.want || resp.More != tc.more || resp.Count != tc.count || resp.Header.Revision != 6 {
				t.Errorf("got %q more=%v count=%d rev=%d; want %q more=%v count=%d rev=6",
					got, resp.More, resp.Count, resp.Header.Revision, tc.want, tc.more, tc.count)
			}
		})
	}
}

func TestRangeRevisionErrors(t *testing.T) {
	ts := newTestStore(t)
	for i := range 5 {
		ts.mustPut("k", fmt.Sprint(i)) // revisions 2..6
	}
	if _, err := ts.compact(4); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rev     int64
		wantErr error
	}{
		{7, ErrFutureRev}, {3, ErrCompacted}, {1, ErrCompacted}, {4, nil}, {6, nil}, {0, nil},
	} {
		_, err := ts.Range(&pb.RangeRequest{Key: []byte("k"), Revision: tc.rev})
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("range at %d: err %v, want %v", tc.rev, err, tc.wantErr)
		}
	}
	if ErrCompacted.Error() != "mvcc: required revision has been compacted" ||
		ErrFutureRev.Error() != "mvcc: required revision is a future revision" ||
		ErrKeyNotFound.Error() != "etcdserver: key not found" || ErrLeaseNotFound.Error() != "lease not found" {
		t.Error("error text differs from etcd's")
	}
}

func cmp(key string, target pb.Compare_CompareTarget, result pb.Compare_CompareResult, v any) *pb.Compare {
	c := &pb.Compare{Key: []byte(key), Target: target, Result: result}
	switch x := v.(type) {
	case string:
		c.TargetUnion = &pb.Compare_Value{Value: []byte(x)}
	case int:
		switch target {
		case pb.Compare_VERSION:
			c.TargetUnion = &pb.Compare_Version{Version: int64(x)}
		case pb.Compare_CREATE:
			c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: int64(x)}
		case pb.Compare_MOD:
			c.TargetUnion = &pb.Compare_ModRevision{ModRevision: int64(x)}
		case pb.Compare_LEASE:
			c.TargetUnion = &pb.Compare_Lease{Lease: int64(x)}
		}
	}
	return c
}

func withEnd(c *pb.Compare, end string) *pb.Compare { c.RangeEnd = []byte(end); return c }

func TestTxnCompares(t *testing.T) {
	ts := newTestStore(t)
	ts.mustPut("a", "x")               // 2
	ts.mustPut("b", "y", withLease(3)) // 3
	ts.mustPut("a", "z")               // 4
	for _, tc := range []struct {
		name string
		c    *pb.Compare
		want bool
	}{
		{"value equal", cmp("a", pb.Compare_VALUE, pb.Compare_EQUAL, "z"), true},
		{"value greater", cmp("a", pb.Compare_VALUE, pb.Compare_GREATER, "y"), true},
		{"value less", cmp("a", pb.Compare_VALUE, pb.Compare_LESS, "z"), false},
		{"version", cmp("a", pb.Compare_VERSION, pb.Compare_EQUAL, 2), true},
		{"create", cmp("a", pb.Compare_CREATE, pb.Compare_EQUAL, 2), true},
		{"mod", cmp("a", pb.Compare_MOD, pb.Compare_GREATER, 3), true},
		{"lease", cmp("b", pb.Compare_LEASE, pb.Compare_EQUAL, 3), true},
		{"not equal", cmp("b", pb.Compare_LEASE, pb.Compare_NOT_EQUAL, 3), false},
		// A missing key compares as zeroes...
		{"missing key version 0", cmp("nope", pb.Compare_VERSION, pb.Compare_EQUAL, 0), true},
		{"missing key create 0", cmp("nope", pb.Compare_CREATE, pb.Compare_EQUAL, 0), true},
		// ...except for its value: never equal to anything, not even "".
		{"missing key value empty", cmp("nope", pb.Compare_VALUE, pb.Compare_EQUAL, ""), false},
		{"missing key value not equal", cmp("nope", pb.Compare_VALUE, pb.Compare_NOT_EQUAL, "q"), false},
		// A range compare must hold for every key in it.
		{"range all hold", withEnd(cmp("a", pb.Compare_VERSION, pb.Compare_GREATER, 0), "c"), true},
		{"range one fails", withEnd(cmp("a", pb.Compare_VERSION, pb.Compare_EQUAL, 2), "c"), false},
		{"range from key", withEnd(cmp("a", pb.Compare_CREATE, pb.Compare_LESS, 4), "\x00"), true},
		{"empty range as zeroes", withEnd(cmp("c", pb.Compare_MOD, pb.Compare_EQUAL, 0), "d"), true},
		{"empty range value", withEnd(cmp("c", pb.Compare_VALUE, pb.Compare_NOT_EQUAL, "q"), "d"), false},
		// A target union of the wrong type compares with the zero value.
		{"mismatched union", &pb.Compare{Key: []byte("a"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("z")}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := ts.txn(&pb.TxnRequest{Compare: []*pb.Compare{tc.c}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Succeeded != tc.want {
				t.Errorf("succeeded = %v, want %v", resp.Succeeded, tc.want)
			}
			if resp.Header.Revision != 4 {
				t.Errorf("a txn without writes: header revision %d, want 4", resp.Header.Revision)
			}
		})
	}
	if ts.Rev() != 4 {
		t.Fatalf("txns without writes moved the revision to %d", ts.Rev())
	}
}

func TestTxnExecution(t *testing.T) {
	ts := newTestStore(t)
	ts.mustPut("a", "1") // 2
	resp, err := ts.txn(&pb.TxnRequest{
		Compare: []*pb.Compare{cmp("a", pb.Compare_VALUE, pb.Compare_EQUAL, "1")},
		Success: []*pb.RequestOp{
			opGet(&pb.RangeRequest{Key: []byte("b")}),
			opPut("b", "2"),
			opGet(&pb.RangeRequest{Key: []byte("b")}),
			opDel("a", ""),
			// The nested compare sees the state before the txn: a is
			// still there, b not yet.
			opTxn(&pb.TxnRequest{
				Compare: []*pb.Compare{cmp("a", pb.Compare_VERSION, pb.Compare_EQUAL, 1), cmp("b", pb.Compare_VERSION, pb.Compare_EQUAL, 0)},
				Success: []*pb.RequestOp{opPut("c", "3"), opGet(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})},
			}),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Responses
	if !resp.Succeeded || resp.Header.Revision != 3 || ts.Rev() != 3 {
		t.Fatalf("txn: succeeded %v revision %d (store %d), want true 3", resp.Succeeded, resp.Header.Revision, ts.Rev())
	}
	if got := r[0].GetResponseRange(); len(got.Kvs) != 0 || got.Header.Revision != 2 {
		t.Errorf("range before the write: %v, want nothing at header revision 2", got)
	}
	if got := r[1].GetResponsePut(); got.Header.Revision != 3 {
		t.Errorf("put: %v", got)
	}
	if got := r[2].GetResponseRange(); kvString(got.Kvs) != "b=2@3/3/1" || got.Header.Revision != 3 {
		t.Errorf("range after the write: %v", got)
	}
	if got := r[3].GetResponseDeleteRange(); got.Deleted != 1 || got.Header.Revision != 3 {
		t.Errorf("delete: %v", got)
	}
	nested := r[4].GetResponseTxn()
	if !nested.Succeeded || nested.Header == nil || nested.Header.Revision != 0 {
		t.Errorf("nested txn: %v, want succeeded with an empty header (as etcd)", nested)
	}
	if got := nested.Responses[1].GetResponseRange(); kvString(got.Kvs) != "b=2@3/3/1 c=3@3/3/1" {
		t.Errorf("nested range: %q", kvString(got.Kvs))
	}
	// One main revision, sub-revisions in order: put b, delete a, put c.
	evs, _, _, err := ts.Events(3, 0)
	if err != nil || len(evs) != 3 || string(evs[0].Kv.Key) != "b" || evs[1].Type != mvccpb.Event_DELETE || string(evs[2].Kv.Key) != "c" {
		t.Fatalf("events at 3: %v, %v", evs, err)
	}
}

func TestTxnChecksBeforeWriting(t *testing.T) {
	ts := newTestStore(t)
	ts.mustPut("a", "1") // 2
	for _, tc := range []struct {
		name string
		ops  []*pb.RequestOp
		want error
	}{
		{"future range", []*pb.RequestOp{opPut("x", "1"), opGet(&pb.RangeRequest{Key: []byte("a"), Revision: 3})}, ErrFutureRev},
		{"missing lease", []*pb.RequestOp{opPut("x", "1"), {Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("y"), Lease: 100}}}}, ErrLeaseNotFound},
		{"ignore value on absent key", []*pb.RequestOp{opPut("x", "1"), {Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("y"), IgnoreValue: true}}}}, ErrKeyNotFound},
		{"nested", []*pb.RequestOp{opPut("x", "1"), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opGet(&pb.RangeRequest{Key: []byte("a"), Revision: 9})}})}, ErrFutureRev},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.txn(&pb.TxnRequest{Success: tc.ops})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if ts.Rev() != 2 || len(ts.get("x", 0).Kvs) != 0 {
				t.Fatalf("a rejected txn wrote something")
			}
		})
	}
	// The branch not taken is not checked.
	resp, err := ts.txn(&pb.TxnRequest{Failure: []*pb.RequestOp{opGet(&pb.RangeRequest{Key: []byte("a"), Revision: 99})}})
	if err != nil || !resp.Succeeded {
		t.Fatalf("txn with a bad op in the branch not taken: %v, %v", resp, err)
	}
}

func TestGroupedWrite(t *testing.T) {
	ts := newTestStore(t)
	w, err := ts.apply(func(w *Write) error {
		if _, err := w.Put(&pb.PutRequest{Key: []byte("a"), Value: []byte("1")}); err != nil {
			return err
		}
		if _, err := w.Put(&pb.PutRequest{Key: []byte("a"), Value: []byte("2"), PrevKv: true}); err != nil {
			return err
		}
		if _, err := w.Put(&pb.PutRequest{Key: []byte("b"), Lease: 100}); !errors.Is(err, ErrLeaseNotFound) {
			return fmt.Errorf("put with a missing lease: %v", err)
		}
		resp, err := w.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("a")})
		if err != nil || resp.Header.Revision != 4 || w.Rev() != 4 {
			return fmt.Errorf("delete in group: %v %v", resp, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ts.Rev() != 4 || len(w.Events()) != 3 || w.Events()[1].PrevKv == nil {
		t.Fatalf("rev %d, events %v", ts.Rev(), w.Events())
	}
	if got := kvString(ts.get("a", 3).Kvs); got != "a=2@2/3/2" {
		t.Fatalf("a@3 = %q", got)
	}
}

func TestCompact(t *testing.T) {
	ts := newTestStore(t)
	for i := range 5 {
		ts.mustPut("k", fmt.Sprint(i)) // 2..6
	}
	ts.del("k", "", false) // 7
	ts.mustPut("j", "x")   // 8
	var resp *pb.CompactionResponse
	var ch <-chan struct{}
	if _, err := ts.apply(func(w *Write) (err error) {
		resp, ch, err = w.Compact(&pb.CompactionRequest{Revision: 7})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != 8 || ts.CompactRev() != 7 {
		t.Fatalf("compact: %v, compact rev %d", resp, ts.CompactRev())
	}
	waitClosed(t, ch)
	// The deleted key is gone entirely; j keeps its only version.
	if n := countPrefix(t, ts.eng, 'k'); n != 1 {
		t.Fatalf("%d versions left after compaction, want 1", n)
	}
	if got := kvString(ts.get("j", 8).Kvs); got != "j=x@8/8/1" {
		t.Fatalf("j = %q", got)
	}
	for _, tc := range []struct {
		rev  int64
		want error
	}{{7, ErrCompacted}, {6, ErrCompacted}, {9, ErrFutureRev}} {
		_, err := ts.compact(tc.rev)
		if !errors.Is(err, tc.want) {
			t.Errorf("compact %d: %v, want %v", tc.rev, err, tc.want)
		}
	}
	// ErrCompacted comes with a channel that closes once the earlier
	// compaction is done (as etcd's does).
	var ech <-chan struct{}
	ts.apply(func(w *Write) (err error) {
		_, ech, err = w.Compact(&pb.CompactionRequest{Revision: 3})
		return err
	})
	waitClosed(t, ech)
}

func TestReadTxn(t *testing.T) {
	ts := newTestStore(t)
	ts.mustPut("a", "1") // 2
	ts.mustPut("a", "2") // 3
	r := &pb.TxnRequest{
		Compare: []*pb.Compare{cmp("a", pb.Compare_VERSION, pb.Compare_EQUAL, 2)},
		Success: []*pb.RequestOp{opGet(&pb.RangeRequest{Key: []byte("a")}), opGet(&pb.RangeRequest{Key: []byte("a"), Revision: 2})},
	}
	if !TxnReadOnly(r) {
		t.Fatal("a txn of ranges is read-only")
	}
	resp, err := ts.ReadTxn(r)
	if err != nil || !resp.Succeeded || resp.Header.Revision != 3 ||
		kvString(resp.Responses[0].GetResponseRange().Kvs) != "a=2@2/3/2" ||
		kvString(resp.Responses[1].GetResponseRange().Kvs) != "a=1@2/2/1" {
		t.Fatalf("ReadTxn: %v, %v", resp, err)
	}
	r.Success = append(r.Success, opGet(&pb.RangeRequest{Key: []byte("a"), Revision: 4}))
	if _, err := ts.ReadTxn(r); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("ReadTxn with a future range: %v", err)
	}
	// As in etcd, a nested txn makes a txn a writing one, even if it only reads.
	for _, w := range []*pb.TxnRequest{
		{Failure: []*pb.RequestOp{opPut("a", "x")}},
		{Success: []*pb.RequestOp{opDel("a", "")}},
		{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{})}},
	} {
		if TxnReadOnly(w) {
			t.Errorf("TxnReadOnly(%v) = true", w)
		}
		if _, err := ts.ReadTxn(w); err == nil {
			t.Errorf("ReadTxn(%v) ran a writing txn", w)
		}
	}
}
