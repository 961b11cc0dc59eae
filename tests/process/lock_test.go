package process

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// The keys of the mutual-exclusion test: the lock (its holders' keys are
// under lockName+"/"), the holders' records, and a counter that only a
// holder increments, reading it first and writing it back plus one.
const (
	lockName    = "/mx/lock"
	recPrefix   = "/mx/rec/"
	counterKey  = "/mx/counter"
	lockTTL     = 5 // seconds, of each contender's session lease
	lockTimeout = 10 * time.Second
	// stallEvery is how often (in a contender's cycles) the first two
	// contenders (one of each kind) stall past their lease's expiry
	// before the release write. A stall holds everyone up for a TTL.
	stallEvery = 30
)

// lockSchedule is how much TestLockMutualExclusion does.
type lockSchedule struct {
	rounds   int   // kill rounds: the leader, then each follower in turn
	workers  int   // contenders
	progress int64 // completed holds between two steps
}

func newLockSchedule(t *testing.T) lockSchedule {
	s := lockSchedule{rounds: 3, workers: 6, progress: 15}
	switch {
	case os.Getenv("CAIRN_PROCESS_LONG") == "1":
		s = lockSchedule{rounds: 9, workers: 10, progress: 40}
	case testing.Short():
		s = lockSchedule{rounds: 1, workers: 4, progress: 6}
	}
	t.Logf("%d contenders, %d kill rounds, %d holds between steps", s.workers, s.rounds, s.progress)
	return s
}

// outcome is what a holder learned of one of its guarded writes.
type outcome int

const (
	outNotSent   outcome = iota // the holder gave up before sending it
	outCommitted                // the guard held and the write is in the store
	outRefused                  // the guard failed: the holder had lost the lock
	outUnknown                  // the request failed; it may or may not have been applied
)

// hold is one contender's time holding the lock, as the contender saw it.
// Times are since the test's start, on the monotonic clock.
type hold struct {
	worker, cycle int
	via           string // "mutex" (concurrency.Mutex) or "rpc" (the Lock service)
	token         int64  // the lock key's create revision: the fencing token
	acquired      time.Duration
	releasing     time.Duration // just before the release write was sent
	acq, rel      outcome
	acqRev        int64 // revision of the acquire record, if committed
	// stalled: the holder let its lease expire (and saw its key gone)
	// before sending the release write.
	stalled bool
	relRev  int64 // revision of the release record, if committed
}

// lockRun is the contenders and what they recorded.
type lockRun struct {
	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   atomic.Int64 // holds with both records committed and unlocked

	mu    sync.Mutex
	holds []hold
	// abandoned counts cycles given up on after an error, by stage.
	abandoned map[string]int
}

