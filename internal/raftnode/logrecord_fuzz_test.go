package raftnode

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// FuzzLogRecord stores arbitrary bytes where the log keeps an entry, the
// hard state or the truncation point, as a damaged disk or a bug could
// leave them, and reads the log back. Whatever the bytes, opening the
// store either fails with an error or gives a store whose reads answer or
// fail with ErrLogStorage, recorded as the log's failure (which is what
// stops the member with a message instead of raft's panic). A value that
// decodes encodes back to one that decodes the same.
func FuzzLogRecord(f *testing.F) {
	valid := make([]byte, entryValueLen(ent(3, 2, "e3/t2")))
	encodeEntryValue(valid, ent(3, 2, "e3/t2"))
	var hs [24]byte
	encodeHardState(hs[:], hardState(2, 1, 5))
	for _, seed := range [][]byte{valid, hs[:], {}, {0}, {1, 0x80}, {9, 1, 'x'}, {2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		for where := range byte(3) {
			f.Add(where, seed)
		}
	}
	f.Fuzz(func(t *testing.T, where byte, v []byte) {
		if typ, term, data, err := decodeEntryValue(v); err == nil {
			e := &raftpb.Entry{Index: new(uint64(3)), Term: new(term), Type: new(typ), Data: data}
			buf := make([]byte, entryValueLen(e))
			encodeEntryValue(buf, e)
			typ2, term2, data2, err := decodeEntryValue(buf)
			if err != nil || typ2 != typ || term2 != term || !bytes.Equal(data2, data) {
				t.Fatalf("%x decodes to (%v, %d, %x), which encodes to %x, which decodes to (%v, %d, %x, %v)",
					v, typ, term, data, buf, typ2, term2, data2, err)
			}
		}

		eng, err := storage.Open("/data", storage.Options{FS: vfs.NewMem()})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		s, err := OpenLogStore(eng)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Save(hardState(2, 1, 5), ents(1, 5, 2), true); err != nil {
			t.Fatal(err)
		}
		b := eng.NewWriteBatch()
		switch where % 3 {
		case 0:
			var k [entryKeyLen]byte
			err = b.Set(entryKey(k[:], 3), v, nil)
		case 1:
			err = b.Set(keyHardState, v, nil)
		case 2:
			err = b.Set(keyTruncated, v, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}

		s, err = OpenLogStore(eng)
		if err != nil {
			return // refused at start, before anything read the log
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if first > last+1 {
			t.Fatalf("first index %d beyond last %d + 1", first, last)
		}
		check := func(what string, err error) {
			t.Helper()
			if err == nil || errors.Is(err, raft.ErrCompacted) || errors.Is(err, raft.ErrUnavailable) {
				return
			}
			if !errors.Is(err, ErrLogStorage) || s.Failed() == nil {
				t.Fatalf("%s: %v (failure recorded: %v); want an ErrLogStorage, recorded", what, err, s.Failed())
			}
		}
		for i := first; i <= last; i++ {
			_, err := s.Term(i)
			check("Term", err)
		}
		if first <= last {
			_, err := s.Entries(first, last+1, ^uint64(0))
			check("Entries", err)
		}
	})
}
