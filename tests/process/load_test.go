package process

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/tests/kit"
)

const (
	// opTimeout bounds one client operation; one that runs out has an
	// unknown outcome. It is shorter than the server's request timeout so
	// a client does not sit out a whole election.
	opTimeout = 3 * time.Second
	// ledgerPrefix holds write-once keys: each acknowledged one must
	// survive everything. The history records their puts too (as
	// kit.OpPutOther), since every write takes a revision.
	ledgerPrefix = "ledger/"
)

// load is a set of clients running operations against the cluster and
// recording them.
type load struct {
	t       testing.TB
	seed    uint64
	start   time.Time
	clients []*clientv3.Client
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// acked counts acknowledged writes; progress waits on it.
	acked atomic.Int64

	mu      sync.Mutex
	ops     []porcupine.Operation
	ledger  map[string]string // acknowledged ledger writes
	maybe   map[string]string // ledger writes whose outcome is unknown
	errs    map[string]int    // failures by message, for the log
	stopped bool
}

// startLoad starts workers clients, each its own clientv3.Client of every
// endpoint, running a random mix of operations decided by seed.
func startLoad(t testing.TB, endpoints []string, workers int, seed uint64) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{
		t:      t,
		seed:   seed,
		start:  time.Now(),
		cancel: cancel,
		ledger: make(map[string]string),
		maybe:  make(map[string]string),
		errs:   make(map[string]int),
	}
	for w := range workers {
		cli := newClient(t, endpoints...)
		l.clients = append(l.clients, cli)
		l.wg.Add(1)
		go l.run(ctx, w, cli, rand.New(rand.NewPCG(seed, uint64(w))))
	}
	t.Cleanup(l.stop)
	return l
}

// setEndpoints points every client at the given members.
func (l *load) setEndpoints(endpoints []string) {
	for _, cli := range l.clients {
		cli.SetEndpoints(endpoints...)
	}
}

// stop stops the clients and waits for them. Operations in flight return
// with whatever they learned.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.stopped = true
		var b strings.Builder
		for msg, n := range l.errs {
			fmt.Fprintf(&b, "\n  %5d × %s", n, msg)
		}
		if b.Len() > 0 {
			l.t.Logf("client errors during the load (outcome unknown for writes):%s", b.String())
		}
	}
}

// waitProgress waits until n more writes have been acknowledged.
func (l *load) waitProgress(c *cluster, n int64, why string) {
	c.t.Helper()
	target := l.acked.Load() + n
	c.waitFor(readyTimeout, fmt.Sprintf("%d more acknowledged writes (%s)", n, why), func() error {
		if got := l.acked.Load(); got < target {
			return fmt.Errorf("%d of %d acknowledged", got-(target-n), n)
		}
		return nil
	})
}

func (l *load) now() int64 { return int64(time.Since(l.start)) }

func (l *load) run(ctx context.Context, worker int, cli *clientv3.Client, r *rand.Rand) {
	defer l.wg.Done()
	for seq := 0; ctx.Err() == nil; seq++ {
		// Values are unique in the history, so a read pins down which write
		// it saw, and Resolve finds the revision a write applied at.
		value := fmt.Sprintf("w%d-%d", worker, seq)
		key := r.IntN(kit.NumKeys)
		switch p := r.IntN(100); {
		case p < 10:
			l.ledgerPut(ctx, worker, cli, fmt.Sprintf("%sw%02d/%06d", ledgerPrefix, worker, seq), value)
		case p < 45:
			l.do(ctx, worker, cli, kit.Input{Op: kit.OpGet, Key: key})
		case p < 75:
			l.do(ctx, worker, cli, kit.Input{Op: kit.OpPut, Key: key, Value: value})
		case p < 80:
			l.do(ctx, worker, cli, kit.Input{Op: kit.OpDelete, Key: key})
		default:
			l.do(ctx, worker, cli, kit.Input{Op: kit.OpCAS, Key: key, Value: value, Expect: l.guess(key, r)})
		}
	}
}

// guess picks what a swap expects: the value last seen in the history for
// the key (so swaps often succeed), or absent.
func (l *load) guess(key int, r *rand.Rand) string {
	if r.IntN(4) == 0 {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.ops) - 1; i >= 0 && i >= len(l.ops)-200; i-- {
		in, out := l.ops[i].Input.(kit.Input), l.ops[i].Output.(kit.Output)
		if in.Key != key || out.Unknown {
			continue
		}
		switch {
		case in.Op == kit.OpGet:
			return out.KV.Value
		case in.Op == kit.OpPut || in.Op == kit.OpCAS && out.Succeeded:
			return in.Value
		}
	}
	return ""
}

// kvOf is the key a Range response found, in the model's terms.
func kvOf(kvs []*mvccpb.KeyValue) kit.KV {
	if len(kvs) == 0 {
		return kit.KV{}
	}
	kv := kvs[0]
	return kit.KV{Value: string(kv.Value), Create: kv.CreateRevision, Mod: kv.ModRevision, Version: kv.Version, Exists: true}
}

// do runs one operation on a model key and records it. An operation cut
// short by the load stopping is recorded like any other failure.
func (l *load) do(ctx context.Context, worker int, cli *clientv3.Client, in kit.Input) {
	octx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	call := l.now()
	out, err := run(octx, cli, in)
	ret := l.now()
	l.record(worker, in, out, err, call, ret)
}

