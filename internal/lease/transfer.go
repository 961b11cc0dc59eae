package lease

import (
	"github.com/cairn-db/cairn/internal/storage"
)

// Moving leases in and out of another store's format (etcd's backup file,
// package etcdbackup) goes through these functions, so the record layout
// stays this package's alone.

// Record is a lease as it is kept.
type Record struct {
	// ID is the lease ID; TTL its granted TTL in seconds; Remaining the
	// checkpointed remaining TTL in seconds (0: none, the full TTL).
	ID, TTL, Remaining int64
}

// ScanRecords calls fn for every lease in a consistent view of the
// engine; scan calls its fn for every record in [lo, hi), in key order.
func ScanRecords(scan func(lo, hi []byte, fn func(k, v []byte) error) error, fn func(Record) error) error {
	lo := []byte{storage.PrefixLease, kindRecord}
	return scan(lo, prefixEnd(lo), func(k, v []byte) error {
		id, err := decodeRecordKey(k)
		if err != nil {
			return err
		}
		ttl, remaining, err := decodeRecord(v)
		if err != nil {
			return err
		}
		return fn(Record{ID: id, TTL: ttl, Remaining: remaining})
	})
}

// RecordRecords hands put the record that holds r in a store.
func RecordRecords(r Record, put func(k, v []byte) error) error {
	return put(recordKey(r.ID), encodeRecord(r.TTL, r.Remaining))
}

// AttachRecords hands put the record that attaches key to lease id. The
// lease's own record must be there too, and key's newest version must
// name the lease.
func AttachRecords(id int64, key []byte, put func(k, v []byte) error) error {
	return put(attachKey(id, key), nil)
}
