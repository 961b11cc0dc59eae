package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Record types (the low 7 bits of the type byte; the package doc specifies
// each payload). flagMore, the high bit, marks a record that is not the last
// of its group.
const (
	recStart     byte = 1
	recEntry     byte = 2
	recHardState byte = 3
	recTrunc     byte = 4
	recIdentity  byte = 5

	flagMore byte = 0x80
)

const (
	// headerLen is the length and CRC before a record's type byte.
	headerLen = 8
	// maxRecordLen bounds a record's length field (type + payload), so a
	// garbled length is not taken for a huge allocation.
	maxRecordLen = 1 << 30

	entryFixedLen = 8 + 8 + 1 // index, term, entry type
	hardStateLen  = 8 + 8 + 8 // term, vote, commit
	truncLen      = 8 + 8     // index, term
	startFixedLen = 4 + 1 + 8 + 8 + 8 + 8 + 8 + hardStateLen + 1
)

// startMagic opens every segment-start payload.
var startMagic = [4]byte{'c', 'r', 'l', '1'}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errEnd and errTorn are what decodeRecord returns for a zero length (the
// end of what was written) and for bytes that are not a whole record of
// this segment (a short or garbled record, or one of another segment).
var (
	errEnd  = errors.New("raftlog: end of records")
	errTorn = errors.New("raftlog: torn record")
)

// recordCRC is the CRC-32C of seq (8 bytes, little endian), typ and
// payload. The nine header bytes go through the table one at a time, as
// crc32.Update would, so no slice of them escapes (a per-record allocation
// otherwise).
func recordCRC(seq uint64, typ byte, payload []byte) uint32 {
	c := ^uint32(0)
	for i := range 8 {
		c = crcTable[byte(c)^byte(seq>>(8*i))] ^ (c >> 8)
	}
	c = crcTable[byte(c)^typ] ^ (c >> 8)
	return crc32.Update(^c, crcTable, payload)
}

// reserveRecord appends room for a record with an n-byte payload to buf.
// It returns the buffer and the record's payload, to be filled in before
// sealRecord.
func reserveRecord(buf []byte, n int) ([]byte, []byte) {
	start := len(buf)
	buf = grow(buf, headerLen+1+n)
	return buf, buf[start+headerLen+1:]
}

// sealRecord writes the length, type and CRC of the record whose payload
// reserveRecord returned and the caller filled in: rec is the record, from
// its first byte to its last.
func sealRecord(rec []byte, seq uint64, typ byte) {
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(rec)-headerLen))
	rec[headerLen] = typ
	binary.LittleEndian.PutUint32(rec[4:], recordCRC(seq, typ, rec[headerLen+1:]))
}

// appendRecord appends a record of type typ (flags included) with payload
// p to buf.
func appendRecord(buf []byte, seq uint64, typ byte, p []byte) []byte {
	start := len(buf)
	buf, payload := reserveRecord(buf, len(p))
	copy(payload, p)
	sealRecord(buf[start:], seq, typ)
	return buf
}

// grow extends buf by n bytes, reallocating only when its capacity is short.
func grow(buf []byte, n int) []byte {
	if len(buf)+n <= cap(buf) {
		return buf[:len(buf)+n]
	}
	nb := make([]byte, len(buf)+n, 2*cap(buf)+n)
	copy(nb, buf)
	return nb
}

