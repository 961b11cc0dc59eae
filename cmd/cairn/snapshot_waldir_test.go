package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/embed"
	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/internal/raftnode"
)

// startRestored starts one member named r1 on a restored data directory,
// with walDir as its --wal-dir ("" for none).
func startRestored(peer, dataDir, walDir string) (*embed.Member, error) {
	cfg := embed.NewConfig()
	cfg.Name, cfg.DataDir, cfg.WalDir = "r1", dataDir, walDir
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.InitialCluster = "r1=" + peer
	cfg.UnsafeNoFsync = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	return embed.Start(cfg)
}

// TestSnapshotRestoreWalDir: `cairn snapshot restore --wal-dir` builds a
// data directory and a raft log directory that a member started with that
// --wal-dir serves every key from, at its revision, and takes writes on;
// the log may be inside the data directory. A --wal-dir that is the data
// directory, holds it, or is in use is refused before anything is
// written, and a member started on the pair with the wrong --wal-dir (none,
// or an empty one), or with a --wal-dir on a directory restored without,
// refuses to start.
func TestSnapshotRestoreWalDir(t *testing.T) {
	src, err := startRestored("http://"+freeport.Addr(t), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := clientv3.New(clientv3.Config{Endpoints: src.ClientURLs()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := c.Put(ctx, fmt.Sprint("k", i), fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	want, err := c.Get(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: src.ClientURLs()}, path); err != nil {
		t.Fatal(err)
	}
	c.Close()
	src.Close()

	peer := "http://" + freeport.Addr(t)
	restore := func(dataDir, walDir string) (string, error) {
		args := []string{"restore", path, "--name", "r1", "--data-dir", dataDir,
			"--initial-cluster", "r1=" + peer, "--initial-advertise-peer-urls", peer}
		if walDir != "" {
			args = append(args, "--wal-dir", walDir)
		}
		return runSnapshotCommand(args...)
	}
	// serves starts a member on the pair and checks its keys and a write.
	serves := func(dataDir, walDir string) {
		t.Helper()
		m, err := startRestored(peer, dataDir, walDir)
		if err != nil {
			t.Fatalf("starting on %s with --wal-dir %q: %v", dataDir, walDir, err)
		}
		defer m.Close()
		c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, err := c.Get(ctx, "k", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if got.Header.Revision != want.Header.Revision || fmt.Sprint(got.Kvs) != fmt.Sprint(want.Kvs) {
			t.Fatalf("restored with --wal-dir %q: revision %d %v\nwant revision %d %v", walDir, got.Header.Revision, got.Kvs, want.Header.Revision, want.Kvs)
		}
		if _, err := c.Put(ctx, "after", "restore"); err != nil {
			t.Fatalf("a write after the restore: %v", err)
		}
	}

	root := t.TempDir()
	dataDir, walDir := filepath.Join(root, "r1.cairn"), filepath.Join(root, "r1.wal")
	if out, err := restore(dataDir, walDir); err != nil {
		t.Fatalf("restore --wal-dir: %v\n%s", err, out)
	}
	// The log is in walDir: the data directory alone does not start, nor
	// with another (empty) log directory.
	if m, err := startRestored(peer, dataDir, ""); err == nil || !errors.Is(err, raftnode.ErrLogMismatch) || !strings.Contains(err.Error(), "start with that --wal-dir") {
		if m != nil {
			m.Close()
		}
		t.Fatalf("started without the --wal-dir it was restored with: %v", err)
	}
	if m, err := startRestored(peer, dataDir, filepath.Join(root, "other.wal")); err == nil || !errors.Is(err, raftnode.ErrLogMismatch) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("started with another --wal-dir: %v", err)
	}
	serves(dataDir, walDir)

	// The log inside the data directory.
	inData := filepath.Join(root, "r2.cairn")
	if out, err := restore(inData, filepath.Join(inData, "wal")); err != nil {
		t.Fatalf("restore --wal-dir inside the data directory: %v\n%s", err, out)
	}
	serves(inData, filepath.Join(inData, "wal"))

	// Restored without --wal-dir: the log is in the data directory's wal,
	// and another --wal-dir is refused.
	plain := filepath.Join(root, "r3.cairn")
	if out, err := restore(plain, ""); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if segs, _ := filepath.Glob(filepath.Join(plain, "wal", "*.log")); len(segs) == 0 {
		t.Fatalf("no segment files in %s/wal after a restore without --wal-dir", plain)
	}
	if m, err := startRestored(peer, plain, filepath.Join(root, "r3.wal")); err == nil || !errors.Is(err, raftnode.ErrLogMismatch) || !strings.Contains(err.Error(), "holds no raft log") {
		if m != nil {
			m.Close()
		}
		t.Fatalf("a restore without --wal-dir started with another: %v", err)
	}
	serves(plain, "")

	// Refused before anything is written.
	used := filepath.Join(root, "used.wal")
	if err := os.MkdirAll(used, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(used, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dataDir, walDir, want string }{
		{"the data directory", filepath.Join(root, "r4.cairn"), filepath.Join(root, "r4.cairn"), "is the data directory"},
		{"holding the data directory", filepath.Join(root, "r5.wal", "data"), filepath.Join(root, "r5.wal"), "is inside --wal-dir"},
		{"in use", filepath.Join(root, "r6.cairn"), used, "wal-dir not empty"},
	} {
		out, err := restore(tc.dataDir, tc.walDir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("restore with --wal-dir %s: %v, want %q\n%s", tc.name, err, tc.want, out)
		}
		if _, err := os.Stat(tc.dataDir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("restore with --wal-dir %s left %s behind (%v)", tc.name, tc.dataDir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "r5.wal")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore created its --wal-dir (%v)", err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".restore-") {
			t.Fatalf("a restore left its temporary directory %s behind", e.Name())
		}
	}
}
