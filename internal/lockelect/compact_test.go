package lockelect

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"google.golang.org/grpc"
)

// recordingStream is the server side of an Observe stream that keeps what
// is sent.
type recordingStream struct {
	grpc.ServerStream // unused; present for the interface
	ctx               context.Context
	sent              []*v3electionpb.LeaderResponse
}

func (s *recordingStream) Send(m *v3electionpb.LeaderResponse) error {
	s.sent = append(s.sent, m)
	return nil
}

func (s *recordingStream) Context() context.Context { return s.ctx }

// TestWaitsSurviveCompaction checks that every watch the services wait on
// treats a compacted history as "read the state again" rather than as a
// failure: a lock waiter keeps its place, and an observer neither fails
// nor repeats the value it already sent.
func TestWaitsSurviveCompaction(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	lease := f.grant(t, 60)
	camp, err := f.ours.elect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: lease, Value: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v2", "v3"} {
		if _, err := f.ours.elect.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: camp.Leader, Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := f.kv.Get(ctx, string(camp.Leader.Key))
	if err != nil {
		t.Fatal(err)
	}
	current := resp.Kvs[0]
	if _, err := f.kv.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	const old = 2 // compacted away

	if err := waitDelete(ctx, f.kv, old, string(camp.Leader.Key), "e/none"); err != nil {
		t.Errorf("waitDelete from a compacted revision: %v, want nil (read again)", err)
	}
	if hdr, kv, err := firstPut(ctx, f.kv, "empty/", old); hdr != nil || kv != nil || err != nil {
		t.Errorf("firstPut from a compacted revision = %v, %v, %v; want nothing (read again)", hdr, kv, err)
	}

	s := &recordingStream{ctx: ctx}
	o := observer{c: f.kv, stream: s, last: current}
	if err := o.follow(ctx, string(camp.Leader.Key), old); err != nil {
		t.Errorf("follow from a compacted revision: %v, want nil (read again)", err)
	}
	hdr, kv, err := o.leader(ctx, "e/")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.send(hdr, kv); err != nil {
		t.Fatal(err)
	}
	if len(s.sent) != 0 {
		t.Errorf("observer re-sent %v after a compaction; it had already sent %q", s.sent, current.Value)
	}
	if _, err := f.kv.Put(ctx, string(camp.Leader.Key), "v4", clientv3.WithLease(clientv3.LeaseID(lease))); err != nil {
		t.Fatal(err)
	}
	hdr, kv, err = o.leader(ctx, "e/")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.send(hdr, kv); err != nil {
		t.Fatal(err)
	}
	if len(s.sent) != 1 || string(s.sent[0].Kv.Value) != "v4" {
		t.Errorf("observer sent %v after a new value, want v4", s.sent)
	}
}
