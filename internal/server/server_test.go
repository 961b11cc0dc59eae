package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/storage"
)

func TestDefaultIDsAreEtcds(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	if s.MemberID() != 0x8e9e05c52164694d || s.ClusterID() != 0xcdf818194e3a8c32 {
		t.Fatalf("member %x cluster %x; etcd's defaults give member 8e9e05c52164694d cluster cdf818194e3a8c32",
			s.MemberID(), s.ClusterID())
	}
	ms := s.Members()
	if len(ms) != 1 || ms[0].Name != "default" || ms[0].PeerURLs[0] != "http://localhost:2380" {
		t.Fatalf("members = %+v", ms)
	}
}

func TestWritesAndReadsThroughRaft(t *testing.T) {
	s := startServer(t, t.TempDir(), func(c *Config) {
		c.Name = "m1"
		c.PeerURLs = []string{"http://127.0.0.1:12380"}
		c.ClusterToken = "tok"
	})
	checkHeader := func(what string, h *pb.ResponseHeader, rev int64) {
		t.Helper()
		if h.GetClusterId() != s.ClusterID() || h.GetMemberId() != s.MemberID() || h.GetRaftTerm() == 0 || h.GetRevision() != rev {
			t.Fatalf("%s header = %v; want cluster %x member %x, a term, revision %d", what, h, s.ClusterID(), s.MemberID(), rev)
		}
	}
	if r := put(t, s, "a", "1"); r.Header.Revision != 2 {
		t.Fatalf("first put at revision %d, want 2", r.Header.Revision)
	} else {
		checkHeader("put", r.Header, 2)
	}
	put(t, s, "b", "2")
	put(t, s, "a", "3")
	for _, serializable := range []bool{false, true} {
		r := get(t, s, "a", serializable)
		checkHeader("range", r.Header, 4)
		if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "3" || r.Kvs[0].Version != 2 || r.Kvs[0].CreateRevision != 2 || r.Kvs[0].ModRevision != 4 {
			t.Fatalf("range a (serializable=%v) = %v", serializable, r.Kvs)
		}
	}
	dr, err := s.DeleteRange(context.Background(), &pb.DeleteRangeRequest{Key: []byte("b")})
	if err != nil || dr.Deleted != 1 {
		t.Fatalf("DeleteRange = %v, %v", dr, err)
	}
	checkHeader("delete", dr.Header, 5)
	txn, err := s.Txn(context.Background(), &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_Value{Value: []byte("3")}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("c"), Value: []byte("x")}}}},
	})
	if err != nil || !txn.Succeeded {
		t.Fatalf("Txn = %v, %v", txn, err)
	}
	checkHeader("txn", txn.Header, 6)
	if r := get(t, s, "b", false); len(r.Kvs) != 0 {
		t.Fatalf("deleted key still there: %v", r.Kvs)
	}
	st := s.Status()
	if st.Revision != 6 || st.Leader != s.MemberID() || st.AppliedIndex == 0 || st.RaftIndex < st.AppliedIndex || st.DBSize == 0 {
		t.Fatalf("status = %+v", st)
	}
	// mvcc's errors pass through unchanged.
	if _, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("a"), Revision: 100}); !errors.Is(err, mvcc.ErrFutureRev) {
		t.Fatalf("range at a future revision: %v, want mvcc.ErrFutureRev", err)
	}
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("l"), Lease: 5}); !errors.Is(err, mvcc.ErrLeaseNotFound) {
		t.Fatalf("put with a lease: %v, want mvcc.ErrLeaseNotFound", err)
	}
}

