package lease

import (
	"context"
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/storage"
)

// member is one member's state machine as the server wires it: an engine,
// a lessor and an mvcc store that asks the lessor whether leases exist.
type member struct {
	t     testing.TB
	dir   string
	clock *clocktest.Fake
	opts  Options
	eng   *storage.Engine
	le    *Lessor
	kv    *mvcc.Store
}

func newMember(t testing.TB, opts Options) *member {
	t.Helper()
	m := &member{t: t, dir: t.TempDir(), clock: clocktest.NewFake(), opts: opts}
	m.opts.Clock = m.clock
	m.open()
	t.Cleanup(m.close)
	return m
}

func (m *member) open() {
	m.t.Helper()
	eng, err := storage.Open(m.dir, storage.Options{NoSync: true})
	if err != nil {
		m.t.Fatal(err)
	}
	le, err := Open(eng, m.opts)
	if err != nil {
		m.t.Fatal(err)
	}
	kv, err := mvcc.Open(eng, mvcc.Options{LeaseExists: le.Exists})
	if err != nil {
		m.t.Fatal(err)
	}
	m.eng, m.le, m.kv = eng, le, kv
}

func (m *member) close() {
	if m.eng == nil {
		return
	}
	m.kv.Close()
	m.eng.Close()
	m.eng = nil
}

func (m *member) reopen() {
	m.t.Helper()
	m.close()
	m.open()
}

// applier applies requests the way the server's apply loop does: every
// request into one batch, the lessor told of each request's events before
// the next request.
type applier struct {
	m    *member
	b    *storage.Batch
	w    *mvcc.Write
	seen int
}

// apply runs fn on one batch and commits it.
func (m *member) apply(fn func(a *applier)) {
	m.t.Helper()
	b := m.eng.NewBatch()
	a := &applier{m: m, b: b, w: m.kv.Write(b)}
	fn(a)
	if err := b.Commit(false); err != nil {
		m.t.Fatal(err)
	}
	a.w.Done()
}

func (a *applier) events() {
	a.m.t.Helper()
	evs := a.w.Events()
	if err := a.m.le.ApplyEvents(a.b, evs[a.seen:]); err != nil {
		a.m.t.Fatal(err)
	}
	a.seen = len(evs)
}

func (a *applier) grant(id, ttl int64) (int64, error) {
	return a.m.le.Grant(a.b, id, ttl)
}

func (a *applier) put(key string, id int64) error {
	_, err := a.w.Put(&pb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: id})
	a.events()
	return err
}

func (a *applier) do(fn func(w *mvcc.Write) error) error {
	err := fn(a.w)
	a.events()
	return err
}

// revoke revokes id as the server does: the keys come back from the
// lessor and are deleted in one txn.
func (a *applier) revoke(id int64) (*pb.TxnResponse, error) {
	keys, err := a.m.le.Revoke(a.b, id)
	if err != nil {
		return nil, err
	}
	resp, err := a.w.Txn(DeleteTxn(keys))
	if err != nil {
		a.m.t.Fatal(err)
	}
	a.events()
	return resp, nil
}

func (m *member) grant(id, ttl int64) int64 {
	m.t.Helper()
	var got int64
	m.apply(func(a *applier) {
		var err error
		if got, err = a.grant(id, ttl); err != nil {
			m.t.Fatalf("grant %d: %v", id, err)
		}
	})
	return got
}

func (m *member) put(key string, id int64) {
	m.t.Helper()
	m.apply(func(a *applier) {
		if err := a.put(key, id); err != nil {
			m.t.Fatalf("put %q lease %d: %v", key, id, err)
		}
	})
}

func (m *member) revoke(id int64) {
	m.t.Helper()
	m.apply(func(a *applier) {
		if _, err := a.revoke(id); err != nil {
			m.t.Fatalf("revoke %d: %v", id, err)
		}
	})
}

func (m *member) checkpoint(id, remaining int64) {
	m.t.Helper()
	m.apply(func(a *applier) {
		if err := m.le.Checkpoint(a.b, id, remaining); err != nil {
			m.t.Fatal(err)
		}
	})
}

// keys returns lease id's attached keys as strings.
func (m *member) keys(id int64) []string {
	m.t.Helper()
	ks, err := m.le.Keys(id)
	if err != nil {
		m.t.Fatal(err)
	}
	out := []string{}
	for _, k := range ks {
		out = append(out, string(k))
	}
	return out
}

// ttl returns TimeToLive's TTL for id.
func (m *member) ttl(id int64) int64 {
	m.t.Helper()
	resp, err := m.le.TimeToLive(&pb.LeaseTimeToLiveRequest{ID: id})
	if err != nil {
		m.t.Fatalf("time to live %d: %v", id, err)
	}
	return resp.TTL
}

// get returns key's lease, or -1 if the key does not exist.
func (m *member) get(key string) int64 {
	m.t.Helper()
	resp, err := m.kv.Range(&pb.RangeRequest{Key: []byte(key)})
	if err != nil {
		m.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return -1
	}
	return resp.Kvs[0].Lease
}

func (m *member) renew(id int64) (int64, bool, error) {
	return m.le.Renew(context.Background(), id)
}

func isErr(err, want error) bool {
	if want == nil {
		return err == nil
	}
	return errors.Is(err, want)
}
