package mvcc

import "slices"

// CompactionHashRevs returns the revisions of the compactions whose hashes
// the store keeps (or is about to keep, their compaction not yet run),
// newest first. HashKV answers each with the hash taken when that
// compaction was scheduled, which is what the compaction-time hash check
// compares between members. Safe for concurrent use.
func (s *Store) CompactionHashRevs() ([]int64, error) {
	var revs []int64
	for _, prefix := range [][]byte{metaHashKept, metaHashPending} {
		ms, err := s.hashMetaRevs(prefix)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			revs = append(revs, m.rev)
		}
	}
	slices.Sort(revs)
	revs = slices.Compact(revs)
	slices.Reverse(revs)
	return revs, nil
}