func TestCompactPhysical(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	for i := range 5 {
		put(t, s, "k", fmt.Sprint(i))
	}
	if _, err := s.Compact(context.Background(), &pb.CompactionRequest{Revision: 4, Physical: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k"), Revision: 3}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Fatalf("range below the compaction: %v, want mvcc.ErrCompacted", err)
	}
	if _, err := s.Compact(context.Background(), &pb.CompactionRequest{Revision: 4, Physical: true}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Fatalf("compacting again: %v, want mvcc.ErrCompacted", err)
	}
	if r := get(t, s, "k", false); string(r.Kvs[0].Value) != "4" {
		t.Fatalf("after compaction k = %q", r.Kvs[0].Value)
	}
}

func TestRestartKeepsDataAndDoesNotReapply(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, nil)
	for i := range 50 {
		put(t, s, fmt.Sprintf("k%02d", i), fmt.Sprint(i))
	}
	put(t, s, "k00", "again")
	before := s.Status()
	s.Stop()

	s = startServer(t, dir, nil)
	after := s.Status()
	if after.Revision != before.Revision || after.AppliedIndex < before.AppliedIndex {
		t.Fatalf("after restart revision %d applied %d; before %d / %d", after.Revision, after.AppliedIndex, before.Revision, before.AppliedIndex)
	}
	if after.RaftTerm <= before.RaftTerm {
		t.Fatalf("term after restart %d, before %d: want a new election", after.RaftTerm, before.RaftTerm)
	}
	r := get(t, s, "k00", false)
	if string(r.Kvs[0].Value) != "again" || r.Kvs[0].Version != 2 {
		t.Fatalf("k00 after restart = %v", r.Kvs[0])
	}
	resp, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true})
	if err != nil || resp.Count != 50 {
		t.Fatalf("count after restart = %v, %v", resp, err)
	}
	if p := put(t, s, "new", "x"); p.Header.Revision != before.Revision+1 {
		t.Fatalf("first put after restart at revision %d, want %d", p.Header.Revision, before.Revision+1)
	}
}

// TestCommittedButUnappliedIsAppliedAfterRestart loses an apply batch the
// way a crash would (its entries are in the raft log, its effects are not
// in the engine) and checks the restart applies it.
func TestCommittedButUnappliedIsAppliedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	var crash atomic.Bool
	s, err := newServer(Config{DataDir: dir}, testingKnobs{dropApplyBatch: crash.Load})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a leader", func() bool { return s.Leader() != 0 })
	put(t, s, "before", "1")
	crash.Store(true)
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("lost"), Value: []byte("2")}); !errors.Is(err, ErrStopped) {
		t.Fatalf("put whose apply batch was dropped: %v, want ErrStopped", err)
	}
	<-s.Done()
	if !errors.Is(s.Err(), errSimulatedCrash) {
		t.Fatalf("Err = %v, want the simulated crash", s.Err())
	}
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("x")}); !errors.Is(err, ErrStopped) {
		t.Fatalf("put after the member stopped: %v, want ErrStopped", err)
	}

	s = startServer(t, dir, nil)
	r := get(t, s, "lost", false)
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "2" || r.Kvs[0].ModRevision != 3 {
		t.Fatalf("after restart lost = %v, want value 2 at revision 3", r.Kvs)
	}
	if r.Header.Revision != 3 {
		t.Fatalf("revision after replay = %d, want 3", r.Header.Revision)
	}
}

// TestReadIndexBatching holds the first read-index round until many reads
// have queued behind it, and checks they share a single second round and
// all see the writes that preceded them.
func TestReadIndexBatching(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var first, releaseOnce sync.Once
	s := startServerWith(t, t.TempDir(), testingKnobs{
		beforeReadRound: func() { first.Do(func() { close(entered); <-release }) },
	}, nil)
	// Registered after startServer's cleanup, so it runs first: Stop waits
	// for the read loop, which must not stay parked in the hook.
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	const readers = 100
	for i := range readers {
		put(t, s, fmt.Sprintf("key%03d", i), fmt.Sprint(i))
	}
	errc := make(chan error, readers+1)
	go func() {
		_, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("key000")})
		errc <- err
	}()
	select { // the first read's round has begun and holds the read loop
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the first read-index round never started")
	}
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("key%03d", i)
			r, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte(key)})
			if err == nil && (len(r.Kvs) != 1 || string(r.Kvs[0].Value) != fmt.Sprint(i)) {
				err = fmt.Errorf("read %s = %v", key, r.Kvs)
			}
			errc <- err
		}()
	}
	waitUntil(t, "all reads to queue", func() bool {
		s.reads.mu.Lock()
		defer s.reads.mu.Unlock()
		return s.reads.pending != nil && s.reads.pending.readers == readers
	})
	releaseOnce.Do(func() { close(release) })
	wg.Wait()
	for range readers + 1 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if n := s.reads.rounds.Load(); n != 2 {
		t.Fatalf("%d read-index rounds for 1 + %d queued reads, want 2", n, readers)
	}
}

