package server

import (
	"context"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/tests/kit"
)

// startServer starts a member in dir with cfg's settings and stops it when
// the test ends.
func startServer(t *testing.T, dir string, mutate func(*Config)) *Server {
	t.Helper()
	cfg := Config{DataDir: dir}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
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

// fakeClock is a Clock that moves only when the test advances it. Its
// ticker never ticks: a single voter needs no ticks to lead.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	d  time.Duration
	c  chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), d: d, c: ch})
	return ch
}

func (c *fakeClock) NewTicker(time.Duration) raftnode.Ticker { return stillTicker{} }

// Advance moves the clock forward, firing every timer that falls due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.c <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// waitForTimer blocks until someone waits on a timer of exactly d.
func (c *fakeClock) waitForTimer(t *testing.T, d time.Duration) {
	t.Helper()
	waitUntil(t, "a "+d.String()+" timer", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, w := range c.waiters {
			if w.d == d {
				return true
			}
		}
		return false
	})
}

type stillTicker struct{}

func (stillTicker) C() <-chan time.Time { return nil }
func (stillTicker) Stop()               {}
