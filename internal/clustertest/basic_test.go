package clustertest

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func TestThreeMembersReplicate(t *testing.T) {
	c := New(t, 3, Options{})
	ctx := context.Background()
	for i, m := range c.Members() {
		if _, err := m.Server().Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte{byte('a' + i)}}); err != nil {
			t.Fatalf("put on %s: %v", m, err)
		}
	}
	c.WaitConverged()
	for _, m := range c.Members() {
		r, err := m.Server().Range(ctx, &pb.RangeRequest{Key: []byte("k")})
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "c" || r.Header.Revision != 4 {
			t.Fatalf("range on %s = %v, %v", m, r, err)
		}
	}
}
