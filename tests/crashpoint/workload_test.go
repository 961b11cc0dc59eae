package crashpoint

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/clustertest"
	"github.com/cairn-db/cairn/internal/server"
)

// Raft log compaction every 20 applied entries, keeping 5 for followers:
// a member that misses a few dozen writes catches up by a snapshot. The
// workload writes keySpace keys under keyPrefix, over and over.
const (
	snapshotCount  = 20
	catchUpEntries = 5
	keyPrefix      = "k/"
	keySpace       = 1000
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

// newRig starts n members on disks of their own. quota, if not 0, is each
// member's QuotaBackendBytes, which also sizes its memtables (1/64 of it)
// and so its write-ahead logs.
func newRig(t testing.TB, n int, seed uint64, quota int64) *rig {
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
			if quota != 0 {
				cfg.QuotaBackendBytes = quota
			}
			// etcd's strict reconfiguration check refuses a membership
			// change until every peer connection has lasted 5 s, and a
			// round always restarts a member: each change waited that long
			// (half a second of real time, most of a round). The test is
			// about crashes; the check has tests of its own (internal/api,
			// internal/embed, tests/process).
			cfg.DisableStrictReconfigCheck = true
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

// book holds, for every key of the workload, the acknowledged write with
// the highest revision. The workload writes a bounded key space (keySpace
// keys) over and over, so a check reads O(keys), not O(history): a
// member's copy of a key is right if it is that write (same revision, same
// value) or a later one of the same key, acknowledged or not (a write that
// timed out may still land, after any acknowledged one). A member that
// lost an acknowledged write holds the key at a lower revision, or not at
// all; every later write's revision would shift too, since revisions count
// the applied writes.
type book struct {
	mu     sync.Mutex
	latest map[string]ackedWrite
	acked  int
	// next numbers the writes: write n puts value "v<n>" under keyName(n).
	next atomic.Int64
}

// ackedWrite is an acknowledged put: its value and the revision it made
// (the response header's, which is the key's mod revision).
type ackedWrite struct {
	val string
	rev int64
}

func newBook() *book { return &book{latest: map[string]ackedWrite{}} }

// keyName returns the key write n puts: one of keySpace keys.
func keyName(n int64) string { return fmt.Sprintf("%s%06d", keyPrefix, n%keySpace) }

func (b *book) add(k, v string, rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.acked++
	if w, ok := b.latest[k]; !ok || rev > w.rev {
		b.latest[k] = ackedWrite{val: v, rev: rev}
	}
}

// count returns how many writes were acknowledged.
func (b *book) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.acked
}

// written reports whether v is a value the workload tried to put under k.
func (b *book) written(k, v string) bool {
	digits, ok := strings.CutPrefix(v, "v")
	n, err := strconv.ParseInt(digits, 10, 64)
	if !ok || err != nil || "v"+strconv.FormatInt(n, 10) != v {
		return false
	}
	return n >= 1 && n <= b.next.Load() && keyName(n) == k
}

// stored is a key as a member holds it.
type stored struct {
	val string
	rev int64
}

// verify returns what is wrong with a member's keys (the workload's key
// space, read at one revision), "" if nothing: every acknowledged write
// must be there or overwritten by a later write of the same key, and every
// value must be one the workload wrote.
func (b *book) verify(got map[string]stored) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	present := 0
	for k, w := range b.latest {
		g, ok := got[k]
		switch {
		case !ok:
			return fmt.Sprintf("lost the acknowledged write %s=%s at revision %d (the key is missing; %d of %d acknowledged keys checked)", k, w.val, w.rev, present, len(b.latest))
		case g.rev < w.rev:
			return fmt.Sprintf("lost the acknowledged write %s=%s at revision %d (holds %s from revision %d)", k, w.val, w.rev, g.val, g.rev)
		case g.rev == w.rev && g.val != w.val:
			return fmt.Sprintf("holds %s=%s at revision %d, where %s was acknowledged", k, g.val, g.rev, w.val)
		}
		present++
	}
	for k, g := range got {
		if !b.written(k, g.val) {
			return fmt.Sprintf("holds %s=%s at revision %d, a value never written to it", k, g.val, g.rev)
		}
	}
	return ""
}

