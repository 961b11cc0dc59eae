package lease

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
)

// grantMany grants leases first..first+n-1 with ttl, 10,000 to a batch.
func (m *member) grantMany(first, n, ttl int64) {
	m.t.Helper()
	for done := int64(0); done < n; {
		m.apply(func(a *applier) {
			for i := 0; i < 10000 && done < n; i++ {
				if _, err := a.grant(first+done, ttl); err != nil {
					m.t.Fatal(err)
				}
				done++
			}
		})
	}
}

// revokeExpired revokes every expired lease as the server would, in
// batches of max, and returns how many it revoked.
func (m *member) revokeExpired(max int) int {
	m.t.Helper()
	total := 0
	for {
		ids := m.le.Expired(max)
		if len(ids) == 0 {
			return total
		}
		m.apply(func(a *applier) {
			for _, id := range ids {
				if _, err := a.revoke(id); err != nil {
					m.t.Fatal(err)
				}
			}
		})
		total += len(ids)
	}
}

// TestManyShortLeasesGiveBackMemory checks that once a burst of short
// leases has expired and been revoked, the lessor holds nothing of them:
// the map is rebuilt and the heaps' arrays shrunk.
func TestManyShortLeasesGiveBackMemory(t *testing.T) {
	n := int64(100_000)
	if testing.Short() {
		n = 10_000
	}
	m := newMember(t, Options{MinTTL: 1, CheckpointInterval: time.Second})
	m.le.Promote(0)
	m.grantMany(1, n, 2) // longer than the interval: in both heaps
	m.grant(n+1, 3600)   // one long lease stays
	m.clock.Advance(2 * time.Second)
	if got := m.revokeExpired(10_000); got != int(n) {
		t.Fatalf("revoked %d leases, want %d", got, n)
	}
	if m.le.Len() != 1 {
		t.Fatalf("%d leases left, want 1", m.le.Len())
	}
	m.le.mu.Lock()
	defer m.le.mu.Unlock()
	if c := cap(m.le.mu.expiry.items); c > 1024 {
		t.Errorf("expiry heap keeps an array of %d for 1 lease", c)
	}
	if c := cap(m.le.mu.checkpoints.items); c > 1024 {
		t.Errorf("checkpoint heap keeps an array of %d for 1 lease", c)
	}
	if p := m.le.mu.peak; p > 1024 {
		t.Errorf("lease map not rebuilt: sized for %d, holds 1", p)
	}
}

// TestExpiryMatchesNaiveModel drives the lessor with random grants,
// renewals, revokes, checkpoints, leader changes and time, and compares
// what Expired reports with a scan of every lease's deadline.
func TestExpiryMatchesNaiveModel(t *testing.T) {
	const retry = 3 * time.Second
	rng := rand.New(rand.NewPCG(1, 2))
	m := newMember(t, Options{MinTTL: 1, ExpiredRetry: retry, CheckpointInterval: 10 * time.Second})
	type model struct {
		ttl, remaining int64
		deadline       time.Time // zero while not primary
		reported       time.Time // when Expired last reported it
	}
	leases := map[int64]*model{}
	primary := false
	start := func(id int64, ml *model, extend time.Duration) {
		ttl := ml.ttl
		if ml.remaining > 0 {
			ttl = ml.remaining
		}
		ml.deadline = m.clock.Now().Add(extend + time.Duration(ttl)*time.Second)
		ml.reported = time.Time{}
	}
	nextID := int64(1)
	for step := 0; step < 3000; step++ {
		now := m.clock.Now()
		switch op := rng.IntN(100); {
		case op < 30:
			id, ttl := nextID, 1+rng.Int64N(20)
			nextID++
			m.grant(id, ttl)
			ml := &model{ttl: ttl}
			if primary {
				start(id, ml, 0)
			}
			leases[id] = ml
		case op < 45 && primary:
			id := 1 + rng.Int64N(nextID)
			ml := leases[id]
			if ml == nil || !ml.deadline.After(now) {
				continue // unknown, or expired: Renew would wait
			}
			if _, _, err := m.renew(id); err != nil {
				t.Fatalf("step %d: renew %d: %v", step, id, err)
			}
			ml.deadline, ml.reported = now.Add(time.Duration(ml.ttl)*time.Second), time.Time{}
		case op < 55:
			id := 1 + rng.Int64N(nextID)
			if leases[id] == nil {
				continue
			}
			m.revoke(id)
			delete(leases, id)
		case op < 60:
			id := 1 + rng.Int64N(nextID)
			if ml := leases[id]; ml != nil {
				r := rng.Int64N(ml.ttl + 1)
				m.checkpoint(id, r)
				ml.remaining = r
			}
		case op < 63:
			if primary {
				m.le.Demote()
				primary = false
				for _, ml := range leases {
					ml.deadline = time.Time{}
				}
			} else {
				extend := time.Duration(rng.IntN(3)) * time.Second
				m.le.Promote(extend)
				primary = true
				for id, ml := range leases {
					start(id, ml, extend)
				}
			}
		case op < 85:
			m.clock.Advance(time.Duration(rng.IntN(2000)) * time.Millisecond)
		default:
			var want []int64
			for id, ml := range leases {
				if !primary || ml.deadline.After(now) {
					continue
				}
				if !ml.reported.IsZero() && ml.reported.Add(retry).After(now) {
					continue
				}
				want = append(want, id)
			}
			got := m.le.Expired(len(leases) + 1)
			for _, id := range got {
				leases[id].reported = now
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: Expired = %v, model says %v", step, got, want)
			}
		}
	}
}

// BenchmarkShortLeases grants b.N leases with a 1 s TTL on the leader, lets
// them expire and revokes them through the heap, as the server would.
// Reported: the lessor's heap per live lease at the peak.
func BenchmarkShortLeases(b *testing.B) {
	m := newMember(b, Options{MinTTL: 1, CheckpointInterval: -1})
	m.le.Promote(0)
	var before, peak runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	m.grantMany(1, int64(b.N), 1)
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&peak)
	b.StartTimer()
	m.clock.Advance(time.Second)
	if got := m.revokeExpired(10_000); got != b.N {
		b.Fatalf("revoked %d, want %d", got, b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(int64(peak.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heap-B/lease")
}

// BenchmarkExpiryTickWithMillionLeases measures one leader tick's work —
// find the expired leases, revoke them in one batch — while a million
// other leases are live: it costs O(k log n), not a scan of the million.
func BenchmarkExpiryTickWithMillionLeases(b *testing.B) {
	const live = 1_000_000
	m := newMember(b, Options{MinTTL: 1, CheckpointInterval: -1})
	m.le.Promote(0)
	m.grantMany(1, live, MaxTTL)
	const perTick = 500
	next := int64(live + 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		m.grantMany(next, perTick, 1)
		next += perTick
		m.clock.Advance(time.Second)
		b.StartTimer()
		if got := m.revokeExpired(perTick); got != perTick {
			b.Fatalf("revoked %d, want %d", got, perTick)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perTick), "ns/revoke")
}
