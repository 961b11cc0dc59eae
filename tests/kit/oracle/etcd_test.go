package oracle

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestRestartOnDir stops a member and starts another on its directory: the
// data is still there, and stopping twice is harmless.
func TestRestartOnDir(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first := Start(t, Dir(dir), FastElection())
	if _, err := first.KV(t).Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatalf("put: %v", err)
	}
	first.Stop()
	first.Stop()

	second := Start(t, Dir(dir), FastElection())
	resp, err := second.KV(t).Range(ctx, &pb.RangeRequest{Key: []byte("k")})
	if err != nil {
		t.Fatalf("range after the restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after the restart k holds %v; want v", resp.Kvs)
	}
}