// TestLockMutualExclusion has contenders take one lock over and over,
// half with clientv3's concurrency.Mutex and half with the Lock service,
// while the leader and then each follower is SIGKILLed and restarted.
// Each holder writes an acquire record and, after a read-modify-write of a
// counter, a release record, both in transactions guarded by its key still
// existing with the create revision it holds the lock with (the fencing
// token). Now and then a holder stalls, as a paused process would: its
// keep-alives stop, and only once its key has gone with the lease does it
// send its release write, which its guard must refuse. Then:
//
//   - in the store's revision order, the records' tokens never go down: no
//     holder writes once a later one has started, and tokens strictly
//     increase with grant order;
//   - every record a holder was told was written is in the store;
//   - the holds whose both records were written do not overlap in time, and
//     their tokens increase with their acquisition times;
//   - the counter counts every acknowledged increment (none was lost to two
//     holders reading the same value);
//   - no stalled holder's late write was applied.
func TestLockMutualExclusion(t *testing.T) {
	s := newLockSchedule(t)
	c := newCluster(t, 3)
	admin := newClient(t, c.endpoints()...)
	requireLeases(t, admin)

	r := &lockRun{start: time.Now(), abandoned: make(map[string]int)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	t.Cleanup(r.stop)
	for w := range s.workers {
		via := "mutex"
		if w%2 == 1 {
			via = "rpc"
		}
		cli := newClient(t, c.endpoints()...)
		r.wg.Add(1)
		go r.contend(ctx, w, via, cli)
	}
	r.waitProgress(c, s.progress, "warm-up")

	for round := range s.rounds {
		lead, victim := c.victim(round)
		t.Logf("round %d: SIGKILL %s (leader %s; %d holds so far)", round, victim.name, lead.name, r.done.Load())
		victim.kill(t)
		r.waitProgress(c, s.progress, "two of three members serve the lock")
		victim.start(t, c.initialCluster(), "new", c.token)
		c.waitCaughtUp(victim)
		r.waitProgress(c, s.progress, "after the restart")
	}

	r.stop()
	r.logSummary(t)
	r.check(t, c, admin)
	c.checkConverged()
}

// requireLeases fails the test at once, saying why, when the members do
// not grant a lease: a lock is a key attached to a lease, and contenders
// that cannot take one would only be counted as abandoned.
func requireLeases(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := cli.Grant(ctx, lockTTL)
	if err != nil {
		t.Fatalf("the members grant no lease, so no lock can be taken: Grant: %v", err)
	}
	if _, err := cli.Revoke(ctx, resp.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
}

func (r *lockRun) now() time.Duration { return time.Since(r.start) }

// stop ends the contenders and waits for them.
func (r *lockRun) stop() {
	r.cancel()
	r.wg.Wait()
}

func (r *lockRun) waitProgress(c *cluster, n int64, why string) {
	c.t.Helper()
	target := r.done.Load() + n
	c.waitFor(readyTimeout, fmt.Sprintf("%d more completed holds of the lock (%s)", n, why), func() error {
		if got := r.done.Load(); got < target {
			return fmt.Errorf("%d of %d completed", got-(target-n), n)
		}
		return nil
	})
}

// contend takes the lock over and over until ctx ends. A cycle that fails
// anywhere closes its session (revoking the lease releases the lock or the
// place in the queue, if the member got that far) and starts a new one.
func (r *lockRun) contend(ctx context.Context, worker int, via string, cli *clientv3.Client) {
	defer r.wg.Done()
	var sess *concurrency.Session
	defer func() {
		if sess != nil {
			sess.Close()
		}
	}()
	for cycle := 0; ctx.Err() == nil; cycle++ {
		if sess == nil {
			var err error
			sess, err = concurrency.NewSession(cli, concurrency.WithTTL(lockTTL))
			if err != nil {
				r.abandon("session")
				pause(ctx)
				continue
			}
		}
		if !r.cycle(ctx, worker, cycle, via, cli, sess) {
			sess.Close()
			sess = nil
		}
	}
}

// cycle takes the lock once, writes the records and the counter under it,
// and releases it. It reports whether the session is still fit for use.
func (r *lockRun) cycle(ctx context.Context, worker, cycle int, via string, cli *clientv3.Client, sess *concurrency.Session) bool {
	h := hold{worker: worker, cycle: cycle, via: via}
	var key string
	var unlock func(context.Context) error
	lctx, cancel := context.WithTimeout(ctx, lockTimeout)
	switch via {
	case "mutex":
		mu := concurrency.NewMutex(sess, lockName)
		if err := mu.Lock(lctx); err != nil {
			cancel()
			r.abandon("lock " + via)
			return false
		}
		key, unlock = mu.Key(), mu.Unlock
	default:
		lc := v3lockpb.NewLockClient(cli.ActiveConnection())
		resp, err := lc.Lock(lctx, &v3lockpb.LockRequest{Name: []byte(lockName), Lease: int64(sess.Lease())})
		if err != nil {
			cancel()
			r.abandon("lock " + via)
			return false
		}
		key = string(resp.Key)
		unlock = func(ctx context.Context) error {
			_, err := lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: resp.Key})
			return err
		}
	}
	cancel()
	h.acquired = r.now()

	// The fencing token is the key's create revision.
	got, err := getKey(ctx, cli, key)
	if err != nil || len(got.Kvs) == 0 {
		r.abandon("read own key")
		return false
	}
	h.token = got.Kvs[0].CreateRevision
	guard := clientv3.Compare(clientv3.CreateRevision(key), "=", h.token)
	recKey := fmt.Sprintf("%sw%02d/%06d/", recPrefix, worker, cycle)
	token := strconv.FormatInt(h.token, 10)

	h.acq, h.acqRev = guarded(ctx, cli, guard, clientv3.OpPut(recKey+"a", token))
	if h.acq != outCommitted {
		r.record(h)
		r.abandon("acquire record")
		return false
	}
	counter, err := getKey(ctx, cli, counterKey)
	if err != nil {
		r.record(h)
		r.abandon("read counter")
		return false
	}
	n := int64(0)
	if len(counter.Kvs) > 0 {
		n, _ = strconv.ParseInt(string(counter.Kvs[0].Value), 10, 64)
	}
	if worker < 2 && cycle%stallEvery == stallEvery-1 {
		// Stall like a paused process: keep-alives stop, the lease
		// expires and others take the lock; the late write must then be
		// refused by its guard.
		sess.Orphan()
		if !waitGone(ctx, cli, key) {
			r.record(h)
			r.abandon("stall")
			return false
		}
		h.stalled = true
	}
	h.releasing = r.now()
	h.rel, h.relRev = guarded(ctx, cli, guard,
		clientv3.OpPut(counterKey, strconv.FormatInt(n+1, 10)),
		clientv3.OpPut(recKey+"r", token))
	r.record(h)
	if h.rel != outCommitted || h.stalled {
		r.abandon("release record")
		return false
	}
	uctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if err := unlock(uctx); err != nil {
		r.abandon("unlock " + via)
		return false
	}
	r.done.Add(1)
	return true
}

