package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/lease"
)

// TestLeaseForwardingOverRealTransport runs three members over the real
// peer transport: keep-alives and TimeToLive sent to a follower go to the
// leader over HTTP (POST /leases/renew, /leases/ttl), an unknown lease
// comes back as lease.ErrLeaseNotFound, and a member that knows no leader
// answers etcd's "no leader" once the request timeout has passed.
func TestLeaseForwardingOverRealTransport(t *testing.T) {
	ms := []*peerMember{listenPeer(t, "a"), listenPeer(t, "b"), listenPeer(t, "c")}
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.name+"="+m.url)
	}
	for _, m := range ms {
		m.cfg = peerConfig(t, m, strings.Join(parts, ","))
		m.cfg.RequestTimeout = time.Second
		m.start(t)
	}
	var f *peerMember
	waitUntil(t, "a leader everyone agrees on", func() bool {
		id := ms[0].s.Leader()
		if id == 0 || ms[1].s.Leader() != id || ms[2].s.Leader() != id {
			return false
		}
		for _, m := range ms {
			if m.s.MemberID() != id {
				f = m
			}
		}
		return true
	})
	ctx := context.Background()
	g, err := f.s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: g.ID}); err != nil {
		t.Fatal(err)
	}
	// A follower's own lessor keeps no clock: only the leader's answers.
	if _, err := f.s.leases.lessor.TimeToLive(&pb.LeaseTimeToLiveRequest{ID: g.ID}); !errors.Is(err, lease.ErrNotPrimary) {
		t.Fatalf("the follower's own lessor answers TimeToLive: %v", err)
	}
	ttl, err := f.s.LeaseRenew(ctx, g.ID)
	if err != nil || ttl != 60 {
		t.Fatalf("renew through a follower: %d %v, want 60", ttl, err)
	}
	r, err := f.s.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: g.ID, Keys: true})
	if err != nil || r.GrantedTTL != 60 || r.TTL <= 0 || len(r.Keys) != 1 || string(r.Keys[0]) != "k" {
		t.Fatalf("TimeToLive through a follower: %+v %v", r, err)
	}
	if r.Header.MemberId != f.s.MemberID() || r.Header.Revision != f.s.Rev() {
		t.Fatalf("TimeToLive header %+v, want the follower's", r.Header)
	}
	if _, err := f.s.LeaseRenew(ctx, g.ID+1); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("renewing an unknown lease through a follower: %v, want %v", err, lease.ErrLeaseNotFound)
	}
	if _, err := f.s.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: g.ID + 1}); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("TimeToLive of an unknown lease through a follower: %v, want %v", err, lease.ErrLeaseNotFound)
	}

	// Alone, the follower soon knows no leader.
	for _, m := range ms {
		if m != f {
			m.stop()
		}
	}
	waitUntil(t, "the last member to lose its leader", func() bool { return f.s.Leader() == 0 })
	if _, err := f.s.LeaseRenew(ctx, g.ID); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("renew without a leader: %v, want %v", err, ErrNoLeader)
	}
	if _, err := f.s.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: g.ID}); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("TimeToLive without a leader: %v, want %v", err, ErrNoLeader)
	}
}
