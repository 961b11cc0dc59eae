package server

import (
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestAutoPromoteLearners: with AutoPromoteLearners the leader promotes a
// learner by itself once it has caught up, counts it, and the promoted
// member serves as a voter.
func TestAutoPromoteLearners(t *testing.T) {
	a := listenPeer(t, "a")
	initial := "a=" + a.url
	a.cfg = peerConfig(t, a, initial)
	a.cfg.AutoPromoteLearners = true
	a.start(t)
	waitUntil(t, "a leader", func() bool { return a.s.Leader() == a.s.MemberID() })
	ctx := context.Background()
	for i := range 10 {
		if _, err := a.s.Put(ctx, &pb.PutRequest{Key: []byte{'k', byte('0' + i)}, Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}

	d := listenPeer(t, "d")
	added, _, err := a.s.MemberAdd(ctx, []string{d.url}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !added.IsLearner {
		t.Fatalf("added %+v, want a learner", added)
	}
	d.cfg = peerConfig(t, d, initial+",d="+d.url)
	d.cfg.InitialClusterState = ClusterStateExisting
	d.start(t)

	waitUntil(t, "the learner's automatic promotion", func() bool {
		m, ok := a.s.members.get(added.ID)
		return ok && !m.IsLearner
	})
	// The monitor counts the promotion once its proposal has applied,
	// just after the member list shows it.
	promoted := func() float64 {
		var m dto.Metric
		if err := a.s.versions.autoPromoted.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	waitUntil(t, "the promotion to be counted", func() bool { return promoted() >= 1 })
	if n := promoted(); n != 1 {
		t.Fatalf("auto-promotion counter %v, want 1", n)
	}
	// A voter now: the new member applies what it is sent and counts for
	// the quorum of two.
	waitUntil(t, "the promoted member to see itself as a voter", func() bool { return !d.s.IsLearner() })
	if _, err := a.s.Put(ctx, &pb.PutRequest{Key: []byte("after"), Value: []byte("v")}); err != nil {
		t.Fatalf("put with the promoted member in the quorum: %v", err)
	}
}
