package mvcc

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairn-db/cairn/internal/storage"
)

// keyFilter is a Bloom filter of the keys that have at least one version in
// the store (live, deleted or older than the compaction revision): when it
// says a key has none, a write skips the engine lookup of the key's current
// version (Write.absent). Under a put load that creates keys, that lookup
// (a seek down the memtable's skiplist, a cache miss at nearly every step)
// is the apply loop's largest cost; the filter answers with one cache line
// per segment.
//
// It is not an index: it holds about 10 bits per key and no key, and it
// only ever says "absent" or "maybe". Its invariant: every key with a
// version in the engine, or in a Write's batch being built, is in it. A
// Write adds each key it writes before any later lookup (writeVersion),
// whether or not its batch commits (an extra key costs one lookup, never a
// wrong answer). Keys are never removed: a key whose versions a compaction
// removed stays in, which is safe for the same reason.
//
// A new filter is not ready: until its builder (build) has added every key
// already in the engine, Write.absent says "maybe" for everything. The
// builder runs in the background so that opening a large store does not
// wait for a walk of its keys; Writes add to the filter meanwhile, so the
// keys written after the builder opened its iterator are in it too. Past
// maxFilterKeys the filter gives up for good (it is no longer ready, drops
// its segments and stops growing) rather than grow without bound; and on a
// store larger than maxFilterBuildBytes the builder gives up before it
// walks, since the walk reads the values too (the filter is for the
// small and middling stores where a put's lookup is most of its apply).
//
// Store.Open creates one; Store.Restore, whose install replaces the
// keyspace, drops it and creates a new one. Adds come from the apply
// goroutine and the builder; lookups from the apply goroutine.
type keyFilter struct {
	seed  maphash.Seed
	ready atomic.Bool
	quit  chan struct{}
	done  chan struct{}
	// counted is how many keys the builder's count pass visited (tests).
	counted atomic.Int64

	mu struct {
		sync.Mutex
		// segs fill one after the other: a key is added to the last
		// one, and looked for in all of them. The builder adds one for
		// the keys it found; when the last is full, the next takes
		// twice as many.
		segs   []filterSeg
		gaveUp bool // past maxFilterKeys: never ready again
	}
}

// filterSeg is one Bloom filter of blocks of 512 bits: a key's probes all
// fall in one block (one cache line).
type filterSeg struct {
	blocks [][8]uint64
	keys   int // keys added to this segment
	cap    int // keys it takes before the next segment starts
}

const (
	filterBitsPerKey = 10
	filterProbes     = 7 // 1.1% false positives in a full segment (measured)
	firstFilterKeys  = 1 << 16
)

// maxFilterKeys bounds the keys the segments take in all: about 10 MiB at
// 10 bits per key. A variable for tests.
var maxFilterKeys = 1<<23 - 1<<16

// maxFilterBuildBytes is the largest store (storage.Engine.SizeInUse)
// whose keys the builder walks. A variable for tests.
var maxFilterBuildBytes int64 = 256 << 20

func newFilterSeg(keys int) filterSeg {
	n := (keys*filterBitsPerKey + 511) / 512
	return filterSeg{blocks: make([][8]uint64, n), cap: keys}
}

// has reports whether all of h's probes are set in seg.
func (seg *filterSeg) has(h uint64) bool {
	b := &seg.blocks[(h>>32)*uint64(len(seg.blocks))>>32]
	h1, h2 := uint32(h), uint32(h>>32)|1
	for range filterProbes {
		if b[(h1>>6)&7]&(1<<(h1&63)) == 0 {
			return false
		}
		h1 += h2
	}
	return true
}

// add sets h's probes in seg.
func (seg *filterSeg) add(h uint64) {
	b := &seg.blocks[(h>>32)*uint64(len(seg.blocks))>>32]
	h1, h2 := uint32(h), uint32(h>>32)|1
	for range filterProbes {
		b[(h1>>6)&7] |= 1 << (h1 & 63)
		h1 += h2
	}
	seg.keys++
}

// newKeyFilter returns an empty filter, not ready, and starts the builder
// that fills it from s's engine. Stop it with stop.
func newKeyFilter(s *Store) *keyFilter {
	f := makeKeyFilter()
	go f.build(s)
	return f
}

// makeKeyFilter returns an empty filter, not ready, without a builder:
// whoever calls it closes done.
func makeKeyFilter() *keyFilter {
	f := &keyFilter{seed: maphash.MakeSeed(), quit: make(chan struct{}), done: make(chan struct{})}
	f.mu.segs = []filterSeg{newFilterSeg(firstFilterKeys)}
	return f
}

// stop stops the builder and waits for it.
func (f *keyFilter) stop() {
	select {
	case <-f.quit:
	default:
		close(f.quit)
	}
	<-f.done
}

func (f *keyFilter) hash(prefix []byte) uint64 { return maphash.Bytes(f.seed, prefix) }

// absent reports whether no key whose prefix (see keyPrefix) is prefix has
// a version: false when the filter is not ready.
func (f *keyFilter) absent(prefix []byte) bool {
	if !f.ready.Load() {
		return false
	}
	h := f.hash(prefix)
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.mu.gaveUp && !f.hasLocked(h)
}

