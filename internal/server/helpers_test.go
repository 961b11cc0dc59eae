package server

import (
	"context"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/clock/clocktest"
	"github.com/cairn-db/cairn/tests/kit"
)

// startServer starts a member in dir with cfg's settings and stops it when
// the test ends.
func startServer(t *testing.T, dir string, mutate func(*Config)) *Server {
	t.Helper()
	return startServerWith(t, dir, testingKnobs{}, mutate)
}

// startServerWith is startServer with testing knobs.
func startServerWith(t *testing.T, dir string, knobs testingKnobs, mutate func(*Config)) *Server {
	t.Helper()
	cfg := Config{DataDir: dir}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := newServer(cfg, knobs)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Stop)
	waitUntil(t, "a leader", func() bool { return s.Leader() == s.MemberID() })
	return s
}

// waitUntil is the test kit's WaitFor (tests/kit): it polls cond until it
// holds, failing the test after a generous deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	kit.WaitFor(t, what, cond)
}

func put(t *testing.T, s *Server, key, val string) *pb.PutResponse {
	t.Helper()
	resp, err := s.Put(context.Background(), &pb.PutRequest{Key: []byte(key), Value: []byte(val)})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return resp
}

func get(t *testing.T, s *Server, key string, serializable bool) *pb.RangeResponse {
	t.Helper()
	resp, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte(key), Serializable: serializable})
	if err != nil {
		t.Fatalf("Range(%q): %v", key, err)
	}
	return resp
}

// waitForTimer blocks until something waits on a timer of exactly d on
// the fake clock.
func waitForTimer(t *testing.T, clock *clocktest.Fake, d time.Duration) {
	t.Helper()
	waitUntil(t, "a "+d.String()+" timer", func() bool { return slices.Contains(clock.Timers(), d) })
}
