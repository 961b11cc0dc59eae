package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// restoreCrashBackup writes a backup of a member that has overwritten,
// deleted and compacted keys, and returns its path with every key the
// member serves (the keys a restore of it must serve, at their
// revisions).
func restoreCrashBackup(t *testing.T) (string, *pb.RangeResponse) {
	t.Helper()
	s := startServer(t, t.TempDir(), nil)
	for i := range 30 {
		put(t, s, fmt.Sprintf("k%02d", i%20), fmt.Sprint("v", i))
	}
	ctx := context.Background()
	if _, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("k05")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, &pb.CompactionRequest{Revision: 10}); err != nil {
		t.Fatal(err)
	}
	put(t, s, "last", "after the compaction")
	want := allKeys(t, s)
	st, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, st); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(st.Close(), f.Close()); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	return path, want
}

// allKeys is every key s serves, with its revisions.
func allKeys(t *testing.T, s *Server) *pb.RangeResponse {
	t.Helper()
	r, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRestoreCrashPoints crashes a restore at every disk operation it
// makes (a crash clone of vfs.NewCrashableMem taken just before the
// operation: a power loss that keeps only what was synced, one that keeps
// some unsynced writes too, and a killed process that keeps them all), in
// each layout (no --wal-dir, one beside, one inside the data directory), and
// checks what an operator finds: either no data directory (or an empty
// one), where the same restore run again succeeds, or a complete one;
// either way a member started on it serves every key of the backup at its
// revisions. A rerun that refuses the place, or a directory that starts
// without the backup's keys, fails the test.
func TestRestoreCrashPoints(t *testing.T) {
	backup, want := restoreCrashBackup(t)
	for _, layout := range []struct {
		name string
		wal  string
	}{
		{"plain", ""},
		{"wal-dir", "/disk2/r1.wal"},
		{"wal-dir inside", "/disk/r1.cairn/wal"},
	} {
		t.Run(layout.name, func(t *testing.T) {
			cfg := RestoreConfig{
				SnapshotPath:   backup,
				DataDir:        "/disk/r1.cairn",
				WalDir:         layout.wal,
				Name:           "r1",
				InitialCluster: "r1=http://127.0.0.1:2390",
				ClusterToken:   "crash",
				PeerURLs:       []string{"http://127.0.0.1:2390"},
			}
			// A clean run counts the operations, and its result must
			// serve the backup too.
			n, _ := restoreCrashRun(t, cfg, -1, vfs.CrashCloneCfg{}, want)
			if n == 0 {
				t.Fatal("a clean restore made no disk operation")
			}
			for _, crash := range []struct {
				name string
				keep int // percent of unsynced writes and entries kept
			}{
				{"power loss", 0},
				{"power loss, some unsynced writes kept", 50},
				{"process killed", 100},
			} {
				rng := rand.New(rand.NewPCG(1, uint64(crash.keep)))
				outcomes := map[string]int{}
				for k := range n + 1 { // n: a crash once it returned
					_, outcome := restoreCrashRun(t, cfg, k, vfs.CrashCloneCfg{UnsyncedDataPercent: crash.keep, RNG: rng}, want)
					outcomes[outcome]++
				}
				t.Logf("%s: %d disk operations, crash points left: %v", crash.name, n, outcomes)
				// Both sides of the final rename were crashed at.
				if outcomes["rerun"] == 0 || outcomes["complete"] == 0 {
					t.Fatalf("%s: crash points left %v: want both a rerun and a complete directory", crash.name, outcomes)
				}
			}
		})
	}
}

// restoreCrashRun restores cfg onto a new crashable file system, and
// returns the number of disk operations the restore made. With crashAt >= 0
// it takes a crash clone just before operation crashAt (or, at the count,
// once the restore returned) and checks what the
// crash left: with no data directory, the same restore on the crashed file
// system must succeed ("rerun"); otherwise the directory must be complete
// ("complete"); either way a member started there must serve want. The
// outcome is "" if the restore made fewer operations this time.
func restoreCrashRun(t *testing.T, cfg RestoreConfig, crashAt int, crash vfs.CrashCloneCfg, want *pb.RangeResponse) (int, string) {
	t.Helper()
	mem := vfs.NewCrashableMem()
	var (
		n     atomic.Int64
		mu    sync.Mutex
		clone *vfs.MemFS
	)
	cfg.FS = errorfs.Wrap(mem, errorfs.InjectorFunc(func(errorfs.Op) error {
		if int(n.Add(1)-1) == crashAt {
			mu.Lock()
			clone = mem.CrashClone(crash)
			mu.Unlock()
		}
		return nil
	}))
	if _, err := RestoreSnapshot(cfg); err != nil {
		t.Fatalf("restore: %v", err)
	}
	ops := int(n.Load())
	if crashAt < 0 {
		checkTidy(t, mem, cfg)
		checkRestored(t, mem, cfg, want)
		return ops, ""
	}
	mu.Lock()
	defer mu.Unlock()
	if clone == nil && crashAt == ops {
		clone = mem.CrashClone(crash)
	}
	if clone == nil {
		return ops, ""
	}
	cfg.FS = clone
	outcome := "complete"
	if emptyOrMissing(clone, cfg.DataDir) {
		outcome = "rerun"
		if _, err := RestoreSnapshot(cfg); err != nil {
			t.Fatalf("a crash at operation %d left no data directory, and restoring again fails: %v", crashAt, err)
		}
		checkTidy(t, clone, cfg)
	}
	t.Run(fmt.Sprintf("crash at %d, %d%% unsynced kept (%s)", crashAt, crash.UnsyncedDataPercent, outcome), func(t *testing.T) {
		checkRestored(t, clone, cfg, want)
	})
	return ops, outcome
}

// checkTidy checks that a restore that returned left nothing but its
// directories: no hidden directory of its own or of a crashed restore
// beside them, and no mark of an incomplete restore in the log's.
func checkTidy(t *testing.T, fs vfs.FS, cfg RestoreConfig) {
	t.Helper()
	for _, dir := range []string{cfg.DataDir, cfg.WalDir} {
		if dir == "" || fs.PathDir(dir) == cfg.DataDir {
			continue // no log of its own, or one inside the data directory
		}
		names, err := fs.List(fs.PathDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if name != fs.PathBase(cfg.DataDir) && (cfg.WalDir == "" || name != fs.PathBase(cfg.WalDir)) {
				t.Errorf("the restore left %s beside %s", name, dir)
			}
		}
	}
	if cfg.WalDir != "" {
		if _, err := fs.Stat(fs.PathJoin(cfg.WalDir, restoreIncomplete)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the restore left %s in the log's directory (stat: %v)", restoreIncomplete, err)
		}
	}
}

// checkRestored starts a member on the restored directory in fs, as the
// operator would after the restore, and checks it serves want.
func checkRestored(t *testing.T, fs vfs.FS, cfg RestoreConfig, want *pb.RangeResponse) {
	t.Helper()
	s, err := newServer(Config{
		Name:           cfg.Name,
		DataDir:        cfg.DataDir,
		WalDir:         cfg.WalDir,
		InitialCluster: cfg.InitialCluster,
		ClusterToken:   cfg.ClusterToken,
		PeerURLs:       cfg.PeerURLs,
		FS:             fs,
	}, testingKnobs{})
	if err != nil {
		t.Fatalf("start on the restored directory: %v", err)
	}
	defer s.Stop()
	// raft knows it leads a moment before the member's leader tracker
	// does, and a linearizable read in between fails with
	// ErrLeaderChanged (as etcd's does; clients retry it).
	waitUntil(t, "a linearizable read", func() bool {
		_, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("k")})
		return err == nil
	})
	got := allKeys(t, s)
	if got.Header.Revision != want.Header.Revision {
		t.Fatalf("restored member at revision %d, want %d", got.Header.Revision, want.Header.Revision)
	}
	if len(got.Kvs) != len(want.Kvs) {
		t.Fatalf("restored member serves %d keys, want %d", len(got.Kvs), len(want.Kvs))
	}
	for i, kv := range want.Kvs {
		if !proto.Equal(got.Kvs[i], kv) {
			t.Fatalf("restored member serves %v, want %v", got.Kvs[i], kv)
		}
	}
}
