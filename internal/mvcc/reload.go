package mvcc

import "fmt"

// Restore replaces the store's state under it: it stops the background
// compaction (waiting for a batch in progress) and the key filter's
// builder, calls install, which replaces the store's keyspaces in the
// engine (a raft snapshot install), builds a new key filter, and reloads
// the revision and compaction state from the engine, resuming a physical
// compaction the new state has scheduled but not finished.
// Waiters of an unfinished physical compaction carry over and are released
// once the new state's compaction reaches their revision.
//
// It must be called from the goroutine that writes (no Write may be open),
// and readers must be kept out until it returns: between install and the
// reload a reader would see the new keys through the old revision. If
// install fails, the store reloads what the engine then holds.
func (s *Store) Restore(install func() error) error {
	s.filter.stop()
	s.comp.stop()
	s.comp.mu.Lock()
	waiters := s.comp.mu.waiters
	s.comp.mu.waiters = nil
	s.comp.mu.Unlock()

	ierr := install()
	// The keyspace is new (or, if install failed, whatever it left): so
	// is the filter of its keys.
	s.filter = newKeyFilter(s)

	rev, err := readMeta(s.eng, metaRev, 1)
	if err != nil {
		return fmt.Errorf("mvcc: reload: %w", err)
	}
	scheduled, err := readMeta(s.eng, metaCompactScheduled, -1)
	if err != nil {
		return fmt.Errorf("mvcc: reload: %w", err)
	}
	finished, err := readMeta(s.eng, metaCompactFinished, -1)
	if err != nil {
		return fmt.Errorf("mvcc: reload: %w", err)
	}
	s.state.Store(&revState{rev: rev, compactRev: scheduled})
	s.comp = startCompactor(s, finished)
	s.comp.mu.Lock()
	s.comp.mu.waiters = waiters
	s.comp.releaseLocked()
	s.comp.mu.Unlock()
	if scheduled > finished {
		s.comp.schedule(scheduled, nil)
	}
	return ierr
}