// put writes the next value of the workload through s and records it if
// acknowledged.
func (r *rig) put(ctx context.Context, s *server.Server) error {
	n := r.acked.next.Add(1)
	k, v := keyName(n), fmt.Sprintf("v%d", n)
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	resp, err := s.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte(v)})
	if err != nil {
		return err
	}
	r.acked.add(k, v, resp.GetHeader().GetRevision())
	return nil
}

// writeUntil runs writers through random members other than avoid until
// stop is closed or max writes were attempted; it returns the number of
// writes acknowledged. Closing stop also abandons the writes in flight: a
// write forwarded to a leader that just crashed would otherwise wait out
// the request timeout (3 s of simulated time), most of a round. An
// abandoned write is not acknowledged, and may still land (book.verify
// allows for it).
func (r *rig) writeUntil(rng *rand.Rand, avoid *clustertest.Member, stop <-chan struct{}, max int) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if stop != nil {
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
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
				if r.put(ctx, targets[wr.IntN(len(targets))]) == nil {
					acked.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(acked.Load())
}

// check waits until the running members converge (the same applied index
// and key history, HashKV), and verifies that none stopped by itself and
// that every running member holds every acknowledged write: one range read
// of the workload's key space per member.
func (r *rig) check(what string) {
	r.t.Helper()
	for _, m := range r.c.Members() {
		if err := m.Err(); err != nil {
			r.t.Fatalf("%s: %s stopped by itself: %v", what, m, err)
		}
	}
	r.waitConverged()
	for _, m := range r.c.Running() {
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
		got := make(map[string]stored, len(resp.GetKvs()))
		for _, kv := range resp.GetKvs() {
			got[string(kv.GetKey())] = stored{val: string(kv.GetValue()), rev: kv.GetModRevision()}
		}
		if bad := r.acked.verify(got); bad != "" {
			r.t.Fatalf("%s: %s %s", what, m, bad)
		}
		// An alarm (NOSPACE under the small quota) would refuse the
		// writes the crash points are about.
		if a := s.Alarms(); len(a) > 0 {
			r.t.Fatalf("%s: %s has alarms raised: %v", what, m, a)
		}
	}
}

// waitConverged waits until every running member has applied the same
// index, all it knows committed, and hashes the same key history
// (HashKV). It reads the cheap Status until the indexes agree and only
// then the hashes, which read every revision since the last compaction:
// polled every millisecond while a restarted member catches up, hashing
// first cost more than the catching up.
func (r *rig) waitConverged() {
	r.t.Helper()
	r.c.WaitFor("the members to converge", func() bool {
		running := r.c.Running()
		var applied uint64
		for i, m := range running {
			s := m.Server()
			if s == nil {
				return false
			}
			st := s.Status()
			if st.AppliedIndex != st.RaftIndex || i > 0 && st.AppliedIndex != applied {
				return false
			}
			applied = st.AppliedIndex
		}
		var hash uint32
		for i, m := range running {
			s := m.Server()
			if s == nil {
				return false
			}
			h, err := s.HashKV(context.Background(), 0)
			if err != nil || i > 0 && h.GetHash() != hash {
				return false
			}
			hash = h.GetHash()
			// The hash is of what the member applied when it answered:
			// it must still be the index the others are compared at.
			if s.Status().AppliedIndex != applied {
				return false
			}
		}
		return true
	})
}

// compact compacts the key history at the current revision through the
// leader, so that the history a hash or a snapshot holds stays bounded by
// the key space and the writes since.
// A leader that changes meanwhile fails the request: it is retried a few
// times.
func (r *rig) compact(what string) {
	r.t.Helper()
	var err error
	for range 5 {
		lead := r.c.WaitLeader().Server()
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		var resp *pb.RangeResponse
		resp, err = lead.Range(ctx, &pb.RangeRequest{Key: []byte(keyPrefix), RangeEnd: []byte("k0"), CountOnly: true})
		if err == nil {
			_, err = lead.Compact(ctx, &pb.CompactionRequest{Revision: resp.GetHeader().GetRevision()})
		}
		cancel()
		if err == nil {
			return
		}
		r.c.Elapse(clustertest.ElectionTicks * clustertest.Tick)
	}
	r.t.Fatalf("%s: compacting: %v", what, err)
}
