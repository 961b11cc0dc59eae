package mvcc

import (
	"bytes"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// Write applies write requests into a batch. Each request that changes
// something takes the next main revision; the writes inside one request get
// sub-revisions 0, 1, .... Several requests may share one Write (group
// apply): each sees the effects of the ones before it.
//
// Only one goroutine (the apply goroutine) may use a Write, and only one
// Write may be open at a time. The caller commits the batch and then calls
// Done; until Done, readers see none of it. If the batch is discarded
// instead, the Write must be dropped without calling Done, and the store is
// as if it never existed.
//
// An error other than the package's sentinel errors (a storage failure)
// leaves the batch with part of a request in it: the caller must discard it.
type Write struct {
	s          *Store
	b          *storage.Batch
	startRev   int64 // the published revision when the Write began
	rev        int64 // current revision, counting this Write's requests
	compactRev int64 // compaction revision, counting this Write's requests
	compacted  bool  // a compaction was scheduled in this Write
	waiters    []chan struct{}
	events     []*mvccpb.Event

	// v reads the batch and the engine for every request of the Write: one
	// iterator, opened on first use and closed by the batch, refreshed when
	// the batch has grown (seen is the batch count it last saw).
	v      *view
	seen   uint32
	keyBuf []byte
	valBuf []byte
	pfxBuf []byte
	t      txnWrite // the request in progress
}

// Write starts applying write requests into b, which must be an indexed
// batch (storage.Engine.NewBatch) on the store's engine.
func (s *Store) Write(b *storage.Batch) *Write {
	st := s.state.Load()
	w := &Write{s: s, b: b, startRev: st.rev, rev: st.rev, compactRev: st.compactRev}
	// The revision is recorded once per batch, however many requests
	// moved it.
	b.BeforeCommit(func() {
		if w.rev != w.startRev {
			w.b.Set(metaRev, encodeInt64(w.rev), nil)
		}
	})
	return w
}

// Rev returns the revision the store will be at once this Write is done.
func (w *Write) Rev() int64 { return w.rev }

// Done publishes the Write's revision and compaction revision to readers and
// starts the physical compaction it scheduled, if any. Call it after the
// batch is committed.
func (w *Write) Done() {
	w.s.state.Store(&revState{rev: w.rev, compactRev: w.compactRev})
	if w.compacted {
		w.s.comp.schedule(w.compactRev, w.waiters)
	}
}

// Events returns the events of this Write's requests, in revision order.
// A PUT event carries the new KeyValue, a DELETE event the key and the
// deletion's revision as ModRevision (as etcd's watch does); both carry the
// key's previous live version in PrevKv when there was one. The events share
// memory with the requests and responses: treat them as read-only.
func (w *Write) Events() []*mvccpb.Event { return w.events }

// txnWrite is one write request in progress: a Put, a DeleteRange or a Txn
// with everything nested in it. All its writes share main revision
// beginRev+1.
type txnWrite struct {
	w          *Write // nil for a read-only txn on the published state
	v          *view  // a read-only txn's view; a write's is its Write's
	compactRev int64
	beginRev   int64
	changes    int64 // writes so far: the next sub-revision
}

func (w *Write) begin() (*txnWrite, error) {
	if w.v == nil {
		it, err := w.b.NewTrackedIter(&keysIterOptions)
		if err != nil {
			return nil, fmt.Errorf("mvcc: open batch iterator: %w", err)
		}
		w.v, w.seen = &view{it: it}, w.b.Count()
	}
	// Requests run one after another: each reuses the Write's txnWrite.
	w.t = txnWrite{w: w, compactRev: w.compactRev, beginRev: w.rev}
	return &w.t, nil
}

// view returns the iterator, refreshed if the batch grew since it last
// looked: a pebble batch iterator sees only the writes made before it was
// created or refreshed.
func (t *txnWrite) view() *view {
	if t.w == nil {
		return t.v
	}
	w := t.w
	if n := w.b.Count(); n != w.seen {
		w.v.it.SetOptions(&keysIterOptions)
		w.seen = n
	}
	return w.v
}

// readRev is the revision reads inside the request see: the one before it,
// or its own once it has written something (as in etcd).
func (t *txnWrite) readRev() int64 {
	if t.changes > 0 {
		return t.beginRev + 1
	}
	return t.beginRev
}

// end moves the Write to the request's revision if it wrote anything.
func (t *txnWrite) end() {
	if t.w != nil && t.changes > 0 {
		t.w.rev = t.beginRev + 1
	}
}

func (w *Write) checkLease(id int64) error {
	if id == 0 {
		return nil
	}
	if w.s.opts.LeaseExists == nil || !w.s.opts.LeaseExists(id) {
		return ErrLeaseNotFound
	}
	return nil
}

// Put applies a PutRequest. Errors: ErrLeaseNotFound (checked first, as
// etcd does), then ErrKeyNotFound for ignore_value/ignore_lease on an absent
// key; on those nothing is written.
func (w *Write) Put(r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := w.checkLease(r.Lease); err != nil {
		return nil, err
	}
	t, err := w.begin()
	if err != nil {
		return nil, err
	}
	defer t.end()
	prev, err := t.prevForPut(r)
	if err != nil {
		return nil, err
	}
	if (r.IgnoreValue || r.IgnoreLease) && prev == nil {
		return nil, ErrKeyNotFound
	}
	return t.put(r, prev)
}

// absent reports whether key certainly has no version, in the engine or in
// the batch: its lookup can be skipped (see keyFilter).
func (w *Write) absent(key []byte) bool {
	w.pfxBuf = keyPrefix(w.pfxBuf[:0], key)
	return w.s.filter.absent(w.pfxBuf)
}

// prevForPut reads the key's current value when the request needs it.
func (t *txnWrite) prevForPut(r *pb.PutRequest) (*mvccpb.KeyValue, error) {
	if !r.IgnoreValue && !r.IgnoreLease && !r.PrevKv {
		return nil, nil
	}
	if t.w.absent(r.Key) {
		return nil, nil
	}
	var ver version
	ok, err := t.view().get(r.Key, t.readRev(), &ver)
	if err != nil || !ok {
		return nil, err
	}
	return keyValue(bytes.Clone(r.Key), &ver), nil
}

// put writes the PutRequest's new version. prev is the key's current value
// when prevForPut read it.
func (t *txnWrite) put(r *pb.PutRequest, prev *mvccpb.KeyValue) (*pb.PutResponse, error) {
	value, lease := r.Value, r.Lease
	// A missing prev here would need the key deleted earlier in the same
	// txn, which the api rejects as a duplicate key; etcd would crash, we
	// fall back to an empty value and no lease.
	if r.IgnoreValue {
		value = prev.GetValue()
	}
	if r.IgnoreLease {
		lease = prev.GetLease()
	}
	rev := t.beginRev + 1
	var head version
	exists := false
	if !t.w.absent(r.Key) {
		var err error
		if exists, err = t.view().get(r.Key, rev, &head); err != nil {
			return nil, err
		}
	}
	o := &putObjects{}
	kv := &o.kv
	kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease = r.Key, value, rev, rev, 1, lease
	ev := &o.ev
	ev.Type, ev.Kv = mvccpb.Event_PUT, kv
	if exists {
		kv.CreateRevision = head.create
		kv.Version = head.ver + 1
	}
	// The event's PrevKv is the key as it was before the request (etcd's
	// watch reads it at mod_revision - 1), not a version this same txn
	// wrote earlier; and a create event (version 1) has none, even when the
	// txn deleted the key before putting it again.
	switch {
	case exists && head.main == rev:
		var before version
		ok, err := t.view().get(r.Key, t.beginRev, &before)
		if err != nil {
			return nil, err
		}
		if ok {
			fillKeyValue(&o.prev, r.Key, &before)
			ev.PrevKv = &o.prev
		}
	case exists:
		fillKeyValue(&o.prev, r.Key, &head)
		ev.PrevKv = &o.prev
	}
	t.writeVersion(r.Key, kv, false)
	t.w.events = append(t.w.events, ev)
	resp := &o.resp
	o.hdr.Revision = rev
	resp.Header = &o.hdr
	if r.PrevKv {
		resp.PrevKv = prev
	}
	return resp, nil
}

// putObjects are the messages a put makes, allocated together: they live
// as long as one another (the event, kept by watchers, holds the response's
// few bytes a little longer), and a put is the hottest write.
type putObjects struct {
	kv, prev mvccpb.KeyValue
	ev       mvccpb.Event
	resp     pb.PutResponse
	hdr      pb.ResponseHeader
}

// writeVersion adds one version and its event to the batch at the next
// sub-revision.
func (t *txnWrite) writeVersion(key []byte, kv *mvccpb.KeyValue, tombstone bool) {
	rev, sub := t.beginRev+1, t.changes
	t.changes++
	w := t.w
	w.keyBuf = versionKey(w.keyBuf[:0], key, rev, sub)
	// Before any later lookup of key, in this Write or after it.
	w.s.filter.add(w.keyBuf[:len(w.keyBuf)-revLen])
	typ := eventPut
	if tombstone {
		typ = eventDelete
		w.b.Set(w.keyBuf, tombstoneValue, nil)
	} else {
		w.valBuf = appendVersionValue(w.valBuf[:0], kv.CreateRevision, kv.Version, kv.Lease, kv.Value)
		w.b.Set(w.keyBuf, w.valBuf, nil)
	}
	w.keyBuf = eventKey(w.keyBuf[:0], rev, sub)
	w.valBuf = append(append(w.valBuf[:0], typ), key...)
	w.b.Set(w.keyBuf, w.valBuf, nil)
}

// DeleteRange applies a DeleteRangeRequest. Deleting nothing takes no
// revision: the response then carries the current one.
func (w *Write) DeleteRange(r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	t, err := w.begin()
	if err != nil {
		return nil, err
	}
	defer t.end()
	return t.deleteRange(r)
}

func (t *txnWrite) deleteRange(r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	v := t.view()
	var victims []*mvccpb.KeyValue
	end := gteEnd(r.RangeEnd)
	if end == nil {
		if !t.w.absent(r.Key) {
			var ver version
			ok, err := v.get(r.Key, t.readRev(), &ver)
			if err != nil {
				return nil, err
			}
			if ok {
				victims = append(victims, keyValue(bytes.Clone(r.Key), &ver))
			}
		}
	} else {
		err := v.scan(r.Key, end, t.readRev(), func(prefix []byte, ver *version) (bool, error) {
			key, err := decodePrefix(prefix)
			if err != nil {
				return false, err
			}
			victims = append(victims, keyValue(key, ver))
			return true, nil
		})
		if err != nil {
			return nil, err
		}
	}
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{}, Deleted: int64(len(victims))}
	if r.PrevKv {
		resp.PrevKvs = victims
		if resp.PrevKvs == nil {
			resp.PrevKvs = []*mvccpb.KeyValue{}
		}
	}
	rev := t.beginRev + 1
	for _, prev := range victims {
		evPrev := prev
		if prev.ModRevision == rev {
			// Written earlier in this txn: the event carries the key as it
			// was before the txn, as etcd's watch does.
			var before version
			ok, err := v.get(prev.Key, t.beginRev, &before)
			if err != nil {
				return nil, err
			}
			evPrev = nil
			if ok {
				evPrev = keyValue(prev.Key, &before)
			}
		}
		t.writeVersion(prev.Key, nil, true)
		t.w.events = append(t.w.events, &mvccpb.Event{
			Type:   mvccpb.Event_DELETE,
			Kv:     &mvccpb.KeyValue{Key: prev.Key, ModRevision: rev},
			PrevKv: evPrev,
		})
	}
	resp.Header.Revision = t.readRev()
	return resp, nil
}
