package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// BenchmarkPutParallel measures puts through the full raft path with many
// concurrent clients (b.SetParallelism × GOMAXPROCS goroutines).
func BenchmarkPutParallel(b *testing.B) {
	reg := prometheus.NewRegistry()
	s := startBenchServer(b, Config{DataDir: b.TempDir(), Metrics: reg})
	val := make([]byte, 256)
	var n atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb_ *testing.PB) {
		for pb_.Next() {
			key := fmt.Appendf(nil, "key%08d", n.Add(1))
			if _, err := s.Put(context.Background(), &pb.PutRequest{Key: key, Value: val}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	// Group commit at work: how many puts share one synced log write.
	if mfs, err := reg.Gather(); err == nil {
		for _, mf := range mfs {
			if mf.GetName() == "etcd_disk_wal_fsync_duration_seconds" {
				h := mf.GetMetric()[0].GetHistogram()
				if syncs := h.GetSampleCount(); syncs > 0 {
					b.ReportMetric(float64(b.N)/float64(syncs), "puts/fsync")
					b.ReportMetric(h.GetSampleSum()/float64(syncs)*1e6, "µs/fsync")
				}
			}
		}
	}
}

func startBenchServer(b *testing.B, cfg Config) *Server {
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Stop)
	for s.Leader() == 0 {
		select {
		case <-s.Done():
			b.Fatal(s.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return s
}

// BenchmarkRangeLinearizableParallel measures linearizable reads of one key
// with many concurrent clients.
func BenchmarkRangeLinearizableParallel(b *testing.B) {
	s := startBenchServer(b, Config{DataDir: b.TempDir()})
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb_ *testing.PB) {
		for pb_.Next() {
			if _, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k")}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPutSequential measures one client's put latency: about one
// fsync of the raft log plus the apply.
func BenchmarkPutSequential(b *testing.B) {
	s := startBenchServer(b, Config{DataDir: b.TempDir()})
	val := make([]byte, 256)
	b.ResetTimer()
	for i := range b.N {
		key := fmt.Appendf(nil, "key%08d", i)
		if _, err := s.Put(context.Background(), &pb.PutRequest{Key: key, Value: val}); err != nil {
			b.Fatal(err)
		}
	}
}

// startAuthBenchServer is startBenchServer with, when on, setupAuth's
// users and auth enabled; it returns the context of a request from alice
// (readwrite on [k, l)), or a plain one when auth is off.
func startAuthBenchServer(b *testing.B, on bool) (*Server, context.Context) {
	s := startBenchServer(b, Config{DataDir: b.TempDir(), BcryptCost: 4, UnsafeNoFsync: true})
	if _, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		b.Fatal(err)
	}
	if !on {
		return s, context.Background()
	}
	setupAuth(b, s)
	r, err := s.Authenticate(context.Background(), &pb.AuthenticateRequest{Name: "alice", Password: "pw"})
	if err != nil {
		b.Fatal(err)
	}
	return s, WithCredentials(context.Background(), r.Token, "")
}

// BenchmarkAuthOverhead measures linearizable ranges and puts (no fsync)
// from many concurrent clients with auth off and with auth on as a
// logged-in non-root user: the difference is what a request pays for its
// token lookup and permission checks on the API path and at apply.
func BenchmarkAuthOverhead(b *testing.B) {
	for _, mode := range []struct {
		name string
		on   bool
	}{{"off", false}, {"on", true}} {
		b.Run("range/"+mode.name, func(b *testing.B) {
			s, ctx := startAuthBenchServer(b, mode.on)
			b.SetParallelism(64)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb_ *testing.PB) {
				for pb_.Next() {
					if _, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("k")}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run("put/"+mode.name, func(b *testing.B) {
			s, ctx := startAuthBenchServer(b, mode.on)
			val := make([]byte, 256)
			var n atomic.Int64
			b.SetParallelism(64)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb_ *testing.PB) {
				for pb_.Next() {
					key := fmt.Appendf(nil, "k%08d", n.Add(1)%100000)
					if _, err := s.Put(ctx, &pb.PutRequest{Key: key, Value: val}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
