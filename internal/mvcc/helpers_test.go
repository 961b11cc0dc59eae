package mvcc

import (
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// testStore is a store on a fresh engine with helpers that apply one request
// per Write, the way the apply loop does.
type testStore struct {
	t   testing.TB
	dir string
	eng *storage.Engine
	*Store
	opts    Options
	engOpts storage.Options // the engine's, at the next open
}

func newTestStore(t testing.TB) *testStore {
	t.Helper()
	ts := &testStore{t: t, dir: t.TempDir()}
	ts.opts = Options{LeaseExists: func(id int64) bool { return id > 0 && id < 100 }}
	ts.open()
	t.Cleanup(ts.close)
	return ts
}

func (ts *testStore) open() {
	ts.t.Helper()
	eng, err := storage.Open(ts.dir, ts.engOpts)
	if err != nil {
		ts.t.Fatal(err)
	}
	s, err := Open(eng, ts.opts)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.eng, ts.Store = eng, s
	// The key filter in use from the first write, as in a member that
	// has run for a while: every test goes through it.
	s.waitFilter()
}

// waitFilter waits for the key filter's builder to end.
func (s *Store) waitFilter() { <-s.filter.done }

func (ts *testStore) close() {
	if ts.Store == nil {
		return
	}
	ts.Store.Close()
	// Pebble refuses to close with iterators still open: this catches a
	// view the store failed to close.
	if err := ts.eng.Close(); err != nil {
		ts.t.Errorf("close engine: %v", err)
	}
	ts.Store, ts.eng = nil, nil
}

func (ts *testStore) reopen() {
	ts.t.Helper()
	ts.close()
	ts.open()
}

// apply runs fn in one Write and commits it.
func (ts *testStore) apply(fn func(w *Write) error) (*Write, error) {
	ts.t.Helper()
	b := ts.eng.NewBatch()
	w := ts.Store.Write(b)
	if err := fn(w); err != nil {
		known := errors.Is(err, ErrCompacted) || errors.Is(err, ErrFutureRev) ||
			errors.Is(err, ErrKeyNotFound) || errors.Is(err, ErrLeaseNotFound)
		if !known {
			b.Discard()
			ts.t.Fatalf("apply: %v", err)
		}
		// A rejected request writes nothing; commit what the others did.
		if cerr := b.Commit(false); cerr != nil {
			ts.t.Fatal(cerr)
		}
		w.Done()
		return w, err
	}
	if err := b.Commit(false); err != nil {
		ts.t.Fatal(err)
	}
	w.Done()
	return w, nil
}

func (ts *testStore) put(key, val string, opts ...func(*pb.PutRequest)) (*pb.PutResponse, error) {
	r := &pb.PutRequest{Key: []byte(key), Value: []byte(val)}
	for _, o := range opts {
		o(r)
	}
	var resp *pb.PutResponse
	_, err := ts.apply(func(w *Write) (err error) { resp, err = w.Put(r); return err })
	return resp, err
}

func (ts *testStore) mustPut(key, val string, opts ...func(*pb.PutRequest)) *pb.PutResponse {
	ts.t.Helper()
	resp, err := ts.put(key, val, opts...)
	if err != nil {
		ts.t.Fatalf("put %q: %v", key, err)
	}
	return resp
}

func (ts *testStore) del(key, end string, prev bool) *pb.DeleteRangeResponse {
	ts.t.Helper()
	r := &pb.DeleteRangeRequest{Key: []byte(key), PrevKv: prev}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	var resp *pb.DeleteRangeResponse
	if _, err := ts.apply(func(w *Write) (err error) { resp, err = w.DeleteRange(r); return err }); err != nil {
		ts.t.Fatal(err)
	}
	return resp
}

func (ts *testStore) txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	var resp *pb.TxnResponse
	_, err := ts.apply(func(w *Write) (err error) { resp, err = w.Txn(r); return err })
	return resp, err
}

func (ts *testStore) compact(rev int64) (<-chan struct{}, error) {
	var ch <-chan struct{}
	_, err := ts.apply(func(w *Write) (err error) {
		_, ch, err = w.Compact(&pb.CompactionRequest{Revision: rev})
		return err
	})
	return ch, err
}

func (ts *testStore) get(key string, rev int64) *pb.RangeResponse {
	ts.t.Helper()
	resp, err := ts.Range(&pb.RangeRequest{Key: []byte(key), Revision: rev})
	if err != nil {
		ts.t.Fatalf("range %q@%d: %v", key, rev, err)
	}
	return resp
}
