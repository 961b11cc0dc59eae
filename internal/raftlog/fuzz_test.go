package raftlog

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// FuzzRecord decodes arbitrary bytes as a record: it never panics, and a
// record it accepts encodes back to the same bytes.
func FuzzRecord(f *testing.F) {
	var buf []byte
	buf = appendRecord(buf, 7, recIdentity, []byte("identity"))
	f.Add(buf, uint64(7))
	st := startState{prevEnd: 100, truncIndex: 5, truncTerm: 2, last: 9, hasIdentity: true, identity: []byte("x")}
	var p []byte
	buf, p = reserveRecord(nil, st.encodedLen())
	st.encode(p)
	sealRecord(buf, 3, recStart)
	f.Add(buf, uint64(3))
	buf, p = reserveRecord(nil, entryFixedLen+3)
	putEntryHeader(p, entryHeader{index: 4, term: 1, typ: 1})
	copy(p[entryFixedLen:], "abc")
	sealRecord(buf, 1, recEntry|flagMore)
	f.Add(buf, uint64(1))
	f.Add([]byte{}, uint64(0))
	f.Add([]byte{0, 0, 0, 0, 1}, uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, seq uint64) {
		typ, payload, n, err := decodeRecord(b, seq)
		if err != nil {
			if !errors.Is(err, errEnd) && !errors.Is(err, errTorn) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n > len(b) || n < headerLen+1 {
			t.Fatalf("record length %d of %d bytes", n, len(b))
		}
		if again := appendRecord(nil, seq, typ, payload); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoded %x, decoded from %x", again, b[:n])
		}
		switch typ &^ flagMore {
		case recStart:
			if s, err := decodeStart(payload); err == nil {
				out := make([]byte, s.encodedLen())
				s.encode(out)
				if len(out) != len(payload) {
					t.Fatalf("start record re-encoded to %d bytes, was %d", len(out), len(payload))
				}
			}
		case recEntry:
			_, _, _ = decodeEntry(payload)
		}
	})
}

// FuzzOpen opens arbitrary bytes as one or two segment files: Open never
// panics, and a log it opens reads back consistently and takes an append.
func FuzzOpen(f *testing.F) {
	// Seeds: the segments of a real log, whole and cut.
	fs := vfs.NewMem()
	l, err := Open(fs, "log", Options{SegmentBytes: 512})
	if err != nil {
		f.Fatal(err)
	}
	_ = l.SetIdentity([]byte("id"))
	for i := uint64(1); i < 20; i += 2 {
		_ = l.Append(hs(1, 1, i), ents(i, i+1, 1, "fuzz"), i%3 == 0)
		if i == 11 {
			_ = l.Compact(7)
		}
	}
	_ = l.Close()
	names, _ := fs.List("log")
	slices.Sort(names)
	var segs [][]byte
	var seqs []uint64
	for _, n := range names {
		seq, ok := parseSegmentName(n)
		if !ok {
			continue // the spare
		}
		seqs = append(seqs, seq)
		fl, _ := fs.Open(fs.PathJoin("log", n))
		st, _ := fl.Stat()
		b := make([]byte, st.Size())
		_, _ = fl.ReadAt(b, 0)
		_ = fl.Close()
		segs = append(segs, b)
	}
	for i := 0; i+1 < len(segs); i++ {
		f.Add(segs[i], segs[i+1], seqs[i], true)
		f.Add(segs[i], segs[i+1][:len(segs[i+1])/2], seqs[i], true)
		f.Add(segs[i], []byte(nil), seqs[i], false)
	}
	f.Add([]byte{}, []byte{}, uint64(1), true)

	f.Fuzz(func(t *testing.T, a, b []byte, first uint64, two bool) {
		if first == ^uint64(0) {
			return
		}
		mem := vfs.NewMem()
		if err := mem.MkdirAll("log", 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(seq uint64, data []byte) {
			fl, err := mem.Create(mem.PathJoin("log", segmentName(seq)), vfs.WriteCategoryUnspecified)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = fl.WriteAt(data, 0)
			_ = fl.Close()
		}
		write(first, a)
		if two {
			write(first+1, b)
		}
		opts := Options{SegmentBytes: 512}
		l, err := Open(mem, "log", opts)
		if err != nil {
			return
		}
		trunc, _ := l.Truncation()
		last := l.LastIndex()
		if last > trunc {
			got, err := l.Entries(trunc+1, last+1, noLimit)
			if err != nil {
				t.Fatalf("Entries(%d, %d): %v", trunc+1, last+1, err)
			}
			if uint64(len(got)) != last-trunc {
				t.Fatalf("Entries returned %d entries of %d", len(got), last-trunc)
			}
			for _, e := range got {
				if tm, err := l.Term(e.GetIndex()); err != nil || tm != e.GetTerm() {
					t.Fatalf("entry %d has term %d, Term says %d, %v", e.GetIndex(), e.GetTerm(), tm, err)
				}
			}
		}
		if last == ^uint64(0) {
			_ = l.Close()
			return
		}
		e := &raftpb.Entry{Index: new(last + 1), Term: new(uint64(1)), Data: []byte("next")}
		if err := l.Append(nil, []*raftpb.Entry{e}, true); err != nil {
			t.Fatalf("append: %v", err)
		}
		_ = l.Close()
		l, err = Open(mem, "log", opts)
		if err != nil {
			t.Fatalf("reopen after the append: %v", err)
		}
		if got, err := l.Entries(last+1, last+2, noLimit); err != nil || string(got[0].GetData()) != "next" {
			t.Fatalf("reopened: %v, %v", got, err)
		}
		_ = l.Close()
	})
}
