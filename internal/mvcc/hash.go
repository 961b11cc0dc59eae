package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairn-db/cairn/internal/storage"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// compactionHashes is how many compaction hashes the store keeps (etcd
// keeps 10 too): the newest ones, by revision.
const compactionHashes = 10

// Compaction hashes: when a compaction at C is scheduled, the history it
// removes is still whole, and the hash at C as it reads then (over the
// versions above the previous compaction revision P) is what every member
// that applied the same log gives for C. Once the history below C is
// removed, that hash can no longer be computed, so it is kept: Compact
// writes a pending marker (C → P) in the same batch as the compaction, the
// background compaction computes the hash before it removes anything and
// replaces the marker by the hash in one batch, and HashKV answers a
// revision with a kept hash from it, as etcd's HashByRev does with the
// hashes its compactions store. Unlike etcd's, they survive a restart and
// travel in snapshots, so every member can answer.
//
//	'x' "hq" + C (8 bytes)  →  P                     (pending)
//	'x' "hh" + C (8 bytes)  →  crc32 (4 bytes) + P   (kept)
var (
	metaHashPending = []byte{storage.PrefixMVCCMeta, 'h', 'q'}
	metaHashKept    = []byte{storage.PrefixMVCCMeta, 'h', 'h'}
)

func hashMetaKey(prefix []byte, rev int64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(rev))
}

// HashKV returns a checksum of the key-value history as of revision rev (0
// means the current revision), for comparing members, and the compaction
// revision and revision it covers. As etcd's, it covers every version with
// a revision in (compactRev, rev] plus each key's live version at rev when
// that one is at or below compactRev, so members that applied the same
// requests return the same hash whether or not their physical compaction
// has run.
//
// For the revision of one of the last compactionHashes compactions, it
// returns the hash taken when that compaction was scheduled, with the
// compaction revision before it, even once the history below it is gone
// and even for a revision below the current compaction revision: that is
// what etcd's compaction-time hash check compares, and it does not change
// when the store is compacted at rev and defragmented.
//
// Otherwise it returns ErrCompacted when rev is below the compaction
// revision and ErrFutureRev when it is above the current one. It reads the
// whole keyspace: an expensive call, safe for concurrent use.
func (s *Store) HashKV(rev int64) (hash uint32, compactRev int64, hashRev int64, err error) {
	v, st, err := s.openView()
	if err != nil {
		return 0, 0, 0, err
	}
	defer s.closeView(v)
	compactRev = st.compactRev
	if rev > 0 {
		// The view was opened before these reads: if the marker is still
		// there, the compaction at rev has not removed anything yet, so
		// the view holds the whole history the hash covers; if it is
		// gone, the hash is kept.
		prev, err := s.readHashMeta(metaHashPending, rev, 8)
		if err != nil {
			return 0, 0, 0, err
		}
		if prev != nil && rev <= st.rev {
			from := int64(binary.BigEndian.Uint64(prev))
			h, err := hashView(v, from, rev)
			if err != nil {
				return 0, 0, 0, err
			}
			return h, from, rev, nil
		}
		kept, err := s.readHashMeta(metaHashKept, rev, 12)
		if err != nil {
			return 0, 0, 0, err
		}
		if kept != nil {
			return binary.BigEndian.Uint32(kept), int64(binary.BigEndian.Uint64(kept[4:])), rev, nil
		}
	}
	if rev > 0 && rev < compactRev {
		return 0, compactRev, 0, ErrCompacted
	}
	if rev > st.rev {
		return 0, compactRev, 0, ErrFutureRev
	}
	if rev <= 0 {
		rev = st.rev
	}
	h, err := hashView(v, compactRev, rev)
	if err != nil {
		return 0, 0, 0, err
	}
	return h, compactRev, rev, nil
}

// readHashMeta reads the compaction hash record of rev under prefix, nil
// when there is none.
func (s *Store) readHashMeta(prefix []byte, rev int64, size int) ([]byte, error) {
	v, err := s.eng.Get(hashMetaKey(prefix, rev))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mvcc: read compaction hash of %d: %w", rev, err)
	}
	if len(v) != size {
		return nil, fmt.Errorf("%w: compaction hash of %d is %d bytes, want %d", errCorruptKey, rev, len(v), size)
	}
	return v, nil
}

