package crash

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	workers = 8
	// loadTimeout bounds how long the load may take to reach its kill
	// point; reaching it means the server stopped making progress.
	loadTimeout = 60 * time.Second
)

func TestCrashRecovery(t *testing.T) { crashRecovery(t) }

// TestCrashRecoveryWalDir is TestCrashRecovery with the raft log in a
// directory of its own (--wal-dir): two engines killed at the same moment.
func TestCrashRecoveryWalDir(t *testing.T) { crashRecovery(t, "--wal-dir", t.TempDir()) }

func crashRecovery(t *testing.T, extra ...string) {
	cycles := 3
	if testing.Short() {
		cycles = 2
	}
	if s := os.Getenv("CAIRN_CRASH_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CAIRN_CRASH_CYCLES=%q: want a positive number", s)
		}
		cycles = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CAIRN_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CAIRN_CRASH_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d, %d cycles (rerun: CAIRN_CRASH_SEED=%d)", seed, cycles, seed)
	r := rand.New(rand.NewPCG(seed, 1))

	dataDir := t.TempDir()
	b := newBook()
	p := startProc(t, dataDir, "cairn-0.log", extra...)
	p.waitReady()
	for cycle := range cycles {
		target := 20 + r.IntN(400)
		n := runLoadAndKill(t, p, b, cycle, target, r.Uint64())
		t.Logf("cycle %d: killed after %d acknowledged writes (target %d)", cycle, n, target)

		if r.IntN(3) == 0 {
			// Crash the recovery too: kill the restarted process a random
			// moment into its start-up, while it may be replaying.
			early := startProc(t, dataDir, fmt.Sprintf("cairn-%d-early.log", cycle+1), extra...)
			delay := time.Duration(r.IntN(300)) * time.Millisecond
			<-time.After(delay)
			early.kill()
			t.Logf("cycle %d: also killed the restarted process %v into its start-up", cycle, delay)
		}
		p = startProc(t, dataDir, fmt.Sprintf("cairn-%d.log", cycle+1), extra...)
		p.waitReady()
		verify(t, p, b, cycle)
		if t.Failed() {
			t.Fatalf("cycle %d failed; output of the restarted process:\n%s", cycle, p.output())
		}
	}
}

// runLoadAndKill runs concurrent writers against p until target writes
// are acknowledged, kills p with SIGKILL while they are still writing, and
// returns how many writes were acknowledged in this cycle.
func runLoadAndKill(t *testing.T, p *member, b *book, cycle, target int, seed uint64) int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ackCount atomic.Int64
	var killed atomic.Bool
	reached := make(chan struct{})
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var loadErrs []string
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for seq := 0; ctx.Err() == nil; seq++ {
				if w == 0 && seq%20 == 19 {
					// Compactions too must survive: the store may not
					// serve history it said it dropped.
					if err := compactOnce(ctx, p.kv, b, r); err != nil && !killed.Load() && ctx.Err() == nil {
						errMu.Lock()
						loadErrs = append(loadErrs, fmt.Sprintf("compact: %v", err))
						errMu.Unlock()
					}
					continue
				}
				key := fmt.Sprintf("c%03d/w%02d/%06d", cycle, w, seq)
				rev, wr, err := writeOnce(ctx, p.kv, b, r, key)
				if err != nil {
					// An error before the kill is a write a user saw fail
					// under plain load; after it, the expected outcome.
					if !killed.Load() && ctx.Err() == nil {
						errMu.Lock()
						loadErrs = append(loadErrs, fmt.Sprintf("%v: %v", wr, err))
						errMu.Unlock()
					}
					return
				}
				b.ack(wr, rev)
				if ackCount.Add(1) == int64(target) {
					close(reached)
				}
			}
		}()
	}
	select {
	case <-reached:
	case <-time.After(loadTimeout):
		t.Errorf("cycle %d: only %d of %d writes acknowledged after %v", cycle, ackCount.Load(), target, loadTimeout)
	}
	killed.Store(true)
	p.kill()
	cancel()
	wg.Wait()
	if len(loadErrs) > 0 {
		t.Errorf("cycle %d: %d writes failed before the kill, e.g.:\n  %s", cycle, len(loadErrs), strings.Join(loadErrs[:min(5, len(loadErrs))], "\n  "))
	}
	return ackCount.Load()
}