// decodeRecord reads the record at the start of b, written to the segment
// seq. It returns the type byte, the payload (aliasing b) and the record's
// whole length. errEnd: a zero length. errTorn: b is too short for the
// length, or the CRC does not match.
func decodeRecord(b []byte, seq uint64) (typ byte, payload []byte, n int, err error) {
	if len(b) < 4 {
		if allZero(b) {
			return 0, nil, 0, errEnd
		}
		return 0, nil, 0, errTorn
	}
	l := binary.LittleEndian.Uint32(b)
	if l == 0 {
		return 0, nil, 0, errEnd
	}
	if l > maxRecordLen || uint64(len(b)) < headerLen+uint64(l) {
		return 0, nil, 0, errTorn
	}
	n = headerLen + int(l)
	typ = b[headerLen]
	payload = b[headerLen+1 : n]
	if binary.LittleEndian.Uint32(b[4:]) != recordCRC(seq, typ, payload) {
		return 0, nil, 0, errTorn
	}
	return typ, payload, n, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// startState is the payload of a segment-start record: everything the log
// holds besides entries, as of the moment the segment began.
type startState struct {
	// reset is set on a segment Reset began: the entries of the segments
	// before it are dropped.
	reset bool
	// prevEnd is the offset where the previous segment's records end (0
	// for the first segment ever).
	prevEnd               int64
	truncIndex, truncTerm uint64
	last                  uint64
	hs                    hardState
	hasIdentity           bool
	identity              []byte
}

// hardState is a raft hard state held by value.
type hardState struct{ term, vote, commit uint64 }

func (h hardState) empty() bool { return h == hardState{} }

func putHardState(p []byte, h hardState) {
	binary.LittleEndian.PutUint64(p[0:], h.term)
	binary.LittleEndian.PutUint64(p[8:], h.vote)
	binary.LittleEndian.PutUint64(p[16:], h.commit)
}

func getHardState(p []byte) hardState {
	return hardState{
		term:   binary.LittleEndian.Uint64(p[0:]),
		vote:   binary.LittleEndian.Uint64(p[8:]),
		commit: binary.LittleEndian.Uint64(p[16:]),
	}
}

func (s *startState) encodedLen() int { return startFixedLen + len(s.identity) }

func (s *startState) encode(p []byte) {
	copy(p, startMagic[:])
	if s.reset {
		p[4] = 1
	} else {
		p[4] = 0
	}
	binary.LittleEndian.PutUint64(p[5:], uint64(s.prevEnd))
	binary.LittleEndian.PutUint64(p[13:], s.truncIndex)
	binary.LittleEndian.PutUint64(p[21:], s.truncTerm)
	binary.LittleEndian.PutUint64(p[29:], s.last)
	// 8 reserved bytes, zero.
	binary.LittleEndian.PutUint64(p[37:], 0)
	putHardState(p[45:], s.hs)
	if s.hasIdentity {
		p[69] = 1
	} else {
		p[69] = 0
	}
	copy(p[startFixedLen:], s.identity)
}

func decodeStart(p []byte) (startState, error) {
	var s startState
	if len(p) < startFixedLen || [4]byte(p[:4]) != startMagic {
		return s, errors.New("malformed segment-start record")
	}
	if p[4] > 1 || p[69] > 1 {
		return s, errors.New("malformed segment-start flags")
	}
	s.reset = p[4] == 1
	s.prevEnd = int64(binary.LittleEndian.Uint64(p[5:]))
	s.truncIndex = binary.LittleEndian.Uint64(p[13:])
	s.truncTerm = binary.LittleEndian.Uint64(p[21:])
	s.last = binary.LittleEndian.Uint64(p[29:])
	s.hs = getHardState(p[45:])
	s.hasIdentity = p[69] == 1
	if s.hasIdentity {
		s.identity = append([]byte{}, p[startFixedLen:]...)
	} else if len(p) != startFixedLen {
		return s, errors.New("malformed segment-start record: identity without its flag")
	}
	if s.prevEnd < 0 || s.last < s.truncIndex {
		return s, fmt.Errorf("malformed segment-start record: previous end %d, truncation %d, last %d", s.prevEnd, s.truncIndex, s.last)
	}
	return s, nil
}

// entryHeader is the fixed part of an entry record's payload.
type entryHeader struct {
	index, term uint64
	typ         byte
}

func putEntryHeader(p []byte, h entryHeader) {
	binary.LittleEndian.PutUint64(p[0:], h.index)
	binary.LittleEndian.PutUint64(p[8:], h.term)
	p[16] = h.typ
}

func putTrunc(p []byte, index, term uint64) {
	binary.LittleEndian.PutUint64(p[0:], index)
	binary.LittleEndian.PutUint64(p[8:], term)
}

func decodeEntry(p []byte) (entryHeader, []byte, error) {
	if len(p) < entryFixedLen {
		return entryHeader{}, nil, errors.New("malformed entry record")
	}
	h := entryHeader{
		index: binary.LittleEndian.Uint64(p[0:]),
		term:  binary.LittleEndian.Uint64(p[8:]),
		typ:   p[16],
	}
	if h.typ > 2 {
		return h, nil, fmt.Errorf("entry record of unknown entry type %d", h.typ)
	}
	return h, p[entryFixedLen:], nil
}
