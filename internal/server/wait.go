package server

import (
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/membership"
)

// result is what the apply loop hands a waiting proposer.
type result struct {
	resp proto.Message
	err  error
	// compacted closes when a compaction's physical removal is done.
	compacted <-chan struct{}
	// dropped marks a proposal raft refused: err is why.
	dropped bool
	// index is the log index the request was applied at, and members the
	// member list after it (conf changes).
	index   uint64
	members []membership.Member
}

const waitShards = 32

// waitRegistry maps proposal IDs to the channels their proposers wait on.
// It is sharded so concurrent proposers and the apply loop rarely contend.
type waitRegistry struct {
	shards [waitShards]struct {
		sync.Mutex
		m map[uint64]chan result
	}
	pool sync.Pool
}

func newWaitRegistry() *waitRegistry {
	w := &waitRegistry{}
	for i := range w.shards {
		w.shards[i].m = make(map[uint64]chan result)
	}
	w.pool.New = func() any { return make(chan result, 1) }
	return w
}

// register returns the channel the result of proposal id will arrive on.
func (w *waitRegistry) register(id uint64) chan result {
	ch := w.pool.Get().(chan result)
	sh := &w.shards[id%waitShards]
	sh.Lock()
	sh.m[id] = ch
	sh.Unlock()
	return ch
}

// trigger delivers res to proposal id's waiter, if it still waits. The
// channel has room for one result, so trigger never blocks.
func (w *waitRegistry) trigger(id uint64, res result) bool {
	sh := &w.shards[id%waitShards]
	sh.Lock()
	ch, ok := sh.m[id]
	if ok {
		delete(sh.m, id)
	}
	sh.Unlock()
	if ok {
		ch <- res
	}
	return ok
}

// has reports whether proposal id has a waiter.
func (w *waitRegistry) has(id uint64) bool {
	sh := &w.shards[id%waitShards]
	sh.Lock()
	_, ok := sh.m[id]
	sh.Unlock()
	return ok
}

// cancel stops waiting for proposal id and recycles its channel. It
// returns false if trigger (or failAll) came first: the result is then in
// the channel or about to be, and the channel is left to the caller.
func (w *waitRegistry) cancel(id uint64, ch chan result) bool {
	sh := &w.shards[id%waitShards]
	sh.Lock()
	_, ok := sh.m[id]
	delete(sh.m, id)
	sh.Unlock()
	if !ok {
		// trigger won the race and has put (or is putting) a result in the
		// channel; a caller that does not want it drops the channel.
		return false
	}
	w.pool.Put(ch)
	return true
}

// release recycles a channel whose result has been received.
func (w *waitRegistry) release(ch chan result) { w.pool.Put(ch) }

// failAll delivers err to every waiter, for shutdown.
func (w *waitRegistry) failAll(err error) {
	for i := range w.shards {
		sh := &w.shards[i]
		sh.Lock()
		for id, ch := range sh.m {
			delete(sh.m, id)
			ch <- result{err: err}
		}
		sh.Unlock()
	}
}

// idGenerator makes proposal IDs unique across members and restarts: the
// member ID's low 16 bits, then a counter that starts at the clock's
// milliseconds shifted left 8 bits, as etcd's generator does.
type idGenerator struct {
	prefix uint64
	n      atomic.Uint64
}

func newIDGenerator(memberID uint64, nowMs int64) *idGenerator {
	g := &idGenerator{prefix: memberID << 48}
	g.n.Store(uint64(nowMs) << 8 & (1<<48 - 1))
	return g
}

func (g *idGenerator) next() uint64 {
	return g.prefix | (g.n.Add(1) & (1<<48 - 1))
}
