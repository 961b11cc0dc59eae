package raftnode

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/storage"
)

func openEngine(t *testing.T, dir string) *storage.Engine {
	t.Helper()
	eng, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

func ent(index, term uint64, data string) *raftpb.Entry {
	return &raftpb.Entry{Index: new(index), Term: new(term), Type: raftpb.EntryNormal.Enum(), Data: []byte(data)}
}

func ents(first, last, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := first; i <= last; i++ {
		out = append(out, ent(i, term, fmt.Sprintf("e%d/t%d", i, term)))
	}
	return out
}

func hardState(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

// checkEntries asserts that [lo, hi) reads back with the given terms and the
// data ents() gives them.
func checkEntries(t *testing.T, s *LogStore, lo, hi uint64, terms map[uint64]uint64) {
	t.Helper()
	got, err := s.Entries(lo, hi, ^uint64(0))
	if err != nil {
		t.Fatalf("Entries(%d, %d): %v", lo, hi, err)
	}
	if uint64(len(got)) != hi-lo {
		t.Fatalf("Entries(%d, %d) returned %d entries", lo, hi, len(got))
	}
	for i, e := range got {
		idx := lo + uint64(i)
		want := fmt.Sprintf("e%d/t%d", idx, terms[idx])
		if e.GetIndex() != idx || e.GetTerm() != terms[idx] || string(e.GetData()) != want {
			t.Fatalf("entry %d = {index %d term %d data %q}, want term %d data %q",
				idx, e.GetIndex(), e.GetTerm(), e.GetData(), terms[idx], want)
		}
		term, err := s.Term(idx)
		if err != nil || term != terms[idx] {
			t.Fatalf("Term(%d) = %d, %v; want %d", idx, term, err, terms[idx])
		}
	}
}

func TestLogStoreAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	eng := openEngine(t, dir)
	s, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 1 {
		t.Fatalf("new log FirstIndex = %d, want 1", first)
	}
	if last, _ := s.LastIndex(); last != 0 {
		t.Fatalf("new log LastIndex = %d, want 0", last)
	}
	hs, cs, _ := s.InitialState()
	if !raft.IsEmptyHardState(hs) || len(cs.GetVoters()) != 0 {
		t.Fatalf("new log has state %v %v", hs, cs)
	}

	if err := s.Save(hardState(1, 1, 3), ents(1, 5, 1), true); err != nil {
		t.Fatal(err)
	}
	// A new leader at term 2 overwrites the uncommitted tail from 4 on.
	if err := s.Save(hardState(2, 0, 3), ents(4, 4, 2), true); err != nil {
		t.Fatal(err)
	}
	terms := map[uint64]uint64{1: 1, 2: 1, 3: 1, 4: 2}
	checkEntries(t, s, 1, 5, terms)
	if last, _ := s.LastIndex(); last != 4 {
		t.Fatalf("LastIndex after overwrite = %d, want 4", last)
	}
	if _, err := s.Entries(1, 6, ^uint64(0)); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("Entries beyond last: %v, want ErrUnavailable", err)
	}
	if _, err := s.Term(5); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("Term beyond last: %v, want ErrUnavailable", err)
	}

	cs2 := &raftpb.ConfState{Voters: []uint64{7}}
	b := eng.NewBatch()
	if err := StageConfState(b, cs2); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}

	// After reopening, everything comes from Pebble (the cache is empty).
	eng = openEngine(t, dir)
	defer eng.Close()
	s, err = OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastIndex(); last != 4 {
		t.Fatalf("reopened LastIndex = %d, want 4", last)
	}
	checkEntries(t, s, 1, 5, terms)
	hs, cs, _ = s.InitialState()
	if hs.GetTerm() != 2 || hs.GetVote() != 0 || hs.GetCommit() != 3 {
		t.Fatalf("reopened hard state = %v", hs)
	}
	if len(cs.GetVoters()) != 1 || cs.GetVoters()[0] != 7 {
		t.Fatalf("reopened conf state = %v", cs)
	}
}

