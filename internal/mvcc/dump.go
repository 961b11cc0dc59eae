package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairn-db/cairn/internal/storage"
)

// Dump writes the mvcc keyspaces of eng in readable form, one entry a line:
// the meta ('x': revisions, then compaction hashes pending and kept), then every stored version ('k', in storage order: by key,
// newest first), then the event log ('e'). It is a debugging aid for the
// on-disk data; it may run on a live engine and reads one consistent view.
func Dump(eng *storage.Engine, w io.Writer) error {
	snap := eng.DB().NewSnapshot()
	defer snap.Close()
	for _, m := range []struct {
		name string
		key  []byte
	}{{"rev", metaRev}, {"compact scheduled", metaCompactScheduled}, {"compact finished", metaCompactFinished}} {
		v, closer, err := snap.Get(m.key)
		if err == pebble.ErrNotFound {
			fmt.Fprintf(w, "x %s: unset\n", m.name)
			continue
		}
		if err != nil {
			return err
		}
		if len(v) == 8 {
			fmt.Fprintf(w, "x %s: %d\n", m.name, int64(decodeUint64(v)))
		} else {
			fmt.Fprintf(w, "x %s: bad value %x\n", m.name, v)
		}
		closer.Close()
	}
	if err := dumpHashes(snap, w); err != nil {
		return err
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{storage.PrefixEvents}, UpperBound: keysEnd})
	if err != nil {
		return err
	}
	defer it.Close()
	var kLines, eLines []string
	var ver version
	for valid := it.First(); valid; valid = it.Next() {
		k, val := it.Key(), it.Value()
		switch k[0] {
		case storage.PrefixKeys:
			prefix, main, sub, err := splitVersionKey(k)
			if err != nil {
				return err
			}
			key, err := decodePrefix(prefix)
			if err != nil {
				return err
			}
			if err := decodeVersionValue(val, &ver); err != nil {
				return err
			}
			line := fmt.Sprintf("k %s %d.%d ", strconv.Quote(string(key)), main, sub)
			if ver.tombstone {
				line += "tombstone"
			} else {
				line += fmt.Sprintf("create=%d version=%d lease=%d value=%s", ver.create, ver.ver, ver.lease, strconv.Quote(string(ver.value)))
			}
			kLines = append(kLines, line)
		case storage.PrefixEvents:
			main, sub, err := decodeEventKey(k)
			if err != nil {
				return err
			}
			typ := "?"
			switch {
			case len(val) > 0 && val[0] == eventPut:
				typ = "put"
			case len(val) > 0 && val[0] == eventDelete:
				typ = "delete"
			}
			key := ""
			if len(val) > 0 {
				key = strconv.Quote(string(val[1:]))
			}
			eLines = append(eLines, fmt.Sprintf("e %d.%d %s %s", main, sub, typ, key))
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	for _, l := range append(kLines, eLines...) {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}

// dumpHashes writes the compaction hash records, pending ones first.
func dumpHashes(snap *pebble.Snapshot, w io.Writer) error {
	for _, prefix := range [][]byte{metaHashPending, metaHashKept} {
		upper := append(append([]byte(nil), prefix[:len(prefix)-1]...), prefix[len(prefix)-1]+1)
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			k, v := it.Key(), it.Value()
			switch {
			case len(k) != len(prefix)+8:
				fmt.Fprintf(w, "x bad compaction hash key %q\n", k)
			case bytes.Equal(prefix, metaHashPending) && len(v) == 8:
				fmt.Fprintf(w, "x compaction hash %d: pending, previous compaction %d\n",
					int64(decodeUint64(k[len(prefix):])), int64(decodeUint64(v)))
			case bytes.Equal(prefix, metaHashKept) && len(v) == 12:
				fmt.Fprintf(w, "x compaction hash %d: %08x, previous compaction %d\n",
					int64(decodeUint64(k[len(prefix):])), binary.BigEndian.Uint32(v), int64(decodeUint64(v[4:])))
			default:
				fmt.Fprintf(w, "x compaction hash %q: bad value %x\n", k, v)
			}
		}
		err = it.Error()
		if cerr := it.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
