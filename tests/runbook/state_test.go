package runbook

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestStateDiff checks the comparison TestMoveFromEtcdAndBack relies on:
// equal states give no difference, and each kind of change it must catch
// is reported.
func TestStateDiff(t *testing.T) {
	base := func() *state {
		return &state{
			kvs: &clientv3.GetResponse{
				Header: &pb.ResponseHeader{Revision: 9},
				Kvs: []*mvccpb.KeyValue{
					{Key: []byte("/registry/a"), Value: []byte("1"), CreateRevision: 2, ModRevision: 5, Version: 2, Lease: 7},
					{Key: []byte("/registry/b"), Value: []byte("2"), CreateRevision: 3, ModRevision: 3, Version: 1},
				},
			},
			leases: map[clientv3.LeaseID]clientv3.LeaseTimeToLiveResponse{
				7: {ID: 7, GrantedTTL: 3600, TTL: 3590, Keys: [][]byte{[]byte("/registry/a")}},
			},
		}
	}
	if d := base().diff(base()); d != "" {
		t.Fatalf("equal states differ: %s", d)
	}
	for _, tc := range []struct {
		name   string
		change func(s *state)
		want   string
	}{
		{"store revision", func(s *state) { s.kvs.Header.Revision = 10 }, "store revision"},
		{"missing key", func(s *state) { s.kvs.Kvs = s.kvs.Kvs[:1] }, "1 keys, want 2"},
		{"value", func(s *state) { s.kvs.Kvs[1].Value = []byte("x") }, "key #1"},
		{"create revision", func(s *state) { s.kvs.Kvs[0].CreateRevision = 1 }, "key #0"},
		{"mod revision", func(s *state) { s.kvs.Kvs[1].ModRevision = 4 }, "key #1"},
		{"version", func(s *state) { s.kvs.Kvs[0].Version = 1 }, "key #0"},
		{"key lease", func(s *state) { s.kvs.Kvs[0].Lease = 0 }, "key #0"},
		{"missing lease", func(s *state) { delete(s.leases, 7) }, "lease 7 missing"},
		{"granted TTL", func(s *state) { l := s.leases[7]; l.GrantedTTL = 60; s.leases[7] = l }, "granted TTL"},
		{"expired lease", func(s *state) { l := s.leases[7]; l.TTL = -1; s.leases[7] = l }, "granted TTL"},
		{"lease keys", func(s *state) { l := s.leases[7]; l.Keys = nil; s.leases[7] = l }, "keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := base()
			tc.change(got)
			if d := base().diff(got); !strings.Contains(d, tc.want) {
				t.Errorf("diff = %q, want it to mention %q", d, tc.want)
			}
		})
	}
}