func TestLogStoreCompact(t *testing.T) {
	dir := t.TempDir()
	eng := openEngine(t, dir)
	s, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(hardState(3, 1, 10), ents(1, 10, 3), true); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(6); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(4); err != nil { // behind the truncation point: no-op
		t.Fatal(err)
	}
	if err := s.Compact(11); err == nil {
		t.Fatal("Compact beyond the last index succeeded")
	}
	check := func(s *LogStore) {
		t.Helper()
		if first, _ := s.FirstIndex(); first != 7 {
			t.Fatalf("FirstIndex = %d, want 7", first)
		}
		if _, err := s.Entries(6, 8, ^uint64(0)); !errors.Is(err, raft.ErrCompacted) {
			t.Fatalf("Entries(6, 8) = %v, want ErrCompacted", err)
		}
		if _, err := s.Term(5); !errors.Is(err, raft.ErrCompacted) {
			t.Fatalf("Term(5) = %v, want ErrCompacted", err)
		}
		if term, err := s.Term(6); err != nil || term != 3 {
			t.Fatalf("Term(6) (truncation point) = %d, %v; want 3", term, err)
		}
		checkEntries(t, s, 7, 11, map[uint64]uint64{7: 3, 8: 3, 9: 3, 10: 3})
	}
	check(s)
	eng.Close()

	eng = openEngine(t, dir)
	defer eng.Close()
	s, err = OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	check(s)
	if last, _ := s.LastIndex(); last != 10 {
		t.Fatalf("reopened LastIndex = %d, want 10", last)
	}
	// Compacting everything leaves an empty log that still knows where it
	// ends, and appends continue after it.
	if err := s.Compact(10); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 11 {
		t.Fatalf("FirstIndex after full compaction = %d, want 11", first)
	}
	if last, _ := s.LastIndex(); last != 10 {
		t.Fatalf("LastIndex after full compaction = %d, want 10", last)
	}
	if err := s.Save(nil, ents(11, 12, 4), true); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, s, 11, 13, map[uint64]uint64{11: 4, 12: 4})
}

// TestLogStoreCacheEviction makes the cache smaller than the log, so reads
// span evicted (Pebble) and cached entries, and size limits apply to both.
func TestLogStoreCacheEviction(t *testing.T) {
	eng := openEngine(t, t.TempDir())
	defer eng.Close()
	s, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	s.maxCacheEntries = 8
	terms := map[uint64]uint64{}
	for i := uint64(1); i <= 50; i += 5 {
		if err := s.Save(hardState(1, 1, i), ents(i, i+4, 1), true); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(1); i <= 50; i++ {
		terms[i] = 1
	}
	if s.mu.cacheFirst <= 40 {
		t.Fatalf("cache starts at %d; eviction did not happen", s.mu.cacheFirst)
	}
	checkEntries(t, s, 1, 51, terms)
	checkEntries(t, s, 45, 51, terms)

	one := uint64(len("e1/t1") + 8)
	for _, lo := range []uint64{1, 46} { // from Pebble, from the cache
		got, err := s.Entries(lo, lo+5, 3*one)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) < 1 || len(got) > 3 {
			t.Fatalf("Entries(%d, %d, maxSize for ~3) returned %d entries", lo, lo+5, len(got))
		}
		got, err = s.Entries(lo, lo+5, 1)
		if err != nil || len(got) != 1 {
			t.Fatalf("Entries with a tiny maxSize returned %d entries, %v; want exactly 1", len(got), err)
		}
	}
	// Overwriting a tail that starts before the cache restarts the cache.
	if err := s.Save(hardState(2, 0, 30), ents(31, 33, 2), true); err != nil {
		t.Fatal(err)
	}
	for i := uint64(31); i <= 33; i++ {
		terms[i] = 2
	}
	for i := uint64(34); i <= 50; i++ {
		delete(terms, i)
	}
	checkEntries(t, s, 1, 34, terms)
	if last, _ := s.LastIndex(); last != 33 {
		t.Fatalf("LastIndex = %d, want 33", last)
	}
}

// A commit-only hard state is kept in memory and written with the next
// entries; a change of term or vote is written at once.
func TestLogStoreCommitOnlyHardState(t *testing.T) {
	dir := t.TempDir()
	eng := openEngine(t, dir)
	s, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name         string
		hs           *raftpb.HardState
		ents         []*raftpb.Entry
		sync         bool
		memory, disk uint64 // commit index in memory and after a reopen
	}{
		{"entries and vote", hardState(1, 1, 0), ents(1, 3, 1), true, 0, 0},
		{"commit only", hardState(1, 1, 2), nil, false, 2, 0},
		{"entries, no hard state", nil, ents(4, 4, 1), true, 2, 2},
		{"commit only again", hardState(1, 1, 4), nil, false, 4, 2},
		{"new term", hardState(2, 0, 4), nil, true, 4, 4},
	}
	for _, st := range steps {
		if err := s.Save(st.hs, st.ents, st.sync); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := s.HardState().GetCommit(); got != st.memory {
			t.Errorf("%s: commit in memory %d, want %d", st.name, got, st.memory)
		}
		reopened, err := OpenLogStore(eng)
		if err != nil {
			t.Fatal(err)
		}
		if got := reopened.HardState().GetCommit(); got != st.disk {
			t.Errorf("%s: stored commit %d, want %d", st.name, got, st.disk)
		}
	}
	if hs := s.HardState(); hs.GetTerm() != 2 || hs.GetVote() != 0 {
		t.Errorf("hard state %v, want term 2 vote 0", hs)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
}