// waitGone polls until key no longer exists; it returns false if ctx ends
// or readyTimeout passes first.
func waitGone(ctx context.Context, cli *clientv3.Client, key string) bool {
	deadline := time.Now().Add(readyTimeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if resp, err := getKey(ctx, cli, key); err == nil && len(resp.Kvs) == 0 {
			return true
		}
		pause(ctx)
	}
	return false
}

func getKey(ctx context.Context, cli *clientv3.Client, key string) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	return cli.Get(ctx, key)
}

// guarded runs ops in a transaction if guard holds and returns the outcome
// and the transaction's revision.
func guarded(ctx context.Context, cli *clientv3.Client, guard clientv3.Cmp, ops ...clientv3.Op) (outcome, int64) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := cli.Txn(ctx).If(guard).Then(ops...).Commit()
	switch {
	case err != nil:
		return outUnknown, 0
	case !resp.Succeeded:
		return outRefused, 0
	}
	return outCommitted, resp.Header.Revision
}

// pause waits a moment before a retry, or until ctx ends.
func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
}

func (r *lockRun) record(h hold) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holds = append(r.holds, h)
}

func (r *lockRun) abandon(stage string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.abandoned[stage]++
}

func (r *lockRun) logSummary(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	count := map[string]int{}
	for _, h := range r.holds {
		count[h.via]++
		if h.acq == outRefused || h.rel == outRefused {
			count["lost (guard refused)"]++
		}
		if h.stalled {
			count["stalled past the lease"]++
		}
	}
	t.Logf("%d holds completed; holds recorded by way of taking the lock: %v; cycles abandoned by stage: %v", r.done.Load(), count, r.abandoned)
}

// storedRecord is one holder record as the store has it.
type storedRecord struct {
	key   string
	token int64
	rev   int64
}

