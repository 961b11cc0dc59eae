package crashpoint

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/clustertest"
	"github.com/cairn-db/cairn/internal/server"
)

// Raft log compaction every 20 applied entries, keeping 5 for followers:
// a member that misses a few dozen writes catches up by a snapshot.
const (
	snapshotCount  = 20
	catchUpEntries = 5
	keyPrefix      = "k/"
	writeTimeout   = 5 * time.Second
)

// envInt reads a positive integer from the environment, def if unset.
func envInt(t testing.TB, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// rig is a cluster whose members run on disks the test controls.
type rig struct {
	t     testing.TB
	c     *clustertest.Cluster
	mu    sync.Mutex
	disks map[string]*disk
	acked *book
}

func newRig(t testing.TB, n int, seed uint64) *rig {
	r := &rig{t: t, disks: map[string]*disk{}, acked: newBook()}
	r.c = clustertest.New(t, n, clustertest.Options{
		Seed:                   seed,
		SnapshotCount:          snapshotCount,
		SnapshotCatchUpEntries: catchUpEntries,
		Configure: func(cfg *server.Config) {
			cfg.FS = r.disk(cfg.Name).FS()
			// A crash must find what the member synced: fsync is what
			// this test is about.
			cfg.UnsafeNoFsync = false
		},
	})
	return r
}

// disk returns the named member's disk, creating it on first use.
func (r *rig) disk(name string) *disk {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.disks[name]
	if d == nil {
		d = newDisk(name)
		r.disks[name] = d
	}
	return d
}

// restart stops m and starts it again on its disk's current file system.
func (r *rig) restart(m *clustertest.Member) {
	r.t.Helper()
	m.Stop()
	fs := r.disk(m.Name).FS()
	m.Configure(func(cfg *server.Config) { cfg.FS = fs })
	r.c.Net.Revive(m.ID())
	if err := m.Start(); err != nil {
		r.t.Fatalf("restarting %s: %v", m.Name, err)
	}
}

// book holds every acknowledged write: a unique key and its value.
type book struct {
	mu   sync.Mutex
	kvs  map[string]string
	next atomic.Int64
}

func newBook() *book { return &book{kvs: map[string]string{}} }

func (b *book) add(k, v string) {
	b.mu.Lock()
	b.kvs[k] = v
	b.mu.Unlock()
}

func (b *book) snapshot() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]string, len(b.kvs))
	for k, v := range b.kvs {
		out[k] = v
	}
	return out
}

// put writes one new key through s and records it if acknowledged.
func (r *rig) put(s *server.Server) error {
	n := r.acked.next.Add(1)
	k, v := fmt.Sprintf("%s%08d", keyPrefix, n), fmt.Sprintf("v%d", n)
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte(v)}); err != nil {
		return err
	}
	r.acked.add(k, v)
	return nil
}

// writeUntil runs writers through random members other than avoid until
// stop is closed or max writes were attempted; it returns the number of
// writes acknowledged.
func (r *rig) writeUntil(rng *rand.Rand, avoid *clustertest.Member, stop <-chan struct{}, max int) int {
	var (
		mu        sync.Mutex
		attempted int
		acked     atomic.Int64
		wg        sync.WaitGroup
	)
	seeds := make([]uint64, 3)
	for i := range seeds {
		seeds[i] = rng.Uint64()
	}
	for _, sd := range seeds {
		wg.Go(func() {
			wr := rand.New(rand.NewPCG(sd, sd))
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				if attempted >= max {
					mu.Unlock()
					return
				}
				attempted++
				mu.Unlock()
				var targets []*server.Server
				for _, m := range r.c.Running() {
					if m != avoid {
						if s := m.Server(); s != nil {
							targets = append(targets, s)
						}
					}
				}
				if len(targets) == 0 {
					return
				}
				if r.put(targets[wr.IntN(len(targets))]) == nil {
					acked.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(acked.Load())
}

// check waits until the running members converge and verifies that none
// stopped by itself and that the members in only (every running one if
// none is named) hold every acknowledged write. Converged members hold the
// same key history (HashKV), so checking the member a crash hit suffices.
func (r *rig) check(what string, only ...*clustertest.Member) {
	r.t.Helper()
	for _, m := range r.c.Members() {
		if err := m.Err(); err != nil {
			r.t.Fatalf("%s: %s stopped by itself: %v", what, m, err)
		}
	}
	r.c.WaitConverged()
	want := r.acked.snapshot()
	targets := only
	if len(targets) == 0 {
		targets = r.c.Running()
	}
	for _, m := range targets {
		s := m.Server()
		if s == nil {
			r.t.Fatalf("%s: %s stopped: %v", what, m, m.Err())
		}
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		resp, err := s.Range(ctx, &pb.RangeRequest{Key: []byte(keyPrefix), RangeEnd: []byte("k0"), Serializable: true})
		cancel()
		if err != nil {
			r.t.Fatalf("%s: reading %s: %v", what, m, err)
		}
		got := make(map[string]string, len(resp.GetKvs()))
		for _, kv := range resp.GetKvs() {
			got[string(kv.GetKey())] = string(kv.GetValue())
		}
		for k, v := range want {
			if got[k] != v {
				r.t.Fatalf("%s: %s lost the acknowledged write %s=%s (holds %q; %d of %d acknowledged keys present)",
					what, m, k, v, got[k], countPresent(got, want), len(want))
			}
		}
	}
}

func countPresent(got, want map[string]string) int {
	n := 0
	for k, v := range want {
		if got[k] == v {
			n++
		}
	}
	return n
}
