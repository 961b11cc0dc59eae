package raftnode

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-db/cairn/internal/storage"
)

// TestBindLog walks the layouts a member can be started with and checks
// which ones BindLog accepts, and that a refusal says what is wrong.
func TestBindLog(t *testing.T) {
	// withLog makes a state engine whose separate log has one entry; it
	// returns both directories, closed.
	withLog := func(t *testing.T) (string, string) {
		dir, wal := filepath.Join(t.TempDir(), "data"), filepath.Join(t.TempDir(), "wal")
		state, log := openEngine(t, dir), openEngine(t, wal)
		if err := BindLog(state, log); err != nil {
			t.Fatal(err)
		}
		ls, err := OpenSeparateLogStore(state, log)
		if err != nil {
			t.Fatal(err)
		}
		if err := ls.Save(hardState(1, 1, 1), ents(1, 3, 1), true); err != nil {
			t.Fatal(err)
		}
		state.Close()
		log.Close()
		return dir, wal
	}
	// shared makes a data directory that keeps its log inside.
	shared := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "data")
		eng := openEngine(t, dir)
		ls, err := OpenLogStore(eng)
		if err != nil {
			t.Fatal(err)
		}
		if err := ls.Save(hardState(1, 1, 1), ents(1, 3, 1), true); err != nil {
			t.Fatal(err)
		}
		eng.Close()
		return dir
	}
	tests := []struct {
		name string
		// setup returns the state's directory and the log's ("" for the
		// log kept in the state engine).
		setup   func(t *testing.T) (string, string)
		wantErr string // empty: accepted
	}{
		{"new data dir, shared log", func(t *testing.T) (string, string) { return filepath.Join(t.TempDir(), "d"), "" }, ""},
		{"new data dir, new wal dir", func(t *testing.T) (string, string) {
			return filepath.Join(t.TempDir(), "d"), filepath.Join(t.TempDir(), "w")
		}, ""},
		{"restart with the same wal dir", withLog, ""},
		{"restart without the wal dir", func(t *testing.T) (string, string) {
			dir, _ := withLog(t)
			return dir, ""
		}, "keeps its raft log in a separate directory (--wal-dir)"},
		{"restart with an empty wal dir", func(t *testing.T) (string, string) {
			dir, _ := withLog(t)
			return dir, filepath.Join(t.TempDir(), "empty")
		}, "holds no raft log"},
		{"restart with another member's wal dir", func(t *testing.T) (string, string) {
			dir, _ := withLog(t)
			_, other := withLog(t)
			return dir, other
		}, "belongs to another data directory"},
		{"a new data dir on a used wal dir", func(t *testing.T) (string, string) {
			_, wal := withLog(t)
			return filepath.Join(t.TempDir(), "d"), wal
		}, "belongs to another data directory"},
		{"a shared-log data dir given a wal dir", func(t *testing.T) (string, string) {
			return shared(t), filepath.Join(t.TempDir(), "w")
		}, "keeps its raft log inside; start without --wal-dir"},
		{"a shared-log data dir restarted as it was", func(t *testing.T) (string, string) { return shared(t), "" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, wal := tt.setup(t)
			state := openEngine(t, dir)
			defer state.Close()
			log := state
			if wal != "" {
				log = openEngine(t, wal)
				defer log.Close()
			}
			err := BindLog(state, log)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				// Accepted once, accepted again: the pairing is recorded.
				if err := BindLog(state, log); err != nil {
					t.Fatalf("refused the second time: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrLogMismatch) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want ErrLogMismatch saying %q", err, tt.wantErr)
			}
		})
	}
}

// TestSeparateLogStoreReopen checks that the log, the hard state and the
// truncation point live in the log engine, the ConfState in the state
// engine, and that a reopen finds them.
func TestSeparateLogStoreReopen(t *testing.T) {
	dir, wal := t.TempDir(), t.TempDir()
	state, log := openEngine(t, dir), openEngine(t, wal)
	if err := BindLog(state, log); err != nil {
		t.Fatal(err)
	}
	ls, err := OpenSeparateLogStore(state, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Save(hardState(2, 1, 5), ents(1, 8, 2), true); err != nil {
		t.Fatal(err)
	}
	writeState(t, state, 5, map[string]string{"k": "v"}, nil)
	if err := ls.Compact(4); err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{keyHardState, keyTruncated} {
		if _, err := state.Get(k); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("state engine holds %q: %v", k, err)
		}
		if _, err := log.Get(k); err != nil {
			t.Errorf("log engine lacks %q: %v", k, err)
		}
	}
	if has, err := hasRaftState(state); err != nil || has {
		t.Errorf("state engine holds raft log state: %v %v", has, err)
	}
	state.Close()
	log.Close()

	state, log = openEngine(t, dir), openEngine(t, wal)
	defer state.Close()
	defer log.Close()
	if err := BindLog(state, log); err != nil {
		t.Fatal(err)
	}
	ls, err = OpenSeparateLogStore(state, log)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := ls.FirstIndex()
	last, _ := ls.LastIndex()
	if first != 5 || last != 8 {
		t.Fatalf("log is [%d, %d], want [5, 8]", first, last)
	}
	checkEntries(t, ls, 5, 9, map[uint64]uint64{5: 2, 6: 2, 7: 2, 8: 2})
	if hs := ls.HardState(); hs.GetTerm() != 2 || hs.GetCommit() != 5 {
		t.Fatalf("hard state %v", hs)
	}
	if applied, err := state.AppliedIndex(); err != nil || applied != 5 {
		t.Fatalf("applied %d, %v", applied, err)
	}
}

// TestStartRefusesStateOutsideLog checks the restart bounds of a separate
// log: a state applied beyond the log's end (a stale copy of the log, say)
// and a log truncated past the state (a state restored from an older copy)
// are refused, naming the log's directory.
func TestStartRefusesStateOutsideLog(t *testing.T) {
	state, log := openEngine(t, t.TempDir()), openEngine(t, t.TempDir())
	defer state.Close()
	defer log.Close()
	if err := BindLog(state, log); err != nil {
		t.Fatal(err)
	}
	ls, err := OpenSeparateLogStore(state, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Save(hardState(1, 1, 8), ents(1, 8, 1), true); err != nil {
		t.Fatal(err)
	}
	writeState(t, state, 6, nil, nil)
	if err := ls.Compact(6); err != nil {
		t.Fatal(err)
	}
	for _, applied := range []uint64{9, 5} {
		_, err := Start(Config{ID: 1, Engine: state, Log: log, Applied: applied, Join: true})
		if err == nil || !strings.Contains(err.Error(), "outside the raft log [7, 8]") || !strings.Contains(err.Error(), log.Dir()) {
			t.Errorf("applied %d: got %v, want a refusal naming the log [7, 8] in %s", applied, err, log.Dir())
		}
	}
	n, err := Start(Config{ID: 1, Engine: state, Log: log, Applied: 6, Join: true})
	if err != nil {
		t.Fatalf("applied 6, log [7, 8]: %v", err)
	}
	n.Stop()
}
