package mvcc

import (
	"bytes"
	"fmt"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// HashKV returns a checksum of the key-value history as of revision rev (0
// means the current revision), for comparing members: members that applied
// the same requests return the same hash for the same rev, whether or not
// their physical compaction has run. Like etcd's, it covers every version
// with a revision in (compactRev, rev], plus each key's live version at rev
// when that one is at or below compactRev. It returns the hash, the
// compaction revision and the revision hashed; ErrCompacted when rev is
// below the compaction revision, ErrFutureRev when it is above the current
// one. It reads the whole keyspace: an expensive call, safe for concurrent
// use.
func (s *Store) HashKV(rev int64) (hash uint32, compactRev int64, hashRev int64, err error) {
	v, st, err := s.openView()
	if err != nil {
		return 0, 0, 0, err
	}
	defer s.closeView(v)
	compactRev = st.compactRev
	if rev > 0 && rev < compactRev {
		return 0, compactRev, 0, ErrCompacted
	}
	if rev > st.rev {
		return 0, compactRev, 0, ErrFutureRev
	}
	if rev <= 0 {
		rev = st.rev
	}
	h := crc32.New(castagnoli)
	h.Write([]byte("kv"))
	var ver version
	var prefix []byte
	newer := false // the current key has a version in (compactRev, rev]
	for valid := v.it.First(); valid; valid = v.it.Next() {
		k := v.it.Key()
		p, main, _, err := splitVersionKey(k)
		if err != nil {
			return 0, 0, 0, err
		}
		if !bytes.Equal(p, prefix) {
			prefix = append(prefix[:0], p...)
			newer = false
		}
		switch {
		case main > rev:
			continue
		case main > compactRev:
			newer = true
		default:
			// At or below the compaction revision only the key's newest
			// version counts, and only if it is still the live one at rev.
			if newer {
				continue
			}
			if err := v.decodeCurrent(&ver); err != nil {
				return 0, 0, 0, err
			}
			newer = true // older versions never count
			if ver.tombstone {
				continue
			}
		}
		h.Write(k)
		val, err := v.it.ValueAndErr()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("mvcc: hash: %w", err)
		}
		h.Write(val)
	}
	if err := v.it.Error(); err != nil {
		return 0, 0, 0, fmt.Errorf("mvcc: hash: %w", err)
	}
	return h.Sum32(), compactRev, rev, nil
}
