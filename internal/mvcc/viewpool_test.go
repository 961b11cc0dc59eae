package mvcc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestReadsSeeEachPublishedWrite interleaves writes with bursts of reads,
// so that reads at one state reuse each other's views: every read must
// still see exactly the writes published before it.
func TestReadsSeeEachPublishedWrite(t *testing.T) {
	ts := newTestStore(t)
	for i := range 50 {
		ts.mustPut("k", fmt.Sprint(i))
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					resp, err := ts.Range(&pb.RangeRequest{Key: []byte("k")})
					if err != nil {
						t.Error(err)
						return
					}
					if got := string(resp.Kvs[0].Value); got != fmt.Sprint(i) || resp.Header.Revision != int64(i+2) {
						t.Errorf("after put %d: read %q at revision %d", i, got, resp.Header.Revision)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}

// TestCompactedTablesAreReleased checks that reads do not keep tables a
// compaction replaced: once it is done, Pebble reports no zombie table,
// though no read or write came after it.
func TestCompactedTablesAreReleased(t *testing.T) {
	ts := newTestStore(t)
	db := ts.eng.DB()
	for round := range 2 {
		for i := range 100 {
			ts.mustPut(fmt.Sprintf("k%03d", i), fmt.Sprint(round))
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := ts.Range(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := db.Metrics()
		if m.Table.ZombieCount == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d compacted tables (%d bytes) still held 10s after the compaction", m.Table.ZombieCount, m.Table.ZombieSize)
		}
		time.Sleep(time.Millisecond)
	}
}