// TestConcurrentWritesAndReads runs writers and linearizable readers
// together: every read sees at least the writes acknowledged before it
// started.
func TestConcurrentWritesAndReads(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	const clients, ops = 32, 20
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte(fmt.Sprintf("c%02d", c))
			for i := range ops {
				val := []byte(fmt.Sprint(i))
				if _, err := s.Put(context.Background(), &pb.PutRequest{Key: key, Value: val}); err != nil {
					errc <- err
					return
				}
				r, err := s.Range(context.Background(), &pb.RangeRequest{Key: key})
				if err != nil {
					errc <- err
					return
				}
				if len(r.Kvs) != 1 || !bytes.Equal(r.Kvs[0].Value, val) {
					errc <- fmt.Errorf("client %d read %v after writing %s", c, r.Kvs, val)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if rev := s.Rev(); rev != 1+clients*ops {
		t.Fatalf("revision %d after %d puts, want %d", rev, clients*ops, 1+clients*ops)
	}
}

func TestRequestTooLarge(t *testing.T) {
	s := startServer(t, t.TempDir(), func(c *Config) { c.MaxRequestBytes = 1024 })
	_, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 2048)})
	if !errors.Is(err, ErrRequestTooLarge) || err.Error() != "etcdserver: request is too large" {
		t.Fatalf("oversized put: %v, want ErrRequestTooLarge", err)
	}
	put(t, s, "k", strings.Repeat("v", 900))
}

func TestTimeoutAndStop(t *testing.T) {
	clock := clocktest.NewFake()
	s, err := newServer(Config{DataDir: t.TempDir(), Clock: clock}, testingKnobs{skipPropose: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	errc := make(chan error, 1)
	go func() {
		_, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k")})
		errc <- err
	}()
	waitForTimer(t, clock, s.cfg.RequestTimeout)
	clock.Advance(s.cfg.RequestTimeout)
	if err := <-errc; !errors.Is(err, ErrTimeout) {
		t.Fatalf("put that never commits: %v, want ErrTimeout", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("k")})
		errc <- err
	}()
	waitForTimer(t, clock, s.cfg.RequestTimeout)
	cancel()
	if err := <-errc; !errors.Is(err, ErrCanceled) {
		t.Fatalf("canceled put: %v, want ErrCanceled", err)
	}

	go func() {
		_, err := s.DeleteRange(context.Background(), &pb.DeleteRangeRequest{Key: []byte("k")})
		errc <- err
	}()
	waitForTimer(t, clock, s.cfg.RequestTimeout)
	s.Stop()
	if err := <-errc; !errors.Is(err, ErrStopped) {
		t.Fatalf("put pending at Stop: %v, want ErrStopped", err)
	}
	if _, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k"), Serializable: true}); !errors.Is(err, ErrStopped) {
		t.Fatalf("range after Stop: %v, want ErrStopped", err)
	}
	if s.Err() != nil {
		t.Fatalf("Err after a clean Stop = %v", s.Err())
	}
	s.Stop() // idempotent
}

func TestRaftLogIsCompacted(t *testing.T) {
	dir := t.TempDir()
	s := startServerWith(t, dir, testingKnobs{catchUpEntries: 10}, func(c *Config) {
		c.SnapshotCount = 50
	})
	for i := range 200 {
		put(t, s, fmt.Sprintf("k%03d", i), "v")
	}
	if st := s.node.Status(); st.FirstIndex < 100 {
		t.Fatalf("raft log starts at %d after 200 entries with snapshot count 50", st.FirstIndex)
	}
	s.Stop()
	s = startServer(t, dir, nil)
	r, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true})
	if err != nil || r.Count != 200 {
		t.Fatalf("count after restart = %v, %v", r, err)
	}
	put(t, s, "after", "v")
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir, nil)
	if _, err := New(Config{DataDir: dir}); !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("second New on the same dir: %v, want storage.ErrLocked", err)
	}
}

