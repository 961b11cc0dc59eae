package raftlog

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

func TestRecordCRCIsCRC32C(t *testing.T) {
	payload := []byte("some payload bytes")
	for _, seq := range []uint64{0, 1, 0x0123456789abcdef, ^uint64(0)} {
		b := binary.LittleEndian.AppendUint64(nil, seq)
		b = append(b, recEntry|flagMore)
		b = append(b, payload...)
		if got, want := recordCRC(seq, recEntry|flagMore, payload), crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)); got != want {
			t.Fatalf("seq %x: %08x, want %08x", seq, got, want)
		}
	}
}
