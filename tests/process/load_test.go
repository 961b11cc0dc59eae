package process

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// hotKeys is how many keys the checked operations share: few enough
	// that operations on one key overlap, enough that each partition of the
	// history stays quick to check.
	hotKeys = 12
	// opTimeout bounds one client operation; one that runs out has an
	// unknown outcome. It is shorter than the server's request timeout so
	// a client does not sit out a whole election.
	opTimeout = 3 * time.Second
	// ledgerPrefix holds write-once keys: each acknowledged one must
	// survive everything.
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
		value := fmt.Sprintf("w%d-%d", worker, seq)
		key := fmt.Sprintf("hot/%02d", r.IntN(hotKeys))
		switch p := r.IntN(100); {
		case p < 10:
			l.ledgerPut(ctx, cli, fmt.Sprintf("%sw%02d/%06d", ledgerPrefix, worker, seq), value)
		case p < 45:
			l.do(ctx, worker, cli, kvInput{op: opGet, key: key})
		case p < 75:
			l.do(ctx, worker, cli, kvInput{op: opPut, key: key, value: value})
		case p < 80:
			l.do(ctx, worker, cli, kvInput{op: opDelete, key: key})
		default:
			l.do(ctx, worker, cli, kvInput{op: opCAS, key: key, value: value, expect: l.guess(key, r)})
		}
	}
}

// guess picks what a swap expects: the value last seen in the history for
// the key (so swaps often succeed), or absent.
func (l *load) guess(key string, r *rand.Rand) string {
	if r.IntN(4) == 0 {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.ops) - 1; i >= 0 && i >= len(l.ops)-200; i-- {
		in, out := l.ops[i].Input.(kvInput), l.ops[i].Output.(kvOutput)
		if in.key != key {
			continue
		}
		switch {
		case in.op == opGet:
			return out.value
		case in.op == opPut || in.op == opCAS && out.ok:
			return in.value
		}
	}
	return ""
}

// do runs one operation on a hot key and records it. An operation cut
// short by the load stopping is recorded like any other failure.
func (l *load) do(ctx context.Context, worker int, cli *clientv3.Client, in kvInput) {
	octx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	call := l.now()
	var (
		out kvOutput
		err error
	)
	switch in.op {
	case opGet:
		var resp *clientv3.GetResponse
		if resp, err = cli.Get(octx, in.key); err == nil && len(resp.Kvs) > 0 {
			out.value = string(resp.Kvs[0].Value)
		}
	case opPut:
		_, err = cli.Put(octx, in.key, in.value)
	case opDelete:
		var resp *clientv3.DeleteResponse
		if resp, err = cli.Delete(octx, in.key); err == nil {
			out.ok = resp.Deleted > 0
		}
	case opCAS:
		cmp := clientv3.Compare(clientv3.Value(in.key), "=", in.expect)
		if in.expect == "" {
			cmp = clientv3.Compare(clientv3.CreateRevision(in.key), "=", 0)
		}
		var resp *clientv3.TxnResponse
		if resp, err = cli.Txn(octx).If(cmp).Then(clientv3.OpPut(in.key, in.value)).Commit(); err == nil {
			out.ok = resp.Succeeded
		}
	}
	ret := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs[errText(err)]++
		if in.op == opGet {
			return // a failed read constrains nothing
		}
		out.unknown = true
		ret = 1 << 62 // it may take effect any time after its call
	} else if in.op != opGet {
		l.acked.Add(1)
	}
	l.ops = append(l.ops, porcupine.Operation{ClientId: worker, Input: in, Output: out, Call: call, Return: ret})
}

func (l *load) ledgerPut(ctx context.Context, cli *clientv3.Client, key, value string) {
	octx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	_, err := cli.Put(octx, key, value)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs[errText(err)]++
		l.maybe[key] = value
		return
	}
	l.ledger[key] = value
	l.acked.Add(1)
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

// history returns the recorded operations on the hot keys.
func (l *load) history() []porcupine.Operation {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]porcupine.Operation(nil), l.ops...)
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