// run sends in as its request and returns what the answer says.
func run(ctx context.Context, cli *clientv3.Client, in kit.Input) (kit.Output, error) {
	key := kit.Key(in.Key)
	switch in.Op {
	case kit.OpGet:
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return kit.Output{}, err
		}
		return kit.Output{Rev: resp.Header.Revision, KV: kvOf(resp.Kvs)}, nil
	case kit.OpPut:
		resp, err := cli.Put(ctx, key, in.Value)
		if err != nil {
			return kit.Output{}, err
		}
		return kit.Output{Rev: resp.Header.Revision}, nil
	case kit.OpDelete:
		resp, err := cli.Delete(ctx, key)
		if err != nil {
			return kit.Output{}, err
		}
		return kit.Output{Rev: resp.Header.Revision, Deleted: resp.Deleted}, nil
	case kit.OpCAS:
		cmp := clientv3.Compare(clientv3.Value(key), "=", in.Expect)
		if in.Expect == "" {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		resp, err := cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, in.Value)).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return kit.Output{}, err
		}
		out := kit.Output{Rev: resp.Header.Revision, Succeeded: resp.Succeeded}
		if !resp.Succeeded {
			out.KV = kvOf(resp.Responses[0].GetResponseRange().Kvs)
		}
		return out, nil
	}
	return kit.Output{}, fmt.Errorf("the load sends no op %d", in.Op)
}

// record adds an operation to the history: a failed read is left out (it
// constrains nothing), a failed write has an unknown outcome and may take
// effect any time after its call.
func (l *load) record(worker int, in kit.Input, out kit.Output, err error, call, ret int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs[errText(err)]++
		if in.Op == kit.OpGet {
			return
		}
		out, ret = kit.Output{Unknown: true}, math.MaxInt64
	} else if in.Op != kit.OpGet {
		l.acked.Add(1)
	}
	l.ops = append(l.ops, porcupine.Operation{ClientId: worker, Input: in, Output: out, Call: call, Return: ret})
}

func (l *load) ledgerPut(ctx context.Context, worker int, cli *clientv3.Client, key, value string) {
	octx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	call := l.now()
	resp, err := cli.Put(octx, key, value)
	ret := l.now()
	var out kit.Output
	if err == nil {
		out.Rev = resp.Header.Revision
	}
	l.record(worker, kit.Input{Op: kit.OpPutOther, Value: value}, out, err, call, ret)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.maybe[key] = value
		return
	}
	l.ledger[key] = value
}

// errText is an error's message without the details that make every
// occurrence unique.
func errText(err error) string {
	s := err.Error()
	if i := strings.Index(s, "connection error"); i >= 0 {
		return s[:i] + "connection error ..."
	}
	return s
}

// checkLinearizable resolves the writes whose outcome the clients never
// learned from the store's history, read through cli (the cluster compacts
// its raft log, never the keyspace), and checks the history against the
// test kit's model of etcd's key-value semantics.
func (l *load) checkLinearizable(c *cluster, cli *clientv3.Client) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	applied, err := appliedValues(ctx, cli)
	if err != nil {
		c.fatalf("read the store's history: %v", err)
	}
	l.mu.Lock()
	recorded := slices.Clone(l.ops)
	l.mu.Unlock()
	ops := kit.Resolve(recorded, applied)
	c.t.Logf("%d operations recorded, %d of them with an unknown outcome; %d left unknown after reading the store's history",
		len(recorded), countUnknown(recorded), countUnknown(ops))
	kit.CheckLinearizable(c.t, ops, l.seed)
}

// countUnknown counts the operations with an unknown outcome.
func countUnknown(ops []porcupine.Operation) int {
	n := 0
	for _, op := range ops {
		if op.Output.(kit.Output).Unknown {
			n++
		}
	}
	return n
}

// appliedValues returns the revision at which each value in the store was
// put, from a watch of every key from revision 2 up to the current one.
func appliedValues(ctx context.Context, cli *clientv3.Client) (map[string]int64, error) {
	resp, err := cli.Get(ctx, "any", clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	last := resp.Header.Revision
	applied := make(map[string]int64)
	if last < 2 {
		return applied, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(2)) {
		if err := wr.Err(); err != nil {
			return nil, err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				applied[string(ev.Kv.Value)] = ev.Kv.ModRevision
			}
		}
		// A response holds whole revisions, so every event of the last
		// one is in.
		if n := len(wr.Events); n > 0 && wr.Events[n-1].Kv.ModRevision >= last {
			return applied, nil
		}
	}
	return nil, fmt.Errorf("the watch ended before revision %d: %w", last, ctx.Err())
}

// checkLedger reads the ledger back through cli and checks that every
// acknowledged write is there with its value, and that nothing is there
// that no client wrote.
func (l *load) checkLedger(c *cluster, cli *clientv3.Client) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, ledgerPrefix, clientv3.WithPrefix())
	if err != nil {
		c.fatalf("read the ledger: %v", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	found := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k, v := string(kv.Key), string(kv.Value)
		found[k] = v
		if want, ok := l.ledger[k]; ok && want != v {
			c.fatalf("ledger key %s holds %q, acknowledged with %q", k, v, want)
		}
		if want, ok := l.maybe[k]; ok && want != v {
			c.fatalf("ledger key %s holds %q, written (outcome unknown) with %q", k, v, want)
		}
		if _, ok := l.ledger[k]; !ok {
			if _, ok := l.maybe[k]; !ok {
				c.fatalf("ledger key %s = %q was never written", k, v)
			}
		}
	}
	var lost []string
	for k := range l.ledger {
		if _, ok := found[k]; !ok {
			lost = append(lost, k)
		}
	}
	if len(lost) > 0 {
		c.fatalf("seed %d: %d acknowledged writes are lost, e.g. %v", l.seed, len(lost), lost[:min(len(lost), 10)])
	}
	c.t.Logf("ledger: all %d acknowledged writes are there; %d of %d writes with an unknown outcome took effect",
		len(l.ledger), len(found)-len(l.ledger), len(l.maybe))
}
