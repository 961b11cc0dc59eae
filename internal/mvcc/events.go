package mvcc

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Events reads the event log for watch catch-up: the events of revisions
// from on, oldest first, as Write.Events returns them (PrevKv set when the
// key had a live version just before, unless that is below the compaction
// revision, where etcd has none to give either). It stops at the published
// revision, or at the end of the first revision that brings the count to
// limit or more (0: no limit), so a revision's events are never split. next
// is the revision to continue from; rev is the store's current revision as
// read. It returns ErrCompacted if from is below the compaction revision.
// Safe for concurrent use.
func (s *Store) Events(from int64, limit int) (evs []*mvccpb.Event, next int64, rev int64, err error) {
	var evIt *pebble.Iterator
	var v *view
	var st *revState
	for {
		st = s.state.Load()
		if evIt, err = s.db.NewIter(&pebble.IterOptions{LowerBound: eventKey(nil, max(from, 0), 0), UpperBound: eventKey(nil, st.rev+1, 0)}); err != nil {
			return nil, 0, 0, fmt.Errorf("mvcc: open iterator: %w", err)
		}
		kIt, err := s.db.NewIter(&keysIterOptions)
		if err != nil {
			evIt.Close()
			return nil, 0, 0, fmt.Errorf("mvcc: open iterator: %w", err)
		}
		v = &view{it: kIt}
		if s.state.Load().compactRev == st.compactRev {
			break
		}
		evIt.Close()
		v.close()
	}
	defer evIt.Close()
	defer v.close()
	if from < st.compactRev {
		return nil, 0, st.rev, ErrCompacted
	}
	next = max(from, st.rev+1)
	last := int64(-1)
	for valid := evIt.First(); valid; valid = evIt.Next() {
		main, sub, err := decodeEventKey(evIt.Key())
		if err != nil {
			return nil, 0, 0, err
		}
		if limit > 0 && len(evs) >= limit && main != last {
			next = main
			break
		}
		last = main
		val, err := evIt.ValueAndErr()
		if err != nil {
			return nil, 0, 0, fmt.Errorf("mvcc: read event: %w", err)
		}
		if len(val) < 1 {
			return nil, 0, 0, fmt.Errorf("%w: empty event", errCorruptKey)
		}
		ev, err := v.event(val[0], bytes.Clone(val[1:]), main, sub, st.compactRev)
		if err != nil {
			return nil, 0, 0, err
		}
		evs = append(evs, ev)
	}
	if err := evIt.Error(); err != nil {
		return nil, 0, 0, fmt.Errorf("mvcc: read events: %w", err)
	}
	return evs, next, st.rev, nil
}

// event builds the event of key at (main, sub) from its stored version and
// the key's newest version below main (the one before the whole txn, not
// one the txn wrote at an earlier sub-revision).
func (v *view) event(typ byte, key []byte, main, sub, compactRev int64) (*mvccpb.Event, error) {
	ev := &mvccpb.Event{Type: mvccpb.Event_PUT}
	if typ == eventDelete {
		ev.Type = mvccpb.Event_DELETE
		ev.Kv = &mvccpb.KeyValue{Key: key, ModRevision: main}
	}
	v.seekBuf = versionKey(v.seekBuf[:0], key, main, sub)
	found := v.it.SeekGE(v.seekBuf) && bytes.Equal(v.it.Key(), v.seekBuf)
	var ver version
	if ev.Type == mvccpb.Event_PUT {
		if !found {
			return nil, fmt.Errorf("mvcc: event %d.%d names key %q with no version there", main, sub, key)
		}
		if err := v.decodeCurrent(&ver); err != nil {
			return nil, err
		}
		ev.Kv = keyValue(key, &ver)
	}
	if main-1 < compactRev || ev.Kv.Version == 1 {
		// Nothing to read below the compaction revision; and etcd gives a
		// create event no PrevKv (not even when the same txn deleted the
		// key before putting it again).
		return ev, nil
	}
	// The previous version: right after this one, or, for a delete whose
	// tombstone compaction already removed, wherever the seek landed.
	if found && !v.it.Next() {
		return ev, v.it.Error()
	}
	v.prefix = keyPrefix(v.prefix[:0], key)
	if !v.it.Valid() || !bytes.HasPrefix(v.it.Key(), v.prefix) {
		return ev, nil
	}
	if err := v.decodeCurrent(&ver); err != nil {
		return nil, err
	}
	if ver.main == main {
		// Written earlier in the same txn: PrevKv is the key as it was
		// before the txn, as etcd's watch reads it at mod_revision - 1.
		v.seekBuf = seekAt(v.seekBuf[:0], v.prefix, main-1)
		if !v.it.SeekGE(v.seekBuf) || !bytes.HasPrefix(v.it.Key(), v.prefix) {
			return ev, v.it.Error()
		}
		if err := v.decodeCurrent(&ver); err != nil {
			return nil, err
		}
	}
	if !ver.tombstone {
		ev.PrevKv = keyValue(key, &ver)
	}
	return ev, nil
}
