package api

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// benchKV serves b over gRPC on a loopback TCP port and returns a raw KV
// client with conns connections. Allocations and CPU of a benchmark
// through it are the client's and the server's together, both in this
// process; the backend is the fake, so what changes between two runs is
// gRPC and the API.
func benchKV(b *testing.B, be Backend, conns int) []pb.KVClient {
	b.Helper()
	reg := prometheus.NewRegistry()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := NewGRPCServer(be, Options{Registerer: reg, Gatherer: reg})
	go gs.Serve(l)
	b.Cleanup(gs.Stop)
	var out []pb.KVClient
	for range conns {
		cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		out = append(out, pb.NewKVClient(cc))
	}
	return out
}

// BenchmarkGRPCPut measures a put through gRPC and the API with 10
// connections and 100 concurrent callers (on 2 cores), the shape of
// `cairn bench put --clients 100 --conns 10`, on the fake backend.
func BenchmarkGRPCPut(b *testing.B) {
	kvs := benchKV(b, newFakeBackend(), 10)
	val := make([]byte, 256)
	req := &pb.PutRequest{Key: []byte("key"), Value: val}
	var next atomic.Int64
	b.SetParallelism(50)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(p *testing.PB) {
		kv := kvs[int(next.Add(1))%len(kvs)]
		for p.Next() {
			if _, err := kv.Put(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
