package server

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-db/cairn/internal/raftnode"
)

// TestWalDir runs a member with its raft log in a directory of its own:
// the log's segment files are there, a restart with it finds every write
// (across log compactions), and a restart that names the wrong log, or
// none, is refused with a message that says so.
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
	if segs, _ := filepath.Glob(filepath.Join(wal, "*.log")); len(segs) == 0 {
		t.Fatalf("no segment files in the wal dir %s", wal)
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
	// Without --wal-dir the files are in the data directory's wal, and a
	// --wal-dir elsewhere is refused.
	plain := t.TempDir()
	s = startServer(t, plain, nil)
	put(t, s, "k", "v")
	s.Stop()
	if segs, _ := filepath.Glob(filepath.Join(plain, "wal", "*.log")); len(segs) == 0 {
		t.Fatalf("no segment files in %s/wal", plain)
	}
	if s, err := newServer(Config{DataDir: plain, WalDir: filepath.Join(t.TempDir(), "w")}, testingKnobs{}); err == nil {
		s.Stop()
		t.Fatal("a data directory with its log in its wal started with another --wal-dir")
	} else if !errors.Is(err, raftnode.ErrLogMismatch) {
		t.Fatalf("got %v, want ErrLogMismatch", err)
	}

	// After the refusals the member still starts with its own log.
	s = startServerWith(t, dir, testingKnobs{}, withWal(wal))
	if r := get(t, s, "after", false); len(r.Kvs) != 1 {
		t.Fatalf("the write before the refusals is gone: %v", r.Kvs)
	}
}

// TestOldLogLayouts runs members on the two layouts of data directories
// written before segment files (the log in the state engine; the log in a
// Pebble engine of its own in --wal-dir): they keep their layout across
// restarts, with every write (across log compactions), and a data
// directory with its log inside refuses a --wal-dir.
func TestOldLogLayouts(t *testing.T) {
	for _, tt := range []struct {
		name   string
		layout raftnode.LogLayout
		wal    bool
	}{
		{"inside", raftnode.LogInside, false},
		{"engine in --wal-dir", raftnode.LogSeparate, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, wal := t.TempDir(), ""
			if tt.wal {
				wal = filepath.Join(t.TempDir(), "wal")
			}
			cfg := func(c *Config) { c.WalDir = wal; c.SnapshotCount = 20 }
			s := startServerWith(t, dir, testingKnobs{catchUpEntries: 5, oldLogLayout: tt.layout}, cfg)
			for i := range 100 {
				put(t, s, fmt.Sprintf("k%03d", i), fmt.Sprint(i))
			}
			if first := s.node.Status().FirstIndex; first <= 10 {
				t.Fatalf("the log starts at %d after 100 puts: it was never compacted", first)
			}
			s.Stop()
			if segs, _ := filepath.Glob(filepath.Join(logDir(dir, wal), "*.log")); len(segs) != 0 {
				t.Fatalf("segment files %v in a data directory of the old layout", segs)
			}
			// No knob now: the layout is what the data directory says.
			s = startServerWith(t, dir, testingKnobs{}, cfg)
			if r := get(t, s, "k099", false); len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "99" {
				t.Fatalf("k099 after restart = %v", r.Kvs)
			}
			put(t, s, "after", "restart")
			s.Stop()
			if segs, _ := filepath.Glob(filepath.Join(logDir(dir, wal), "*.log")); len(segs) != 0 {
				t.Fatalf("segment files %v after a restart of the old layout", segs)
			}
			if !tt.wal {
				if s, err := newServer(Config{DataDir: dir, WalDir: filepath.Join(t.TempDir(), "w")}, testingKnobs{}); err == nil {
					s.Stop()
					t.Fatal("a data directory with its log inside started with --wal-dir")
				} else if !errors.Is(err, raftnode.ErrLogMismatch) || !strings.Contains(err.Error(), "keeps its raft log inside") {
					t.Fatalf("got %v, want ErrLogMismatch saying the log is inside", err)
				}
			}
			s = startServerWith(t, dir, testingKnobs{}, cfg)
			if r := get(t, s, "after", false); len(r.Kvs) != 1 {
				t.Fatalf("the write after the first restart is gone: %v", r.Kvs)
			}
		})
	}
}
