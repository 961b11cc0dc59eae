package embed

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/internal/freeport"
)

// kvModel is the store as a sequence of writes makes it, to tell which
// events a watcher must receive.
type kvModel struct {
	rev    int64
	kvs    map[string]*mvccpb.KeyValue
	events []*mvccpb.Event // every event, in revision order, with PrevKv
}

func newKVModel() *kvModel { return &kvModel{rev: 1, kvs: map[string]*mvccpb.KeyValue{}} }

// put records puts of the given keys in one revision (one put or a txn).
func (m *kvModel) put(keys []string, val string) {
	m.rev++
	for _, k := range keys {
		old := m.kvs[k]
		kv := &mvccpb.KeyValue{Key: []byte(k), Value: []byte(val), ModRevision: m.rev, CreateRevision: m.rev, Version: 1}
		if old != nil {
			kv.CreateRevision, kv.Version = old.CreateRevision, old.Version+1
		}
		m.kvs[k] = kv
		m.events = append(m.events, &mvccpb.Event{Type: mvccpb.PUT, Kv: kv, PrevKv: old})
	}
}

// deleteRange records a delete of [from, to); no live key in it, no
// revision.
func (m *kvModel) deleteRange(from, to string) {
	var keys []string
	for k := range m.kvs {
		if k >= from && k < to {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	sort.Strings(keys)
	m.rev++
	for _, k := range keys {
		m.events = append(m.events, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(k), ModRevision: m.rev}, PrevKv: m.kvs[k]})
		delete(m.kvs, k)
	}
}

// checkedWatch is one watcher under check and what it has received.
type checkedWatch struct {
	name           string
	key, end       string // end "" is one key, "\x00" every key from key on
	start          int64
	prevKV         bool
	noPut, noDel   bool
	ch             clientv3.WatchChan
	got            []*mvccpb.Event
	compacted      int64 // the compact revision it was refused with
	lastRespRev    int64 // revision of the last event of the previous response
	atomicityBreak string
}

func (w *checkedWatch) contains(key []byte) bool {
	k := string(key)
	switch w.end {
	case "":
		return k == w.key
	case "\x00":
		return k >= w.key
	}
	return k >= w.key && k < w.end
}

func (w *checkedWatch) want(m *kvModel) []*mvccpb.Event {
	var out []*mvccpb.Event
	for _, ev := range m.events {
		if ev.Kv.ModRevision < w.start || !w.contains(ev.Kv.Key) ||
			(w.noPut && ev.Type == mvccpb.PUT) || (w.noDel && ev.Type == mvccpb.DELETE) {
			continue
		}
		out = append(out, ev)
	}
	return out
}

// drain reads the watcher's responses until it holds n events or was
// refused as compacted, checking on the way that no revision is split
// across responses.
func (w *checkedWatch) drain(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for len(w.got) < n && w.compacted == 0 {
		var wr clientv3.WatchResponse
		select {
		case wr = <-w.ch:
		case <-ctx.Done():
			t.Fatalf("%s: %d of %d events by the end of the test", w.name, len(w.got), n)
		}
		if wr.CompactRevision != 0 {
			w.compacted = wr.CompactRevision
			return
		}
		if err := wr.Err(); err != nil {
			t.Fatalf("%s: watch failed after %d events: %v", w.name, len(w.got), err)
		}
		if len(wr.Events) == 0 {
			continue
		}
		if first := wr.Events[0].Kv.ModRevision; first <= w.lastRespRev && w.atomicityBreak == "" {
			w.atomicityBreak = fmt.Sprintf("a response starts at revision %d, the previous ended at %d", first, w.lastRespRev)
		}
		w.lastRespRev = wr.Events[len(wr.Events)-1].Kv.ModRevision
		for _, ev := range wr.Events {
			w.got = append(w.got, (*mvccpb.Event)(ev))
		}
	}
}

func sameEvent(got, want *mvccpb.Event, prevKV bool) bool {
	same := func(a, b *mvccpb.KeyValue) bool {
		if a == nil || b == nil {
			return a == nil && b == nil
		}
		return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) && a.ModRevision == b.ModRevision &&
			a.CreateRevision == b.CreateRevision && a.Version == b.Version
	}
	if got.Type != want.Type || !same(got.Kv, want.Kv) {
		return false
	}
	if prevKV {
		return same(got.PrevKv, want.PrevKv)
	}
	return got.PrevKv == nil
}

// TestWatchGuarantees runs random writes (puts, deletes, txns and
// compactions) through a member while watchers on keys, ranges, prefixes
// and from-key, with filters and prev_kv, are created at random past
// revisions; the member is restarted in the middle. Every watcher must get
// exactly the events the write history gives it, in order, each revision's
// events in one response, or be refused as compacted below its start.
func TestWatchGuarantees(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { checkWatchGuarantees(t, seed) })
	}
}