// hashView hashes the versions v holds as HashKV describes, for the
// compaction revision compactRev and the revision rev.
func hashView(v *view, compactRev, rev int64) (uint32, error) {
	h := crc32.New(castagnoli)
	h.Write([]byte("kv"))
	var ver version
	var prefix []byte
	newer := false // the current key has a version in (compactRev, rev]
	for valid := v.it.First(); valid; valid = v.it.Next() {
		k := v.it.Key()
		p, main, _, err := splitVersionKey(k)
		if err != nil {
			return 0, err
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
				return 0, err
			}
			newer = true // older versions never count
			if ver.tombstone {
				continue
			}
		}
		h.Write(k)
		val, err := v.it.ValueAndErr()
		if err != nil {
			return 0, fmt.Errorf("mvcc: hash: %w", err)
		}
		h.Write(val)
	}
	if err := v.it.Error(); err != nil {
		return 0, fmt.Errorf("mvcc: hash: %w", err)
	}
	return h.Sum32(), nil
}

// keepCompactionHashes turns every pending compaction hash into a kept one
// and drops all but the newest compactionHashes kept ones, in one batch.
// The compaction calls it before it removes anything: no history a
// pending hash covers is gone yet (a compaction at C removes only versions
// a read at C cannot see, and the pending hash of a later compaction C'
// covers only versions above C or the newest live one at or below C).
func (s *Store) keepCompactionHashes() error {
	pending, err := s.hashMetaRevs(metaHashPending)
	if err != nil {
		return err
	}
	if len(pending) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, p := range pending {
		it, err := s.db.NewIter(&keysIterOptions)
		if err != nil {
			return fmt.Errorf("mvcc: compaction hash: %w", err)
		}
		h, err := hashView(&view{it: it}, p.val, p.rev)
		it.Close()
		if err != nil {
			return err
		}
		val := binary.BigEndian.AppendUint32(nil, h)
		val = binary.BigEndian.AppendUint64(val, uint64(p.val))
		if err := b.Set(hashMetaKey(metaHashKept, p.rev), val, nil); err != nil {
			return err
		}
		if err := b.Delete(hashMetaKey(metaHashPending, p.rev), nil); err != nil {
			return err
		}
	}
	kept, err := s.hashMetaRevs(metaHashKept)
	if err != nil {
		return err
	}
	// The batch adds len(pending) kept hashes, all newer than the kept
	// ones (compaction revisions only grow).
	for i := 0; i < len(kept)+len(pending)-compactionHashes && i < len(kept); i++ {
		if err := b.Delete(hashMetaKey(metaHashKept, kept[i].rev), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("mvcc: compaction hash: %w", err)
	}
	return nil
}

type hashMeta struct {
	rev int64
	val int64 // a pending record's previous compaction revision
}

// hashMetaRevs lists the compaction hash records under prefix, oldest
// first.
func (s *Store) hashMetaRevs(prefix []byte) ([]hashMeta, error) {
	upper := append(append([]byte(nil), prefix[:len(prefix)-1]...), prefix[len(prefix)-1]+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("mvcc: compaction hashes: %w", err)
	}
	defer it.Close()
	var out []hashMeta
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != len(prefix)+8 {
			return nil, fmt.Errorf("%w: compaction hash key %q", errCorruptKey, k)
		}
		m := hashMeta{rev: int64(binary.BigEndian.Uint64(k[len(prefix):]))}
		if bytes.Equal(prefix, metaHashPending) {
			v, err := it.ValueAndErr()
			if err != nil {
				return nil, fmt.Errorf("mvcc: compaction hashes: %w", err)
			}
			if len(v) != 8 {
				return nil, fmt.Errorf("%w: pending compaction hash of %d", errCorruptKey, m.rev)
			}
			m.val = int64(binary.BigEndian.Uint64(v))
		}
		out = append(out, m)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("mvcc: compaction hashes: %w", err)
	}
	return out, nil
}
