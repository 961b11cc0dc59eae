package mvcc

import "sync"

// maxPooledViews bounds the views kept for reuse: about the number of reads
// that run at once, past which a read opens its own view as before.
const maxPooledViews = 64

// viewPool keeps the views that reads at the published state have finished
// with, so that the next read at that same state reuses one instead of
// opening a Pebble iterator (building the iterator stack was a tenth of a
// serializable read's CPU, and its large frames made worker stacks grow).
//
// A pooled view is only handed to a read at the very state (the same
// *revState) it was opened at: its iterator is then exactly what a new one
// would be for that read, since everything at or below the state's
// revision was committed before it was opened, and the compaction that
// could remove history a read at that state needs starts only after a
// later state is published (see Store.openView). The first read at a new
// state empties the pool.
//
// An open iterator keeps the memtables and tables it was opened on, even
// after a flush or compaction replaced them. Views are therefore also
// tagged with the engine's generation, and the pool is emptied as soon as
// the generation changes (Store.Open registers drop with the engine), so
// the pool never keeps a flushed memtable or an obsolete table alive for
// longer than it takes to close a few iterators, even on an idle member.
type viewPool struct {
	mu     sync.Mutex
	st     *revState // the state the pooled views were opened at
	gen    uint64    // the engine generation they were opened at
	views  []*view
	closed bool
}

// get returns a pooled view opened at st and gen, or nil. A pool holding
// views of another state or generation is emptied first.
func (p *viewPool) get(st *revState, gen uint64) *view {
	p.mu.Lock()
	if p.st == st && p.gen == gen {
		var v *view
		if n := len(p.views); n > 0 {
			v = p.views[n-1]
			p.views[n-1] = nil
			p.views = p.views[:n-1]
		}
		p.mu.Unlock()
		return v
	}
	stale := p.views
	p.st, p.gen, p.views = st, gen, nil
	p.mu.Unlock()
	closeViews(stale)
	return nil
}

// put takes back a view a read has finished with, keeping it if it was
// opened at the pool's state and generation, which must still be current
// (cur, gen); otherwise it closes it.
func (p *viewPool) put(v *view, cur *revState, gen uint64) {
	p.mu.Lock()
	if !p.closed && v.st == cur && v.gen == gen && p.st == cur && p.gen == gen && len(p.views) < maxPooledViews {
		p.views = append(p.views, v)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	v.close()
}

// drop closes every pooled view. With closing set, the pool keeps nothing
// from then on (Store.Close, before the engine is closed).
func (p *viewPool) drop(closing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Closing under the lock makes drop(true) return only once no pooled
	// iterator is left open, even with a concurrent drop(false) running.
	closeViews(p.views)
	p.st, p.views = nil, nil
	if closing {
		p.closed = true
	}
}

func closeViews(vs []*view) {
	for _, v := range vs {
		v.close()
	}
}
