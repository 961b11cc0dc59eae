package mvcc

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// view reads the key-major keyspace at a chosen revision through one Pebble
// iterator: an iterator over the DB for readers (a consistent point-in-time
// view), or over the apply goroutine's indexed batch for writers (which then
// also see the batch's own writes). Versions above the revision asked for are
// skipped, which is what keeps a committed but unpublished write invisible.
type view struct {
	it      *pebble.Iterator
	prefix  []byte // current key's prefix, copied out of the iterator
	seekBuf []byte
	// st and gen are the published state and engine generation a reader's
	// view was opened at (nil and 0 for a writer's), for the view pool.
	st  *revState
	gen uint64
}

var keysIterOptions = pebble.IterOptions{
	LowerBound: []byte{'k'},
	UpperBound: keysEnd,
}

// get finds the newest version of key at or below rev. It reports false when
// the key has no such version or that version is a tombstone. The seek is
// a prefix seek (see storage.Comparer): tables whose bloom filter says they
// hold no version of key are not searched.
func (v *view) get(key []byte, rev int64, out *version) (bool, error) {
	v.prefix = keyPrefix(v.prefix[:0], key)
	v.seekBuf = seekAt(v.seekBuf[:0], v.prefix, rev)
	if !v.it.SeekPrefixGE(v.seekBuf) {
		return false, v.it.Error()
	}
	k := v.it.Key()
	if !bytes.HasPrefix(k, v.prefix) || len(k) != len(v.prefix)+revLen {
		return false, nil
	}
	if err := v.decodeCurrent(out); err != nil {
		return false, err
	}
	return !out.tombstone, nil
}

// decodeCurrent decodes the version the iterator is positioned on.
func (v *view) decodeCurrent(out *version) error {
	_, main, sub, err := splitVersionKey(v.it.Key())
	if err != nil {
		return err
	}
	out.main, out.sub = main, sub
	val, err := v.it.ValueAndErr()
	if err != nil {
		return fmt.Errorf("mvcc: read version: %w", err)
	}
	return decodeVersionValue(val, out)
}

// maxSteps is how many older versions scan steps over before it seeks.
const maxSteps = 4

// scan calls fn, in key order, for every key in [start, end) whose newest
// version at or below rev is live, until fn returns false. An empty end means
// no upper bound. fn gets the key's prefix (see keyPrefix) and version; both
// alias buffers that change after fn returns.
func (v *view) scan(start, end []byte, rev int64, fn func(prefix []byte, ver *version) (bool, error)) error {
	var endBound []byte
	if len(end) > 0 {
		endBound = keyBound(nil, end)
	}
	v.seekBuf = keyBound(v.seekBuf[:0], start)
	valid := v.it.SeekGE(v.seekBuf)
	var ver version
	for valid {
		k := v.it.Key()
		if endBound != nil && bytes.Compare(k, endBound) >= 0 {
			break
		}
		prefix, main, _, err := splitVersionKey(k)
		if err != nil {
			return err
		}
		v.prefix = append(v.prefix[:0], prefix...)
		if main > rev {
			// The key changed after rev: jump to its newest version at or
			// below rev, if it has one.
			v.seekBuf = seekAt(v.seekBuf[:0], v.prefix, rev)
			if valid = v.it.SeekGE(v.seekBuf); !valid {
				break
			}
			if !bytes.HasPrefix(v.it.Key(), v.prefix) {
				continue // it did not exist yet; we are on the next key
			}
		}
		if err := v.decodeCurrent(&ver); err != nil {
			return err
		}
		if !ver.tombstone {
			more, err := fn(v.prefix, &ver)
			if err != nil || !more {
				return err
			}
		}
		// Move to the next key: step over a few older versions (a step is
		// much cheaper than a seek), then seek past the rest.
		valid = v.it.Next()
		for steps := 0; valid && bytes.HasPrefix(v.it.Key(), v.prefix); steps++ {
			if steps == maxSteps {
				v.seekBuf = append(v.seekBuf[:0], v.prefix...)
				valid = v.it.SeekGE(skipKey(v.seekBuf))
				break
			}
			valid = v.it.Next()
		}
	}
	return v.it.Error()
}

// keyValue builds the KeyValue of a live version, copying what it aliases.
func keyValue(key []byte, ver *version) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{}
	fillKeyValue(kv, key, ver)
	return kv
}

// fillKeyValue is keyValue into a KeyValue the caller allocated.
func fillKeyValue(kv *mvccpb.KeyValue, key []byte, ver *version) {
	kv.Key = key
	kv.CreateRevision = ver.create
	kv.ModRevision = ver.main
	kv.Version = ver.ver
	kv.Value = bytes.Clone(ver.value)
	kv.Lease = ver.lease
}
