package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cairn-db/cairn/internal/storage"
)

// Escaping of user keys. A user key may hold any byte, so it cannot simply be
// followed by a separator: 0x00 is written as 0x00 0xff and the key ends with
// 0x00 0x01. Comparing two escaped keys bytewise gives the same answer as
// comparing the raw keys: where the raw keys first differ the escaped forms
// differ the same way (0x00 0xff < 0x01.. and 0x00 0x01 < 0x00 0xff), and a
// key that is a prefix of another ends with 0x00 0x01, smaller than anything
// the longer key can continue with.
const (
	escByte   = 0x00
	escZero   = 0xff // 0x00 0xff stands for a 0x00 in the user key
	escTerm   = 0x01 // 0x00 0x01 ends the user key
	escBeyond = 0x02 // 0x00 0x02 sorts after every version of the key

	revLen = 16 // inverted main and sub revision, 8 bytes each
)

var errCorruptKey = errors.New("mvcc: malformed key encoding")

// appendEscaped appends the escaped form of key, without the terminator.
func appendEscaped(dst, key []byte) []byte {
	for {
		i := bytes.IndexByte(key, escByte)
		if i < 0 {
			return append(dst, key...)
		}
		dst = append(dst, key[:i+1]...)
		dst = append(dst, escZero)
		key = key[i+1:]
	}
}

// keyPrefix returns 'k' + escaped(key) + terminator: the prefix every stored
// version of key starts with.
func keyPrefix(dst, key []byte) []byte {
	dst = append(dst, storage.PrefixKeys)
	dst = appendEscaped(dst, key)
	return append(dst, escByte, escTerm)
}

// keyBound returns 'k' + escaped(key): it sorts after every version of every
// key below key and at or before every version of key and the keys above it,
// so it serves both as a seek target for the start of a range and as an
// exclusive upper bound for its end.
func keyBound(dst, key []byte) []byte {
	dst = append(dst, storage.PrefixKeys)
	return appendEscaped(dst, key)
}

// keysEnd is the exclusive upper bound of the whole key-major keyspace.
var keysEnd = []byte{storage.PrefixKeys + 1}

// skipKey turns a key prefix (as from keyPrefix) into the smallest encoded
// key after all of that key's versions. It modifies prefix in place.
func skipKey(prefix []byte) []byte {
	prefix[len(prefix)-1] = escBeyond
	return prefix
}

// appendRev appends the inverted revision, so that newer revisions sort first.
func appendRev(dst []byte, main, sub int64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(main))
	return binary.BigEndian.AppendUint64(dst, ^uint64(sub))
}

// versionKey returns the storage key of key's version at (main, sub).
func versionKey(dst, key []byte, main, sub int64) []byte {
	return appendRev(keyPrefix(dst, key), main, sub)
}

// seekAt returns the seek target for the newest version of the key whose
// prefix is given that is at or below main revision rev: every sub-revision
// of rev sorts at or after it.
func seekAt(dst, prefix []byte, rev int64) []byte {
	dst = append(dst, prefix...)
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(rev))
	return binary.BigEndian.AppendUint64(dst, 0)
}

// splitVersionKey splits a stored version key into its key prefix (as from
// keyPrefix) and revision.
func splitVersionKey(k []byte) (prefix []byte, main, sub int64, err error) {
	if len(k) < 1+2+revLen || k[0] != storage.PrefixKeys {
		return nil, 0, 0, fmt.Errorf("%w: %q", errCorruptKey, k)
	}
	n := len(k) - revLen
	main = int64(^binary.BigEndian.Uint64(k[n:]))
	sub = int64(^binary.BigEndian.Uint64(k[n+8:]))
	return k[:n], main, sub, nil
}

// decodePrefix returns the user key of a key prefix (as from keyPrefix).
func decodePrefix(prefix []byte) ([]byte, error) {
	if len(prefix) < 3 || prefix[0] != storage.PrefixKeys {
		return nil, fmt.Errorf("%w: %q", errCorruptKey, prefix)
	}
	key, rest, err := unescape(prefix[1:])
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %q", errCorruptKey, prefix)
	}
	return key, nil
}