func (f *keyFilter) hasLocked(h uint64) bool {
	for i := range f.mu.segs {
		if f.mu.segs[i].has(h) {
			return true
		}
	}
	return false
}

// add adds the key whose prefix is prefix.
func (f *keyFilter) add(prefix []byte) {
	h := f.hash(prefix)
	f.mu.Lock()
	f.addLocked(h)
	f.mu.Unlock()
}

func (f *keyFilter) addLocked(h uint64) {
	if f.mu.gaveUp || f.hasLocked(h) {
		return
	}
	last := &f.mu.segs[len(f.mu.segs)-1]
	if last.keys == last.cap {
		if f.capLocked()+2*last.cap > maxFilterKeys {
			f.giveUpLocked()
			return
		}
		f.mu.segs = append(f.mu.segs, newFilterSeg(2*last.cap))
		last = &f.mu.segs[len(f.mu.segs)-1]
	}
	last.add(h)
}

// capLocked is how many keys the segments take in all.
func (f *keyFilter) capLocked() int {
	n := 0
	for i := range f.mu.segs {
		n += f.mu.segs[i].cap
	}
	return n
}

// giveUp is giveUpLocked for a caller without f.mu.
func (f *keyFilter) giveUp() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.giveUpLocked()
}

// giveUpLocked drops the segments for good. The filter may be ready
// already: absent checks gaveUp too.
func (f *keyFilter) giveUpLocked() {
	f.mu.gaveUp = true
	f.mu.segs = nil
	f.ready.Store(false)
}

// build adds every key with a version in s's engine, then makes the filter
// ready. It walks the keys twice: once to count them, so that one segment
// of the right size takes them (segments that double would take up to
// twice the memory), then to add them. It stops early, leaving the filter
// not ready, when stop is called or the engine fails (the store's reads
// report such a failure; here it only costs the lookups the filter would
// have saved).
func (f *keyFilter) build(s *Store) {
	defer close(f.done)
	// The walks read every version's value with its key: on a store
	// holding 1 GiB they took the puts and reads that followed a restart
	// to half their throughput and doubled the member's memory. Past
	// maxFilterBuildBytes the filter gives up at once, and writes look up
	// every key's version, as they did before the filter.
	if size := s.eng.SizeInUse(); size > maxFilterBuildBytes {
		f.giveUp()
		return
	}
	// The count stops past maxFilterKeys: the walk reads every version's
	// value with its key, so on a large store (10 GiB) a full count would
	// read all of it after every start, only to give up.
	keys := 0
	counted := f.walk(s, func(uint64) bool { keys++; return keys <= maxFilterKeys })
	f.counted.Store(int64(keys))
	if !counted {
		if keys > maxFilterKeys {
			f.giveUp()
		}
		return
	}
	f.mu.Lock()
	f.reserveLocked(keys)
	f.mu.Unlock()
	hashes := make([]uint64, 0, 256)
	flush := func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, h := range hashes {
			f.addLocked(h)
		}
		hashes = hashes[:0]
		return !f.mu.gaveUp
	}
	ok := f.walk(s, func(h uint64) bool {
		if hashes = append(hashes, h); len(hashes) < cap(hashes) {
			return true
		}
		return flush()
	})
	if ok && flush() {
		f.ready.Store(true)
	}
}

// reserveLocked makes room for keys more keys in one new segment, unless
// the last one has it already. Past maxFilterKeys the filter gives up.
func (f *keyFilter) reserveLocked(keys int) {
	if f.mu.gaveUp {
		return
	}
	last := &f.mu.segs[len(f.mu.segs)-1]
	if last.cap-last.keys >= keys {
		return
	}
	// A quarter more for the keys written meanwhile and after.
	n := max(keys+keys/4, 2*last.cap)
	if f.capLocked()+n > maxFilterKeys {
		f.giveUpLocked()
		return
	}
	f.mu.segs = append(f.mu.segs, newFilterSeg(n))
}

// walk calls fn with the hash of each key that has a version in s's
// engine, in key order, until fn returns false, and reports whether it
// went through them all (false too when stop was called or the engine
// failed).
func (f *keyFilter) walk(s *Store, fn func(h uint64) bool) bool {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{storage.PrefixKeys}, UpperBound: keysEnd})
	if err != nil {
		s.logger().Warn("mvcc: key filter not built", "err", err)
		return false
	}
	defer it.Close()
	var prefix []byte
	valid := it.First()
	for n := 1; valid; n++ {
		p, _, _, err := splitVersionKey(it.Key())
		if err != nil {
			s.logger().Warn("mvcc: key filter not built", "err", err)
			return false
		}
		prefix = append(prefix[:0], p...)
		if !fn(f.hash(prefix)) {
			return false
		}
		if n%1024 == 0 {
			select {
			case <-f.quit:
				return false
			default:
			}
		}
		// To the next key: a step or two is cheaper than a seek.
		valid = it.Next()
		for steps := 0; valid && bytes.HasPrefix(it.Key(), prefix); steps++ {
			if steps == maxSteps {
				valid = it.SeekGE(skipKey(prefix))
				break
			}
			valid = it.Next()
		}
	}
	if err := it.Error(); err != nil {
		s.logger().Warn("mvcc: key filter not built", "err", fmt.Errorf("mvcc: walk keys: %w", err))
		return false
	}
	return true
}