func checkWatchGuarantees(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x77a7c4))
	cfg := testConfig(t, t.TempDir())
	url := "http://" + freeport.Addr(t)
	cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []string{url}, []string{url}
	m := start(t, cfg)
	c := client(t, m)
	ctx := ctxT(t)

	model := newKVModel()
	var compactRev int64
	var watches []*checkedWatch
	key := func() string { return fmt.Sprintf("k%d", rng.IntN(10)) }
	newWatch := func() {
		w := &checkedWatch{start: 1 + rng.Int64N(model.rev+1), prevKV: rng.IntN(2) == 0}
		var opts []clientv3.OpOption
		switch rng.IntN(4) {
		case 0:
			w.key = key()
		case 1:
			w.key, w.end = "k", "l"
			opts = append(opts, clientv3.WithPrefix())
		case 2:
			w.key, w.end = "k2", "k6"
			opts = append(opts, clientv3.WithRange("k6"))
		case 3:
			w.key, w.end = "k5", "\x00"
			opts = append(opts, clientv3.WithFromKey())
		}
		switch rng.IntN(5) {
		case 0:
			w.noPut = true
			opts = append(opts, clientv3.WithFilterPut())
		case 1:
			w.noDel = true
			opts = append(opts, clientv3.WithFilterDelete())
		}
		if w.prevKV {
			opts = append(opts, clientv3.WithPrevKV())
		}
		opts = append(opts, clientv3.WithRev(w.start))
		w.name = fmt.Sprintf("watch %d (%q..%q from %d, prev_kv %v, noput %v, nodelete %v)",
			len(watches), w.key, w.end, w.start, w.prevKV, w.noPut, w.noDel)
		w.ch = c.Watch(ctx, w.key, opts...)
		watches = append(watches, w)
	}

	const ops = 1000
	for i := range ops {
		if i == ops/2 {
			// Every watcher resumes on the restarted member.
			m.Close()
			m = start(t, cfg)
		}
		switch r := rng.IntN(100); {
		case r < 50:
			k, v := key(), fmt.Sprintf("v%d", i)
			if _, err := c.Put(ctx, k, v); err != nil {
				t.Fatalf("put: %v", err)
			}
			model.put([]string{k}, v)
		case r < 65:
			from := key()
			to := from + "\x00"
			if rng.IntN(2) == 0 {
				to = fmt.Sprintf("k%d", rng.IntN(10)+1)
			}
			if _, err := c.Delete(ctx, from, clientv3.WithRange(to)); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if from < to {
				model.deleteRange(from, to)
			}
		case r < 80:
			k1 := key()
			k2 := k1
			for k2 == k1 {
				k2 = key()
			}
			v := fmt.Sprintf("t%d", i)
			if _, err := c.Txn(ctx).Then(clientv3.OpPut(k1, v), clientv3.OpPut(k2, v)).Commit(); err != nil {
				t.Fatalf("txn: %v", err)
			}
			model.put([]string{k1, k2}, v)
		case r < 83:
			if rev := model.rev - rng.Int64N(20); rev > compactRev {
				if _, err := c.Compact(ctx, rev); err != nil {
					t.Fatalf("compact %d: %v", rev, err)
				}
				compactRev = rev
			}
		default:
			newWatch()
		}
	}

	for _, w := range watches {
		want := w.want(model)
		w.drain(t, ctx, len(want))
		if w.compacted != 0 {
			if w.compacted <= w.start || w.compacted > compactRev {
				t.Errorf("%s: refused as compacted at %d (compactions reached %d)", w.name, w.compacted, compactRev)
			}
			continue
		}
		if w.atomicityBreak != "" {
			t.Errorf("%s: %s", w.name, w.atomicityBreak)
		}
		for i := range want {
			if !sameEvent(w.got[i], want[i], w.prevKV) {
				t.Fatalf("%s: event %d is %v, want %v", w.name, i, w.got[i], want[i])
			}
		}
	}
	// Nothing more arrives: a final put is each watcher's next event.
	if _, err := c.Put(ctx, "k0", "last"); err != nil {
		t.Fatal(err)
	}
	model.put([]string{"k0"}, "last")
	for _, w := range watches {
		if w.compacted != 0 {
			continue
		}
		want := w.want(model)
		w.drain(t, ctx, len(want))
		if len(w.got) != len(want) {
			t.Errorf("%s: %d events, want %d", w.name, len(w.got), len(want))
		}
	}
}