// check reads the records and the counter back and checks the run's
// properties (see TestLockMutualExclusion).
func (r *lockRun) check(t *testing.T, c *cluster, cli *clientv3.Client) {
	t.Helper()
	r.mu.Lock()
	holds := slices.Clone(r.holds)
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, recPrefix, clientv3.WithPrefix())
	if err != nil {
		c.fatalf("read the records: %v", err)
	}
	stored := make(map[string]storedRecord, len(resp.Kvs))
	var order []storedRecord
	for _, kv := range resp.Kvs {
		tok, err := strconv.ParseInt(string(kv.Value), 10, 64)
		if err != nil {
			c.fatalf("record %s has value %q", kv.Key, kv.Value)
		}
		rec := storedRecord{key: string(kv.Key), token: tok, rev: kv.ModRevision}
		stored[rec.key] = rec
		order = append(order, rec)
	}
	slices.SortFunc(order, func(a, b storedRecord) int { return cmp.Compare(a.rev, b.rev) })

	// In revision order no token goes down: once a holder with a later
	// token has written, no earlier holder writes again.
	for i := 1; i < len(order); i++ {
		if order[i].token < order[i-1].token {
			c.fatalf("two holders at once: %s (token %d) written at revision %d after %s (token %d) at revision %d",
				order[i].key, order[i].token, order[i].rev, order[i-1].key, order[i-1].token, order[i-1].rev)
		}
	}

	// Every acknowledged record is there, at the acknowledged revision.
	var committedIncrements, unknownIncrements int64
	var complete []hold
	for _, h := range holds {
		recKey := fmt.Sprintf("%sw%02d/%06d/", recPrefix, h.worker, h.cycle)
		for _, w := range []struct {
			suffix string
			o      outcome
			rev    int64
		}{{"a", h.acq, h.acqRev}, {"r", h.rel, h.relRev}} {
			rec, ok := stored[recKey+w.suffix]
			switch {
			case w.o == outCommitted && (!ok || rec.token != h.token || rec.rev != w.rev):
				c.fatalf("acknowledged record %s (token %d, revision %d) is missing or different in the store: %+v", recKey+w.suffix, h.token, w.rev, rec)
			case w.o == outRefused && ok:
				c.fatalf("record %s refused by its guard is in the store: %+v", recKey+w.suffix, rec)
			}
		}
		if h.stalled && h.rel == outCommitted {
			c.fatalf("worker %d wrote %s under the lock (token %d) after its lease expired and its key was gone", h.worker, recKey+"r", h.token)
		}
		switch {
		case h.acq != outCommitted:
		case h.rel == outCommitted:
			committedIncrements++
			complete = append(complete, h)
		case h.rel == outUnknown:
			unknownIncrements++
		}
	}

	// Holds whose both records were written do not overlap in time, and
	// their tokens grow with their acquisition.
	slices.SortFunc(complete, func(a, b hold) int { return cmp.Compare(a.acquired, b.acquired) })
	for i := 1; i < len(complete); i++ {
		prev, next := complete[i-1], complete[i]
		if next.acquired <= prev.releasing {
			c.fatalf("two holders at once: worker %d (%s, token %d) acquired at %v, before worker %d (%s, token %d), which acquired at %v, sent its release at %v",
				next.worker, next.via, next.token, next.acquired, prev.worker, prev.via, prev.token, prev.acquired, prev.releasing)
		}
		if next.token <= prev.token {
			c.fatalf("fencing token went down: worker %d acquired with token %d after worker %d with token %d", next.worker, next.token, prev.worker, prev.token)
		}
	}

	// No increment was lost.
	cnt, err := cli.Get(ctx, counterKey)
	if err != nil {
		c.fatalf("read the counter: %v", err)
	}
	var final int64
	if len(cnt.Kvs) > 0 {
		final, _ = strconv.ParseInt(string(cnt.Kvs[0].Value), 10, 64)
	}
	if final < committedIncrements || final > committedIncrements+unknownIncrements {
		c.fatalf("counter is %d after %d acknowledged increments and %d of unknown outcome", final, committedIncrements, unknownIncrements)
	}
	t.Logf("%d records in grant order, %d holds complete and disjoint, counter %d (%d acknowledged increments, %d unknown)",
		len(order), len(complete), final, committedIncrements, unknownIncrements)
	if len(complete) == 0 {
		c.fatalf("no hold completed: nothing was checked")
	}
}