func TestBadInitialCluster(t *testing.T) {
	for _, cfg := range []Config{
		{Name: "x", InitialCluster: "y=http://localhost:2380"},
		{InitialCluster: "default=http://10.0.0.1:2380"},
		{InitialClusterState: "sometimes"},
		{InitialClusterState: "existing"}, // nobody to join
		{AutoCompactionMode: "sometimes"},
		{AutoCompactionRetention: "soon"},
	} {
		cfg.DataDir = t.TempDir()
		if s, err := New(cfg); err == nil {
			s.Stop()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// TestTimeoutWithStoppedRaftNode stops the raft node under a running
// server: proposals and linearizable reads can no longer complete and time
// out, while serializable reads still answer from the local store.
func TestTimeoutWithStoppedRaftNode(t *testing.T) {
	clock := clocktest.NewFake()
	s := startServer(t, t.TempDir(), func(c *Config) { c.Clock = clock })
	put(t, s, "k", "v")
	s.node.Stop()
	timers := func() int {
		n := 0
		for _, d := range clock.Timers() {
			if d == s.cfg.RequestTimeout {
				n++
			}
		}
		return n
	}
	before := timers() // those of finished requests stay until the clock moves
	errc := make(chan error, 2)
	go func() {
		_, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k")})
		errc <- err
	}()
	go func() {
		_, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k")})
		errc <- err
	}()
	waitUntil(t, "both requests to wait", func() bool { return timers() == before+2 })
	clock.Advance(s.cfg.RequestTimeout)
	for range 2 {
		if err := <-errc; !errors.Is(err, ErrTimeout) {
			t.Fatalf("request with the raft node stopped: %v, want ErrTimeout", err)
		}
	}
	if r := get(t, s, "k", true); string(r.Kvs[0].Value) != "v" {
		t.Fatalf("serializable read = %v", r.Kvs)
	}
}

// TestRequestTimeoutOnWallClock times writes out on the wall clock, whose
// timers await reuses (requestTimer): a timer reused after answered puts
// and after a timeout must wait the whole timeout again, not fire at once
// for an earlier wait.
func TestRequestTimeoutOnWallClock(t *testing.T) {
	const timeout = 200 * time.Millisecond
	s := startServer(t, t.TempDir(), func(c *Config) { c.RequestTimeout = timeout })
	for round := range 2 {
		for i := range 20 {
			put(t, s, fmt.Sprintf("k%d", i), "v")
		}
		s.knobs.skipPropose = true
		for range 2 {
			start := time.Now()
			_, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("lost")})
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("round %d: put that never commits: %v, want ErrTimeout", round, err)
			}
			if took := time.Since(start); took < timeout {
				t.Fatalf("round %d: timed out after %v, before the %v timeout", round, took, timeout)
			}
		}
		s.knobs.skipPropose = false
	}
}

// TestCleanStopFlushes: Stop writes the engine's memtable out before
// closing it, so a restart has none of the engine's write-ahead log to
// replay, and what was written is there after it.
func TestCleanStopFlushes(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, nil)
	for i := range 100 {
		put(t, s, fmt.Sprintf("k%03d", i), "v")
	}
	gen := s.eng.Generation()
	s.Stop()
	if got := s.eng.Generation(); got == gen {
		t.Fatalf("the engine's generation is still %d after Stop: the memtable was not flushed", got)
	}
	s = startServer(t, dir, nil)
	defer s.Stop()
	waitUntil(t, "a leader", func() bool { return s.Leader() == s.MemberID() })
	r, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Serializable: true})
	if err != nil || len(r.Kvs) != 100 {
		t.Fatalf("after the restart: %d keys, %v; want 100", len(r.Kvs), err)
	}
}