// writeOnce sends one write: most often a Put, sometimes a Txn putting
// two keys at once. The write is in the book before it is sent.
func writeOnce(ctx context.Context, kv pb.KVClient, b *book, r *rand.Rand, key string) (int64, *write, error) {
	value := func(k string) string {
		return fmt.Sprintf("%s=%x%s", k, r.Uint64(), strings.Repeat("p", r.IntN(300)))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if r.IntN(5) == 0 {
		keys := []string{key + "/a", key + "/b"}
		values := []string{value(keys[0]), value(keys[1])}
		wr := b.add(keys, values)
		resp, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(keys[0]), Value: []byte(values[0])}}},
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(keys[1]), Value: []byte(values[1])}}},
		}})
		if err != nil {
			return 0, wr, err
		}
		if !resp.Succeeded {
			return 0, wr, fmt.Errorf("txn without compares did not succeed: %v", resp)
		}
		return resp.Header.GetRevision(), wr, nil
	}
	v := value(key)
	wr := b.add([]string{key}, []string{v})
	resp, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(v)})
	if err != nil {
		return 0, wr, err
	}
	return resp.Header.GetRevision(), wr, nil
}

// compactOnce compacts, logically or physically, up to a revision a little
// below the newest acknowledged one, and records it when acknowledged.
func compactOnce(ctx context.Context, kv pb.KVClient, b *book, r *rand.Rand) error {
	rev := b.maxRev() - int64(r.IntN(20))
	if rev <= b.compactedRev() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: rev, Physical: r.IntN(2) == 0}); err != nil {
		if status.Code(err) == codes.OutOfRange && strings.Contains(err.Error(), "compacted") {
			return nil // an earlier compaction the crash hid went further
		}
		return err
	}
	b.compactAcked(rev)
	return nil
}

// verify checks the restarted store against the book and then that a new
// write gets a revision above everything acknowledged before the crash.
func verify(t *testing.T, p *member, b *book, cycle int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := p.kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Errorf("cycle %d: read everything after the restart: %v", cycle, err)
		return
	}
	before := b.maxRev()
	if resp.Header.GetRevision() < before {
		t.Errorf("cycle %d: store revision %d after the restart is below the acknowledged revision %d", cycle, resp.Header.GetRevision(), before)
	}
	bad, st := b.checkSettle(resp)
	for _, v := range bad {
		t.Errorf("cycle %d: %s", cycle, v)
	}
	if c := b.compactedRev(); c > 1 {
		_, err := p.kv.Range(ctx, &pb.RangeRequest{Key: []byte("c"), RangeEnd: []byte("d"), Revision: c - 1, CountOnly: true})
		if status.Code(err) != codes.OutOfRange {
			t.Errorf("cycle %d: a read at revision %d, below the acknowledged compaction at %d, gives %v; want %v", cycle, c-1, c, err, rpctypes.ErrGRPCCompacted)
		}
	}
	known := b.maxRev() // now including the in-flight writes that made it
	key := fmt.Sprintf("probe/%03d", cycle)
	value := "after restart"
	wr := b.add([]string{key}, []string{value})
	put, err := p.kv.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(value)})
	if err != nil {
		t.Errorf("cycle %d: put after the restart: %v", cycle, err)
		return
	}
	rev := put.Header.GetRevision()
	b.ack(wr, rev)
	if rev <= known {
		t.Errorf("cycle %d: a put after the restart got revision %d, not above the %d already in the store", cycle, rev, known)
	}
	if rev != resp.Header.GetRevision()+1 {
		t.Errorf("cycle %d: a put after the restart got revision %d; the store was at %d, so want %d", cycle, rev, resp.Header.GetRevision(), resp.Header.GetRevision()+1)
	}
	t.Logf("cycle %d: %d keys in the store at revision %d, all as acknowledged; of the writes in flight at the kill %d were kept, %d lost; compacted at %d or later; next put at %d",
		cycle, len(resp.Kvs), resp.Header.GetRevision(), st.kept, st.lost, b.compactedRev(), rev)
}
