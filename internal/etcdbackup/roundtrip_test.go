package etcdbackup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"

	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/lease"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/storage"
)

// memState is a State over records held in memory, sorted by key.
type memState struct{ keys, vals [][]byte }

func newMemState(recs map[string][]byte) *memState {
	s := &memState{}
	for k := range recs {
		s.keys = append(s.keys, []byte(k))
	}
	slices.SortFunc(s.keys, bytes.Compare)
	for _, k := range s.keys {
		s.vals = append(s.vals, recs[string(k)])
	}
	return s
}

func (s *memState) Scan(lo, hi []byte, fn func(k, v []byte) error) error {
	i := sort.Search(len(s.keys), func(i int) bool { return bytes.Compare(s.keys[i], lo) >= 0 })
	for ; i < len(s.keys) && bytes.Compare(s.keys[i], hi) < 0; i++ {
		if err := fn(s.keys[i], s.vals[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *memState) Get(key []byte) ([]byte, error) {
	i := sort.Search(len(s.keys), func(i int) bool { return bytes.Compare(s.keys[i], key) >= 0 })
	if i < len(s.keys) && bytes.Equal(s.keys[i], key) {
		return s.vals[i], nil
	}
	return nil, storage.ErrNotFound
}

// randomState builds the records of a store with a random history of
// versions (puts, deletions, leases) up to a compaction at about half of
// it, as cairn's compaction leaves them, and returns them with the
// number of live keys.
func randomState(t testing.TB, rng *rand.Rand, writes int) (map[string][]byte, int) {
	recs := map[string][]byte{}
	put := func(k, v []byte) error { recs[string(k)] = bytes.Clone(v); return nil }
	leases := []int64{0x10, 0x20, 0x30}
	for _, id := range leases {
		if err := lease.RecordRecords(lease.Record{ID: id, TTL: id, Remaining: id / 2}, put); err != nil {
			t.Fatal(err)
		}
	}
	type state struct{ create, version, lease int64 }
	live := map[string]state{}
	history := map[string][]mvcc.KeyVersion{}
	rev := int64(1)
	for range writes {
		rev++
		for sub := range int64(1 + rng.IntN(3)) {
			key := fmt.Sprintf("/registry/k%03d\x00%d", rng.IntN(writes/4+1), rng.IntN(2))
			s, ok := live[key]
			kv := mvcc.KeyVersion{Key: []byte(key), Main: rev, Sub: sub}
			if ok && rng.IntN(4) == 0 {
				kv.Tombstone = true
				delete(live, key)
			} else {
				if !ok {
					s = state{create: rev}
				}
				s.version++
				s.lease = leases[rng.IntN(len(leases))] * int64(rng.IntN(2))
				live[key] = s
				kv.Create, kv.Version, kv.Lease = s.create, s.version, s.lease
				kv.Value = bytes.Repeat([]byte{byte(rev)}, rng.IntN(64))
			}
			history[key] = append(history[key], kv)
		}
	}
	compact := rev / 2
	for _, vs := range history {
		// Keep what cairn's (and etcd's) compaction keeps: versions at or
		// above it, and the newest below it unless a deletion.
		below := -1
		for i, v := range vs {
			if v.Main < compact {
				below = i
			}
		}
		for i, v := range vs {
			if v.Main < compact && (i != below || v.Tombstone) {
				continue
			}
			if err := mvcc.VersionRecords(&v, v.Main >= compact, put); err != nil {
				t.Fatal(err)
			}
		}
	}
	for key, s := range live {
		if s.lease != 0 {
			if err := lease.AttachRecords(s.lease, []byte(key), put); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := mvcc.MetaRecords(mvcc.Meta{Rev: rev, CompactScheduled: compact, CompactFinished: compact}, put); err != nil {
		t.Fatal(err)
	}
	if err := randomAuth(rng).Put(putWriter(put)); err != nil {
		t.Fatal(err)
	}
	return recs, len(live)
}

// randomAuth is an auth state with a few users (bcrypt-like hashes, some
// without password) and roles with permissions of every form.
func randomAuth(rng *rand.Rand) auth.State {
	st := auth.State{Enabled: rng.IntN(2) == 0, Revision: 1 + rng.Uint64N(100)}
	perms := []*authpb.Permission{
		{PermType: authpb.READ, Key: []byte("k")},
		{PermType: authpb.WRITE, Key: []byte("a"), RangeEnd: []byte("b")},
		{PermType: authpb.READWRITE, Key: []byte("p/"), RangeEnd: []byte("p0")},
		{PermType: authpb.READ, Key: []byte("z"), RangeEnd: []byte{0}},
	}
	for i := range 1 + rng.IntN(4) {
		r := &authpb.Role{Name: []byte(fmt.Sprintf("role%d", i))}
		for _, p := range perms {
			if rng.IntN(2) == 0 {
				r.KeyPermission = append(r.KeyPermission, p)
			}
		}
		st.Roles = append(st.Roles, r)
	}
	for i := range 1 + rng.IntN(4) {
		u := &authpb.User{Name: []byte(fmt.Sprintf("user%d", i)), Roles: []string{"role0"}}
		if rng.IntN(3) == 0 {
			u.Options = &authpb.UserAddOptions{NoPassword: true}
		} else {
			u.Password = []byte(fmt.Sprintf("$2a$10$%053d", rng.IntN(1000)))
		}
		st.Users = append(st.Users, u)
	}
	return st
}

// putWriter is an auth.Writer over a put function.
type putWriter func(k, v []byte) error

func (w putWriter) Put(k, v []byte) error { return w(k, v) }
func (w putWriter) Delete([]byte) error   { return errors.New("delete") }

// writeBackup creates the backup of st and saves it to a file.
func writeBackup(t testing.TB, st State) string {
	dir := t.TempDir()
	b, err := Create(context.Background(), dir, st, 42, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	path := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, b)
	if err != nil || n != b.Size() {
		t.Fatalf("streamed %d bytes (%v), declared %d", n, err, b.Size())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("Create left %v behind (%v)", ents, err)
	}
	return path
}

// TestRoundTrip: cairn's records, written as an etcd file and read back,
// are the same records: nothing is lost or changed either way.
func TestRoundTrip(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			recs, liveKeys := randomState(t, rng, 200+rng.IntN(800))
			path := writeBackup(t, newMemState(recs))
			got := map[string][]byte{}
			info, err := Read(path, func(k, v []byte) error { got[string(k)] = bytes.Clone(v); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if !info.HasDigest || info.ConsistentIndex != 42 || info.Term != 7 || info.TotalKeys != int64(liveKeys) || info.Leases != 3 {
				t.Fatalf("info %+v, want a digest, index 42, term 7, %d live keys, 3 leases", info, liveKeys)
			}
			for k, v := range recs {
				if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
					t.Fatalf("record %q: read back %x (%v), wrote %x", k, g, ok, v)
				}
			}
			for k := range got {
				if _, ok := recs[k]; !ok {
					t.Fatalf("record %q read back, never written", k)
				}
			}
		})
	}
}

// TestCreateCanceled: a build whose client went away stops with its
// context's error and leaves nothing behind.
func TestCreateCanceled(t *testing.T) {
	recs, _ := randomState(t, rand.New(rand.NewPCG(2, 2)), 20000)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Create(ctx, dir, newMemState(recs), 1, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Create with a canceled context: %v", err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("a canceled Create left %v behind (%v)", ents, err)
	}
}

// BenchmarkCreate measures building the backup of a store of about
// 60,000 versions.
func BenchmarkCreate(b *testing.B) {
	recs, _ := randomState(b, rand.New(rand.NewPCG(1, 1)), 60000)
	st := newMemState(recs)
	b.ResetTimer()
	for range b.N {
		bk, err := Create(context.Background(), b.TempDir(), st, 1, 1)
		if err != nil {
			b.Fatal(err)
		}
		bk.Close()
	}
}
