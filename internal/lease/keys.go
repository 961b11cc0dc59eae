package lease

import (
	"encoding/binary"
	"fmt"

	"github.com/cairn-db/cairn/internal/storage"
)

// Second bytes of the lease keyspace (see the package doc).
const (
	kindRecord byte = 'r'
	kindAttach byte = 'k'
)

// recordKey is 'l' 'r' id: the lease's TTL and checkpointed remaining TTL.
func recordKey(id int64) []byte {
	k := make([]byte, 0, 10)
	k = append(k, storage.PrefixLease, kindRecord)
	return binary.BigEndian.AppendUint64(k, uint64(id))
}

// attachPrefix is 'l' 'k' id: the start of the lease's attached keys.
func attachPrefix(id int64) []byte {
	k := make([]byte, 0, 10)
	k = append(k, storage.PrefixLease, kindAttach)
	return binary.BigEndian.AppendUint64(k, uint64(id))
}

// attachKey is 'l' 'k' id key: key is attached to the lease. Every key of
// one lease shares the fixed-length prefix, so iterating it yields the keys
// in byte order.
func attachKey(id int64, key []byte) []byte {
	return append(attachPrefix(id), key...)
}

// prefixEnd returns the first key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// encodeRecord is a lease record's value: varints TTL and remaining TTL.
func encodeRecord(ttl, remaining int64) []byte {
	v := make([]byte, 0, 2*binary.MaxVarintLen64)
	v = binary.AppendVarint(v, ttl)
	return binary.AppendVarint(v, remaining)
}

func decodeRecord(v []byte) (ttl, remaining int64, err error) {
	ttl, n := binary.Varint(v)
	if n <= 0 {
		return 0, 0, fmt.Errorf("lease: corrupt record %x", v)
	}
	remaining, m := binary.Varint(v[n:])
	if m <= 0 || n+m != len(v) {
		return 0, 0, fmt.Errorf("lease: corrupt record %x", v)
	}
	return ttl, remaining, nil
}

func decodeRecordKey(k []byte) (int64, error) {
	if len(k) != 10 || k[0] != storage.PrefixLease || k[1] != kindRecord {
		return 0, fmt.Errorf("lease: corrupt record key %x", k)
	}
	return int64(binary.BigEndian.Uint64(k[2:])), nil
}
