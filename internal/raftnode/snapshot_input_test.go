package raftnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// allocated returns the bytes f allocates, as the runtime counts them.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func streamHeader(index, term uint64) []byte {
	b := append([]byte(nil), snapshotMagic[:]...)
	b = binary.BigEndian.AppendUint64(b, index)
	return binary.BigEndian.AppendUint64(b, term)
}

// TestReadSnapshotAllocatesWhatArrives: record lengths in a snapshot
// stream come from the peer that sent it. A key declared at 1 GiB, or a
// value at 2 GiB, followed by a few bytes, must cost the receiver memory
// in proportion to the bytes, not to the declaration.
func TestReadSnapshotAllocatesWhatArrives(t *testing.T) {
	spans := replicatedSpans(nil)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"key", binary.AppendUvarint(streamHeader(5, 2), 1<<30)},
		{"value", binary.AppendUvarint(append(binary.AppendUvarint(streamHeader(5, 2), 2), "ka"...), 1<<31)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append(tc.in, "a few bytes and then the stream ends"...)
			var err error
			n := allocated(func() { err = readSnapshot(bytes.NewReader(in), 5, 2, spans, nil) })
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("readSnapshot = %v, want io.ErrUnexpectedEOF", err)
			}
			if n > 2<<20 {
				t.Fatalf("reading a %d-byte stream allocated %d bytes", len(in), n)
			}
		})
	}

	// Records longer than the first allocation step still read back whole.
	in := streamHeader(5, 2)
	big := bytes.Repeat([]byte("v"), 3<<20+5)
	var applied [8]byte
	binary.BigEndian.PutUint64(applied[:], 5)
	recs := [][2][]byte{{[]byte("kbig"), big}, {appliedIndexKey, applied[:]}}
	for _, r := range recs {
		in = binary.AppendUvarint(in, uint64(len(r[0])))
		in = append(in, r[0]...)
		in = binary.AppendUvarint(in, uint64(len(r[1])))
		in = append(in, r[1]...)
	}
	in = binary.AppendUvarint(in, 0)
	in = binary.BigEndian.AppendUint64(in, uint64(len(recs)))
	var got [][2][]byte
	err := readSnapshot(bytes.NewReader(in), 5, 2, spans, func(k, v []byte) error {
		got = append(got, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !bytes.Equal(got[0][1], big) || !bytes.Equal(got[1][0], appliedIndexKey) {
		t.Fatalf("read back %d records; the big value is %d bytes", len(got), len(got[0][1]))
	}
}

// FuzzSnapshotStream feeds arbitrary bytes to the snapshot decoder a
// follower runs on a leader's stream: it fails cleanly, never panics, and
// allocates in proportion to its input whatever lengths the records claim.
func FuzzSnapshotStream(f *testing.F) {
	f.Add(binary.AppendUvarint(streamHeader(5, 2), 1<<30))
	f.Add(append(binary.AppendUvarint(append(binary.AppendUvarint(streamHeader(5, 2), 2), "ka"...), 3), "abc"...))
	f.Add(binary.BigEndian.AppendUint64(binary.AppendUvarint(streamHeader(5, 2), 0), 0))
	f.Add([]byte("cairnsn1"))
	spans := replicatedSpans([][]byte{[]byte("cs")})
	f.Fuzz(func(t *testing.T, in []byte) {
		n := allocated(func() { _ = readSnapshot(bytes.NewReader(in), 5, 2, spans, nil) })
		// The 256 KiB read buffer plus a small multiple of the input.
		if bound := uint64(1<<20 + 8*len(in)); n > bound {
			t.Fatalf("a %d-byte stream allocated %d bytes (bound %d)", len(in), n, bound)
		}
	})
}
