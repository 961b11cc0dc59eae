package mvcc

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestConcurrentReads runs readers against the apply goroutine and the
// background compaction. Each write moves two keys together in one txn, so
// any read that sees them disagree saw a half-applied or torn state.
func TestConcurrentReads(t *testing.T) {
	defer func(n int) { compactChunkEvents = n }(compactChunkEvents)
	compactChunkEvents = 7 // many small compaction batches, to interleave with readers
	ts := newTestStore(t)
	const writes = 400
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(r), 1))
			for !stop.Load() {
				cur := ts.Rev()
				rev := int64(0)
				if c := ts.CompactRev(); rnd.IntN(2) == 0 && cur > c {
					rev = max(c, 1) + rnd.Int64N(cur-max(c, 1)+1)
				}
				resp, err := ts.Range(&pb.RangeRequest{Key: []byte("pair/"), RangeEnd: []byte("pair0"), Revision: rev})
				if err == ErrCompacted {
					continue // a compaction overtook the revision picked
				}
				if err != nil {
					errs <- err
					return
				}
				if len(resp.Kvs) != 2 && !(len(resp.Kvs) == 0 && (rev == 1 || rev == 0 && resp.Header.Revision == 1)) {
					errs <- fmt.Errorf("at %d (header %d): %d keys, want 2", rev, resp.Header.Revision, len(resp.Kvs))
					return
				}
				if len(resp.Kvs) == 2 && (string(resp.Kvs[0].Value) != string(resp.Kvs[1].Value) || resp.Kvs[0].ModRevision != resp.Kvs[1].ModRevision) {
					errs <- fmt.Errorf("torn read at %d: %v", rev, resp.Kvs)
					return
				}
				if resp.Header.Revision < cur {
					errs <- fmt.Errorf("header revision %d went back from %d", resp.Header.Revision, cur)
					return
				}
			}
		}()
	}
	for i := range writes {
		v := []byte(fmt.Sprint(i))
		if _, err := ts.txn(&pb.TxnRequest{Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("pair/a"), Value: v}}},
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("pair/b"), Value: v}}},
		}}); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			if _, err := ts.compact(ts.Rev() - 10); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
