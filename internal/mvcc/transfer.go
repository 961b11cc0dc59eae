package mvcc

import (
	"errors"
	"fmt"

	"github.com/cairn-db/cairn/internal/storage"
)

// Moving the keyspace in and out of another store's format (etcd's backup
// file, package etcdbackup) goes through the functions below, so that the
// record layout stays this package's alone: a caller sees versions and
// revisions, never keys of the 'k', 'e' or 'x' spaces.

// KeyVersion is one stored version of a user key.
type KeyVersion struct {
	// Key is the user key.
	Key []byte
	// Main and Sub are the version's revision (its mod revision).
	Main, Sub int64
	// Tombstone marks a deletion; Create, Version, Lease and Value are
	// then zero.
	Tombstone bool
	// Create is the create revision, Version the key's version, Lease the
	// attached lease (0: none).
	Create, Version, Lease int64
	// Value is the value.
	Value []byte
}

// Meta is the store's revision bookkeeping.
type Meta struct {
	// Rev is the current revision (1 for a new store).
	Rev int64
	// CompactScheduled and CompactFinished are the last compaction
	// requested and the last one whose history removal ended; -1 for none.
	CompactScheduled, CompactFinished int64
}

// ScanFunc calls fn for every record of a consistent view of the engine
// whose key lies in [lo, hi), in key order. fn must not keep k or v.
type ScanFunc func(lo, hi []byte, fn func(k, v []byte) error) error

// ScanVersions calls fn for every stored version of every key in the view
// scan reads, in key order and, within a key, newest first. The version
// handed to fn (and its slices) is only valid during the call.
func ScanVersions(scan ScanFunc, fn func(*KeyVersion) error) error {
	var (
		kv     KeyVersion
		v      version
		keyBuf []byte
		prefix []byte
	)
	return scan([]byte{storage.PrefixKeys}, keysEnd, func(k, val []byte) error {
		p, main, sub, err := splitVersionKey(k)
		if err != nil {
			return err
		}
		if string(p) != string(prefix) {
			prefix = append(prefix[:0], p...)
			if keyBuf, err = appendDecodedPrefix(keyBuf[:0], p); err != nil {
				return err
			}
		}
		if err := decodeVersionValue(val, &v); err != nil {
			return err
		}
		kv = KeyVersion{Key: keyBuf, Main: main, Sub: sub, Tombstone: v.tombstone,
			Create: v.create, Version: v.ver, Lease: v.lease, Value: v.value}
		return fn(&kv)
	})
}

// ReadMeta returns the store's revision bookkeeping as get (a point read
// of the same consistent view; storage.ErrNotFound for a missing key)
// sees it.
func ReadMeta(get func(key []byte) ([]byte, error)) (Meta, error) {
	m := Meta{Rev: 1, CompactScheduled: -1, CompactFinished: -1}
	for _, f := range []struct {
		key []byte
		dst *int64
	}{{metaRev, &m.Rev}, {metaCompactScheduled, &m.CompactScheduled}, {metaCompactFinished, &m.CompactFinished}} {
		v, err := get(f.key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return m, fmt.Errorf("mvcc: read meta: %w", err)
		}
		if len(v) != 8 {
			return m, fmt.Errorf("%w: meta %q is %d bytes", errCorruptKey, f.key, len(v))
		}
		*f.dst = int64(decodeUint64(v))
	}
	return m, nil
}

// VersionRecords hands put the records that hold kv in a store: the
// version and, if withEvent, its entry in the event log. A store built
// from another's versions writes the event of every version at or above
// the finished compaction revision (or of every version if there was
// none), as this store's own compaction leaves them. put must not keep
// its arguments.
func VersionRecords(kv *KeyVersion, withEvent bool, put func(k, v []byte) error) error {
	if kv.Main < 1 || kv.Sub < 0 {
		return fmt.Errorf("%w: revision %d_%d of %q", errCorruptKey, kv.Main, kv.Sub, kv.Key)
	}
	k := versionKey(nil, kv.Key, kv.Main, kv.Sub)
	val, typ := tombstoneValue, eventDelete
	if !kv.Tombstone {
		if kv.Create < 1 || kv.Version < 1 || kv.Lease < 0 {
			return fmt.Errorf("%w: version of %q at %d_%d: create %d, version %d, lease %d",
				errCorruptKey, kv.Key, kv.Main, kv.Sub, kv.Create, kv.Version, kv.Lease)
		}
		val, typ = appendVersionValue(nil, kv.Create, kv.Version, kv.Lease, kv.Value), eventPut
	}
	if err := put(k, val); err != nil {
		return err
	}
	if !withEvent {
		return nil
	}
	return put(eventKey(nil, kv.Main, kv.Sub), append([]byte{typ}, kv.Key...))
}

// MetaRecords hands put the records that hold m in a store. A
// CompactScheduled above CompactFinished makes the store finish that
// compaction when it opens.
func MetaRecords(m Meta, put func(k, v []byte) error) error {
	if err := put(metaRev, encodeInt64(m.Rev)); err != nil {
		return err
	}
	if m.CompactScheduled > 0 {
		if err := put(metaCompactScheduled, encodeInt64(m.CompactScheduled)); err != nil {
			return err
		}
	}
	if m.CompactFinished > 0 {
		return put(metaCompactFinished, encodeInt64(m.CompactFinished))
	}
	return nil
}
