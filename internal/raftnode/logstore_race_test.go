package raftnode

import (
	"errors"
	"testing"

	"go.etcd.io/raft/v3"
)

// TestLogStoreReadsRaceCompaction runs a compaction in the window between
// a read's bounds check and its Pebble read, which is where a follower far
// behind, fetched with entries the cache no longer holds, meets the apply
// loop compacting. Raft panics on any error from Term, Entries or Snapshot
// other than ErrCompacted, ErrUnavailable and
// ErrSnapshotTemporarilyUnavailable, so a not-found from Pebble must never
// escape.
func TestLogStoreReadsRaceCompaction(t *testing.T) {
	cases := []struct {
		name    string
		compact uint64
		read    func(s *LogStore) error
	}{
		{"Term below the new truncation point", 50, func(s *LogStore) error {
			term, err := s.Term(10)
			if !errors.Is(err, raft.ErrCompacted) {
				return errors.Join(errors.New("Term(10) did not report ErrCompacted"), err)
			}
			_ = term
			return nil
		}},
		{"Term at the new truncation point", 50, func(s *LogStore) error {
			term, err := s.Term(50)
			if err != nil || term != 2 {
				return errors.Join(errors.New("Term(50) is not 2"), err)
			}
			return nil
		}},
		{"Entries below the new truncation point", 50, func(s *LogStore) error {
			if _, err := s.Entries(10, 20, ^uint64(0)); !errors.Is(err, raft.ErrCompacted) {
				return errors.Join(errors.New("Entries(10, 20) did not report ErrCompacted"), err)
			}
			return nil
		}},
		{"Entries across the new truncation point", 50, func(s *LogStore) error {
			if _, err := s.Entries(40, 60, ^uint64(0)); !errors.Is(err, raft.ErrCompacted) {
				return errors.Join(errors.New("Entries(40, 60) did not report ErrCompacted"), err)
			}
			return nil
		}},
		// The applied index moved on from the snapshot's (60) and the log
		// was compacted past it before the snapshot's term was read.
		{"Snapshot", 70, func(s *LogStore) error {
			snap, err := s.Snapshot()
			if err != nil {
				return err
			}
			if md := snap.GetMetadata(); md.GetIndex() != 60 || md.GetTerm() != 2 {
				return errors.New("snapshot is not at index 60, term 2: " + md.String())
			}
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eng := openEngine(t, t.TempDir())
			defer eng.Close()
			s, err := OpenLogStore(eng)
			if err != nil {
				t.Fatal(err)
			}
			s.maxCacheEntries = 4 // reads below 97 go to Pebble
			if err := s.Save(hardState(2, 1, 100), ents(1, 100, 2), true); err != nil {
				t.Fatal(err)
			}
			writeState(t, eng, 60, nil, nil)
			compacted := false
			s.testHookRead = func() {
				if !compacted {
					compacted = true
					if err := s.Compact(tc.compact); err != nil {
						t.Error(err)
					}
				}
			}
			if err := tc.read(s); err != nil {
				t.Fatal(err)
			}
			if !compacted {
				t.Fatal("the read never reached Pebble; the test proves nothing")
			}
		})
	}
}
