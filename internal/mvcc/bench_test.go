package mvcc

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func benchPut(b *testing.B, ts *testStore, key string, val []byte) {
	batch := ts.eng.NewBatch()
	w := ts.Store.Write(batch)
	if _, err := w.Put(&pb.PutRequest{Key: []byte(key), Value: val}); err != nil {
		b.Fatal(err)
	}
	if err := batch.Commit(false); err != nil {
		b.Fatal(err)
	}
	w.Done()
}

// fill writes n keys, each with versions versions.
func fill(b testing.TB, ts *testStore, n, versions int) {
	val := make([]byte, 256)
	for range versions {
		batch := ts.eng.NewBatch()
		w := ts.Store.Write(batch)
		for i := range n {
			if _, err := w.Put(&pb.PutRequest{Key: []byte(fmt.Sprintf("key/%08d", i)), Value: val}); err != nil {
				b.Fatal(err)
			}
			if i%1000 == 999 || i == n-1 {
				if err := batch.Commit(false); err != nil {
					b.Fatal(err)
				}
				w.Done()
				batch = ts.eng.NewBatch()
				w = ts.Store.Write(batch)
			}
		}
		batch.Discard()
	}
}

func BenchmarkPutFreshKey(b *testing.B) {
	ts := newTestStore(b)
	val := make([]byte, 256)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		benchPut(b, ts, fmt.Sprintf("fresh/%09d", i), val)
	}
}

func BenchmarkPutExistingKey(b *testing.B) {
	ts := newTestStore(b)
	fill(b, ts, 10000, 1)
	val := make([]byte, 256)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		benchPut(b, ts, fmt.Sprintf("key/%08d", i%10000), val)
	}
}

func BenchmarkRangeOneKeyAtHead(b *testing.B) {
	ts := newTestStore(b)
	fill(b, ts, 10000, 5)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		resp, err := ts.Range(&pb.RangeRequest{Key: []byte(fmt.Sprintf("key/%08d", i%10000))})
		if err != nil || len(resp.Kvs) != 1 {
			b.Fatal(resp, err)
		}
	}
}

func BenchmarkRangePrefix100(b *testing.B) {
	ts := newTestStore(b)
	fill(b, ts, 10000, 3)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		start := (i % 99) * 100
		resp, err := ts.Range(&pb.RangeRequest{Key: []byte(fmt.Sprintf("key/%08d", start)), RangeEnd: []byte(fmt.Sprintf("key/%08d", start+100))})
		if err != nil || len(resp.Kvs) != 100 {
			b.Fatal(len(resp.Kvs), err)
		}
	}
}

func BenchmarkRangeCountAll(b *testing.B) {
	ts := newTestStore(b)
	fill(b, ts, 10000, 3)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := ts.Range(&pb.RangeRequest{Key: []byte("key/"), RangeEnd: []byte("key0"), CountOnly: true})
		if err != nil || resp.Count != 10000 {
			b.Fatal(resp.Count, err)
		}
	}
}

// BenchmarkPutGroup is the apply loop under a put load: groups of 64 puts
// of 256-byte values on keys drawn from 100,000, each group one Write and
// one batch, next to a raft log of the same volume written to the same
// engine (as raftnode does), so that memtables hold what they hold in a
// member. The store is warmed with every key first.
func BenchmarkPutGroup(b *testing.B) {
	const keys, group = 100_000, 64
	ts := newTestStore(b)
	fill(b, ts, keys, 1)
	val := make([]byte, 256)
	entry := make([]byte, 300)
	rng := rand.New(rand.NewPCG(1, 2))
	var logIndex uint64
	reqs := make([]*pb.PutRequest, group)
	for i := range reqs {
		reqs[i] = &pb.PutRequest{Value: val}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += group {
		log := ts.eng.NewWriteBatch()
		for range group {
			logIndex++
			log.Set(binary.BigEndian.AppendUint64([]byte{'r', 'e'}, logIndex), entry, nil)
		}
		if err := log.Commit(false); err != nil {
			b.Fatal(err)
		}
		batch := ts.eng.NewBatch()
		w := ts.Store.Write(batch)
		for _, r := range reqs {
			r.Key = fmt.Appendf(r.Key[:0], "key/%08d", rng.IntN(keys))
			if _, err := w.Put(r); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Commit(false); err != nil {
			b.Fatal(err)
		}
		w.Done()
	}
}

// BenchmarkTxnPutIfAbsent is the txn of a lock or an election: put a key
// if its create revision is 0, on keys that do not exist yet (at random,
// next to 100,000 that do), with the key filter and without it.
func BenchmarkTxnPutIfAbsent(b *testing.B) {
	for _, filter := range []bool{true, false} {
		b.Run(fmt.Sprint("filter=", filter), func(b *testing.B) {
			ts := newTestStore(b)
			fill(b, ts, 100_000, 1)
			if !filter {
				ts.filter.ready.Store(false)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			val := make([]byte, 256)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				key := fmt.Appendf(nil, "new/%016x", rng.Uint64())
				r := &pb.TxnRequest{
					Compare: []*pb.Compare{{Key: key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_CreateRevision{}}},
					Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: val}}}},
				}
				resp, err := ts.txn(r)
				if err != nil || !resp.Succeeded {
					b.Fatal(resp, err)
				}
			}
		})
	}
}
