package crash

import (
	"fmt"
	"slices"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// writeState is what the test knows about one write request.
type writeState int

const (
	// inFlight: sent, no answer yet (or the answer was an error): the
	// crash may have kept it or lost it.
	inFlight writeState = iota
	// acked: the server answered with a revision; it must survive.
	acked
	// lost: it was in flight at a crash and absent after the restart; it
	// must never appear later.
	lost
)

// write is one write request: a Put of one key, or a Txn putting two.
type write struct {
	keys   []string
	values []string
	state  writeState
	rev    int64 // the revision it was acknowledged with or found at
}

func (w *write) String() string {
	return fmt.Sprintf("write %q (state %d, rev %d)", w.keys, w.state, w.rev)
}

// book records every write of a test across all its crash cycles.
type book struct {
	mu     sync.Mutex
	writes []*write
	byKey  map[string]*write
	// compacted is the highest compaction revision acknowledged.
	compacted int64
}

// compactAcked records an acknowledged compaction.
func (b *book) compactAcked(rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.compacted = max(b.compacted, rev)
}

// compactedRev returns the highest compaction revision acknowledged.
func (b *book) compactedRev() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.compacted
}

func newBook() *book { return &book{byKey: map[string]*write{}} }

// add registers a write before it is sent.
func (b *book) add(keys, values []string) *write {
	w := &write{keys: keys, values: values}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes = append(b.writes, w)
	for _, k := range keys {
		b.byKey[k] = w
	}
	return w
}

// ack records the revision the server acknowledged w with.
func (b *book) ack(w *write, rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w.state, w.rev = acked, rev
}

// maxRev is the highest revision of a write known to be in the store.
func (b *book) maxRev() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var m int64
	for _, w := range b.writes {
		if w.state == acked {
			m = max(m, w.rev)
		}
	}
	return m
}

// settled counts the in-flight writes one check found in the store (kept)
// and missing (lost).
type settled struct{ kept, lost int }

// check compares the store's full contents (resp, a Range over every key)
// with the book, settles the writes a crash left in flight, and returns
// every violation it finds.
func (b *book) check(resp *pb.RangeResponse) []string {
	bad, _ := b.checkSettle(resp)
	return bad
}

// checkSettle is check, also counting how it settled in-flight writes.
func (b *book) checkSettle(resp *pb.RangeResponse) ([]string, settled) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var bad []string
	report := func(format string, args ...any) {
		if len(bad) < 50 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	inStore := map[string]*mvccpb.KeyValue{}
	for _, kv := range resp.Kvs {
		inStore[string(kv.Key)] = kv
		if b.byKey[string(kv.Key)] == nil {
			report("key %q is in the store but was never written (value %q, mod revision %d)", kv.Key, kv.Value, kv.ModRevision)
		}
		if kv.Version != 1 {
			report("key %q has version %d: written once, so a write was applied more than once", kv.Key, kv.Version)
		}
	}
	var st settled
	revOwner := map[int64]*write{}
	for _, w := range b.writes {
		var found []*mvccpb.KeyValue
		for _, k := range w.keys {
			if kv := inStore[k]; kv != nil {
				found = append(found, kv)
			}
		}
		switch {
		case w.state == lost && len(found) > 0:
			report("%v was absent after an earlier restart but is in the store now (mod revision %d)", w, found[0].ModRevision)
			continue
		case w.state == lost:
			continue
		case w.state == acked && len(found) == 0:
			report("%v was acknowledged but is missing after the restart", w)
			continue
		case len(found) == 0:
			w.state = lost
			st.lost++
			continue
		case len(found) != len(w.keys):
			report("%v is partly in the store: %d of its %d keys (a txn applied in part)", w, len(found), len(w.keys))
			continue
		}
		if w.state == inFlight {
			// The crash hid the answer; the write made it, so it must
			// stay, at the revision it was applied with.
			w.state, w.rev = acked, found[0].ModRevision
			st.kept++
		}
		for i, kv := range found {
			if string(kv.Value) != w.values[i] {
				report("%v: key %q has value %q, want %q", w, kv.Key, kv.Value, w.values[i])
			}
			if kv.ModRevision != w.rev || kv.CreateRevision != w.rev {
				report("%v: key %q has create/mod revision %d/%d, acknowledged at %d", w, kv.Key, kv.CreateRevision, kv.ModRevision, w.rev)
			}
		}
		if other := revOwner[w.rev]; other != nil {
			report("%v and %v share revision %d", w, other, w.rev)
		}
		revOwner[w.rev] = w
	}
	// etcd numbers write requests densely from 2; nothing else in this
	// store writes, so every revision up to the current one is one write.
	cur := resp.Header.GetRevision()
	var missing []int64
	for r := int64(2); r <= cur; r++ {
		if revOwner[r] == nil {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		report("revisions %v (of 2..%d) belong to no write in the store: a write was applied that the store does not show, or revisions skipped", clip(missing), cur)
	}
	for r := range revOwner {
		if r > cur {
			report("a write is at revision %d, above the store's revision %d", r, cur)
		}
	}
	return bad, st
}

func clip(revs []int64) []int64 {
	slices.Sort(revs)
	if len(revs) > 20 {
		return revs[:20]
	}
	return revs
}
