package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-db/cairn/internal/raftnode"
)

// TestWalDir runs a member with its raft log in a directory of its own:
// the log's engine is there, a restart with it finds every write (across
// log compactions), and a restart that names the wrong log, or none, is
// refused with a message that says so.
func TestWalDir(t *testing.T) {
	dir, wal := t.TempDir(), filepath.Join(t.TempDir(), "wal")
	withWal := func(w string) func(*Config) {
		return func(c *Config) { c.WalDir = w; c.SnapshotCount = 20 }
	}
	s := startServerWith(t, dir, testingKnobs{catchUpEntries: 5}, withWal(wal))
	for i := range 100 {
		put(t, s, fmt.Sprintf("k%03d", i), fmt.Sprint(i))
	}
	before := s.Status()
	if first := s.node.Status().FirstIndex; first <= 10 {
		t.Fatalf("the log starts at %d after 100 puts: it was never compacted", first)
	}
	s.Stop()
	if _, err := os.Stat(filepath.Join(wal, "db")); err != nil {
		t.Fatalf("no engine in the wal dir: %v", err)
	}

	s = startServerWith(t, dir, testingKnobs{catchUpEntries: 5}, withWal(wal))
	if after := s.Status(); after.Revision != before.Revision || after.AppliedIndex < before.AppliedIndex {
		t.Fatalf("after restart revision %d applied %d; before %d / %d", after.Revision, after.AppliedIndex, before.Revision, before.AppliedIndex)
	}
	if r := get(t, s, "k099", false); len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "99" {
		t.Fatalf("k099 after restart = %v", r.Kvs)
	}
	put(t, s, "after", "restart")
	s.Stop()

	for _, tt := range []struct {
		name, wal, want string
	}{
		{"without --wal-dir", "", "keeps its raft log in a separate directory"},
		{"an empty --wal-dir", filepath.Join(t.TempDir(), "other"), "holds no raft log"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newServer(Config{DataDir: dir, WalDir: tt.wal}, testingKnobs{})
			if err == nil {
				s.Stop()
				t.Fatal("started")
			}
			if !errors.Is(err, raftnode.ErrLogMismatch) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrLogMismatch saying %q", err, tt.want)
			}
		})
	}
	// The data directory itself is no --wal-dir.
	if s, err := newServer(Config{DataDir: dir, WalDir: dir + "/"}, testingKnobs{}); err == nil {
		s.Stop()
		t.Fatal("started with --wal-dir naming the data directory")
	} else if !strings.Contains(err.Error(), "is the data directory") {
		t.Fatalf("got %v, want a refusal naming the data directory", err)
	}
	// A data directory that keeps its log inside refuses a --wal-dir.
	shared := t.TempDir()
	s = startServer(t, shared, nil)
	put(t, s, "k", "v")
	s.Stop()
	if s, err := newServer(Config{DataDir: shared, WalDir: filepath.Join(t.TempDir(), "w")}, testingKnobs{}); err == nil {
		s.Stop()
		t.Fatal("a data directory with its log inside started with --wal-dir")
	} else if !errors.Is(err, raftnode.ErrLogMismatch) {
		t.Fatalf("got %v, want ErrLogMismatch", err)
	}

	// After the refusals the member still starts with its own log.
	s = startServerWith(t, dir, testingKnobs{}, withWal(wal))
	if r := get(t, s, "after", false); len(r.Kvs) != 1 {
		t.Fatalf("the write before the refusals is gone: %v", r.Kvs)
	}
}
