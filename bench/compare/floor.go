package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
)

// The gRPC floor: what a server costs that does nothing but gRPC. The
// compare binary, started again with floorEnv set, serves etcd's KV
// service with grpc-go's defaults and answers every Put and Range at once
// from memory (a Range with one 256-byte value, the size the kv phase
// reads). `cairn bench` drives it as it drives the real servers, and its
// CPU per request is the least any grpc-go server spends on this machine:
// a throughput target that needs a server cheaper than that is out of
// reach without leaving grpc-go.
const floorEnv = "CAIRN_COMPARE_FLOOR_SERVER"

// floorFigures are the floor's CPU per request, server and client.
type floorFigures struct {
	putServer, putClient     float64 // µs
	rangeServer, rangeClient float64 // µs
}

// floorKV answers from memory.
type floorKV struct {
	pb.UnimplementedKVServer
	rev atomic.Int64
	kv  *mvccpb.KeyValue
}

func (f *floorKV) header() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: 1, MemberId: 1, Revision: f.rev.Load(), RaftTerm: 2}
}

// Put implements pb.KVServer.
func (f *floorKV) Put(context.Context, *pb.PutRequest) (*pb.PutResponse, error) {
	f.rev.Add(1)
	return &pb.PutResponse{Header: f.header()}, nil
}

// Range implements pb.KVServer.
func (f *floorKV) Range(context.Context, *pb.RangeRequest) (*pb.RangeResponse, error) {
	return &pb.RangeResponse{Header: f.header(), Kvs: []*mvccpb.KeyValue{f.kv}, Count: 1}, nil
}

// serveFloor is the floor server's main: it listens on a free port of
// 127.0.0.1, prints the address, and serves until killed.
func serveFloor() error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(lis.Addr().String())
	return newFloorServer().Serve(lis)
}

// newFloorServer returns the floor's gRPC server, with grpc-go's defaults
// but for the stream workers cairn's API also keeps (internal/api): without
// them every request starts a goroutine, and the floor cost more CPU per
// serializable read than cairn's whole server.
func newFloorServer() *grpc.Server {
	gs := grpc.NewServer(grpc.NumStreamWorkers(128))
	pb.RegisterKVServer(gs, &floorKV{kv: &mvccpb.KeyValue{
		Key: []byte(rangeKey), Value: make([]byte, 256), CreateRevision: 1, ModRevision: 1, Version: 1,
	}})
	return gs
}

// floorPhase starts the floor server and measures a put and a
// linearizable range with 100 clients against it, as the kv phase does.
func floorPhase(o *options, res *results, benchBin string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), floorEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("floor server: %w", err)
	}
	bc := &benchClient{bin: benchBin, endpoints: []string{strings.TrimSpace(line)}, verbose: o.verbose}
	limit := []string{"--duration", o.maxTime.String(), "--request-timeout", "30s", "--clients", "100", "--conns", "10"}
	measure := func(args ...string) (server, client float64, err error) {
		before, err := procCPUTime(cmd.Process.Pid)
		if err != nil {
			return 0, 0, err
		}
		r, clientCPU, err := bc.runCPU(append(args, limit...)...)
		if err != nil {
			return 0, 0, err
		}
		after, err := procCPUTime(cmd.Process.Pid)
		if err != nil {
			return 0, 0, err
		}
		if r.Requests == 0 {
			return 0, 0, fmt.Errorf("no requests completed")
		}
		per := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(r.Requests) }
		return per(after - before), per(clientCPU), nil
	}
	var f floorFigures
	if f.putServer, f.putClient, err = measure("put", "--total", itoa(o.requests), "--val-size", "256", "--key-space-size", "100000"); err != nil {
		return fmt.Errorf("floor: put: %w", err)
	}
	if f.rangeServer, f.rangeClient, err = measure("range", rangeKey, "--consistency", "l", "--total", itoa(o.requests*2)); err != nil {
		return fmt.Errorf("floor: range: %w", err)
	}
	res.mu.Lock()
	res.floor = &f
	res.mu.Unlock()
	logf("gRPC floor: put %.1f µs server + %.1f µs client, range %.1f + %.1f µs", f.putServer, f.putClient, f.rangeServer, f.rangeClient)
	return nil
}