// appendDecodedPrefix is decodePrefix appending the user key to dst.
func appendDecodedPrefix(dst, prefix []byte) ([]byte, error) {
	if len(prefix) < 3 || prefix[0] != storage.PrefixKeys {
		return nil, fmt.Errorf("%w: %q", errCorruptKey, prefix)
	}
	out, rest, err := unescapeAppend(dst, prefix[1:])
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %q", errCorruptKey, prefix)
	}
	return out, nil
}

// unescape decodes one escaped, terminated key from the front of b and returns
// it with the bytes that follow the terminator.
func unescape(b []byte) (key, rest []byte, err error) {
	return unescapeAppend(make([]byte, 0, len(b)), b)
}

// unescapeAppend is unescape appending the key to dst.
func unescapeAppend(dst, b []byte) (key, rest []byte, err error) {
	key = dst
	for {
		i := bytes.IndexByte(b, escByte)
		if i < 0 || i+1 >= len(b) {
			return nil, nil, fmt.Errorf("%w: unterminated key", errCorruptKey)
		}
		key = append(key, b[:i]...)
		switch b[i+1] {
		case escTerm:
			return key, b[i+2:], nil
		case escZero:
			key = append(key, escByte)
			b = b[i+2:]
		default:
			return nil, nil, fmt.Errorf("%w: bad escape 0x%02x", errCorruptKey, b[i+1])
		}
	}
}

// Values in the key-major keyspace. The key already holds the user key and
// the mod revision, so the value carries only the rest:
//
//	flags byte (bit 0: tombstone), then for a live version:
//	uvarint create_revision, uvarint version, uvarint lease (as uint64), value bytes
const flagTombstone = 1

// version is one decoded stored version of a key.
type version struct {
	main, sub int64
	tombstone bool
	create    int64
	ver       int64
	lease     int64
	value     []byte // aliases the iterator's buffer until copied
}

func appendVersionValue(dst []byte, create, ver, lease int64, value []byte) []byte {
	dst = append(dst, 0)
	dst = binary.AppendUvarint(dst, uint64(create))
	dst = binary.AppendUvarint(dst, uint64(ver))
	dst = binary.AppendUvarint(dst, uint64(lease))
	return append(dst, value...)
}

var tombstoneValue = []byte{flagTombstone}

func decodeVersionValue(v []byte, out *version) error {
	if len(v) < 1 {
		return fmt.Errorf("%w: empty version value", errCorruptKey)
	}
	if v[0]&flagTombstone != 0 {
		out.tombstone = true
		out.create, out.ver, out.lease, out.value = 0, 0, 0, nil
		return nil
	}
	out.tombstone = false
	v = v[1:]
	var fields [3]uint64
	for i := range fields {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return fmt.Errorf("%w: bad version value", errCorruptKey)
		}
		fields[i] = x
		v = v[n:]
	}
	out.create, out.ver, out.lease = int64(fields[0]), int64(fields[1]), int64(fields[2])
	out.value = v
	return nil
}

// The event log: 'e' + main revision + sub revision (big endian), so it is
// in revision order. The value is one byte, eventPut or eventDelete, followed
// by the user key; the key-major keyspace holds the rest of the version.
const (
	eventPut    byte = 'p'
	eventDelete byte = 'd'
	eventKeyLen      = 1 + 16
)

func eventKey(dst []byte, main, sub int64) []byte {
	dst = append(dst, storage.PrefixEvents)
	dst = binary.BigEndian.AppendUint64(dst, uint64(main))
	return binary.BigEndian.AppendUint64(dst, uint64(sub))
}

func decodeEventKey(k []byte) (main, sub int64, err error) {
	if len(k) != eventKeyLen || k[0] != storage.PrefixEvents {
		return 0, 0, fmt.Errorf("%w: event key %q", errCorruptKey, k)
	}
	return int64(binary.BigEndian.Uint64(k[1:])), int64(binary.BigEndian.Uint64(k[9:])), nil
}

// mvcc meta keys, all under 'x'; values are 8-byte big-endian int64s.
var (
	metaRev              = []byte{storage.PrefixMVCCMeta, 'r', 'e', 'v'}
	metaCompactScheduled = []byte{storage.PrefixMVCCMeta, 'c', 's'}
	metaCompactFinished  = []byte{storage.PrefixMVCCMeta, 'c', 'f'}
)

func encodeInt64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decodeUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
