package raftnode

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/storage"
)

// A received snapshot becomes two SSTs in <data dir>/snap, one for the
// replicated keys below the raft keyspace ("lo") and one for those above it
// ("hi"). Each carries, besides the received keys, range deletions over its
// part of the replicated key space. Installing ingests them together with a
// third SST built at install time for the raft keyspace: a range deletion
// over every log entry, the truncation point (index, term) and the
// ConfState. Pebble ingests the three files in one atomic step, and an
// ingested file's range deletions remove only older keys, never the file's
// own: the member's state and log switch to the snapshot whole, or, after a
// crash, not at all.

const snapDirName = "snap"

var errSnapshotStream = errors.New("raftnode: malformed snapshot stream")

func (s *LogStore) snapDir() string { return filepath.Join(s.eng.Dir(), snapDirName) }

func snapFileName(index, term uint64, part string) string {
	return fmt.Sprintf("%016x-%016x-%s.sst", index, term, part)
}

// ReceiveSnapshot reads the stream of MsgSnap m's snapshot from r to
// io.EOF and stores it as SSTs ready to install. It implements the peer
// transport's snapshot sink; it does not touch the engine, so a failed or
// abandoned transfer leaves nothing behind but files that the next install
// or restart removes.
func (s *LogStore) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	meta := m.GetSnapshot().GetMetadata()
	index, term := meta.GetIndex(), meta.GetTerm()
	dir := s.snapDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("raftnode: create snapshot directory: %w", err)
	}
	br := bufio.NewReaderSize(r, 256<<10)
	var hdr [snapshotHeaderLen]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("raftnode: read snapshot header: %w", err)
	}
	if !bytes.Equal(hdr[:8], snapshotMagic[:]) {
		return fmt.Errorf("%w: bad magic", errSnapshotStream)
	}
	if gi, gt := binary.BigEndian.Uint64(hdr[8:]), binary.BigEndian.Uint64(hdr[16:]); gi != index || gt != term {
		return fmt.Errorf("%w: stream is at index %d term %d, message at %d term %d", errSnapshotStream, gi, gt, index, term)
	}

	spans := replicatedSpans(s.localKeys)
	raftLo := []byte{storage.PrefixRaft}
	var lo, hi []span
	for _, sp := range spans {
		if sp.hi != nil && bytes.Compare(sp.hi, raftLo) <= 0 {
			lo = append(lo, sp)
		} else {
			hi = append(hi, sp)
		}
	}
	parts := []*sstPart{
		{name: snapFileName(index, term, "lo"), spans: lo},
		{name: snapFileName(index, term, "hi"), spans: hi},
	}
	fail := func(err error) error {
		for _, p := range parts {
			p.abort()
		}
		return err
	}
	for _, p := range parts {
		if err := p.create(s, dir); err != nil {
			return fail(err)
		}
	}

	var (
		n           uint64
		prev        []byte
		sawApplied  bool
		key, value  []byte
		appliedWant [8]byte
	)
	binary.BigEndian.PutUint64(appliedWant[:], index)
	for {
		kl, err := binary.ReadUvarint(br)
		if err != nil {
			return fail(fmt.Errorf("raftnode: read snapshot: %w", eofIsUnexpected(err)))
		}
		if kl == 0 {
			break
		}
		if kl > 1<<30 {
			return fail(fmt.Errorf("%w: key of %d bytes", errSnapshotStream, kl))
		}
		key = grow(key, int(kl))
		if _, err := io.ReadFull(br, key); err != nil {
			return fail(fmt.Errorf("raftnode: read snapshot: %w", eofIsUnexpected(err)))
		}
		vl, err := binary.ReadUvarint(br)
		if err != nil {
			return fail(fmt.Errorf("raftnode: read snapshot: %w", eofIsUnexpected(err)))
		}
		if vl > 1<<31 {
			return fail(fmt.Errorf("%w: value of %d bytes", errSnapshotStream, vl))
		}
		value = grow(value, int(vl))
		if _, err := io.ReadFull(br, value); err != nil {
			return fail(fmt.Errorf("raftnode: read snapshot: %w", eofIsUnexpected(err)))
		}
		if prev != nil && bytes.Compare(key, prev) <= 0 {
			return fail(fmt.Errorf("%w: keys out of order", errSnapshotStream))
		}
		prev = append(prev[:0], key...)
		p := partFor(parts, key)
		if p == nil {
			return fail(fmt.Errorf("%w: key %q is not replicated state", errSnapshotStream, key))
		}
		if bytes.Equal(key, appliedIndexKey) {
			if !bytes.Equal(value, appliedWant[:]) {
				return fail(fmt.Errorf("%w: applied index in the data does not match index %d", errSnapshotStream, index))
			}
			sawApplied = true
		}
		if err := p.w.Set(key, value); err != nil {
			return fail(fmt.Errorf("raftnode: write snapshot SST: %w", err))
		}
		n++
	}
	var cnt [8]byte
	if _, err := io.ReadFull(br, cnt[:]); err != nil {
		return fail(fmt.Errorf("raftnode: read snapshot trailer: %w", eofIsUnexpected(err)))
	}
	if got := binary.BigEndian.Uint64(cnt[:]); got != n {
		return fail(fmt.Errorf("%w: trailer counts %d records, read %d", errSnapshotStream, got, n))
	}
	// The transport's reader says io.EOF only once the transfer's checksum
	// matched: read it before keeping anything.
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%w: data after the trailer", errSnapshotStream)
		}
		return fail(fmt.Errorf("raftnode: finish snapshot: %w", err))
	}
	if !sawApplied {
		return fail(fmt.Errorf("%w: no applied index in the data", errSnapshotStream))
	}
	for _, p := range parts {
		if err := p.finish(); err != nil {
			return fail(err)
		}
	}
	return nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// sstPart is one SST being written from a snapshot stream, covering spans.
type sstPart struct {
	name  string
	spans []span
	path  string // final path
	tmp   string
	w     *sstable.Writer
}

func (p *sstPart) create(s *LogStore, dir string) error {
	p.path = filepath.Join(dir, p.name)
	p.tmp = p.path + ".tmp"
	f, err := vfs.Default.Create(p.tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("raftnode: create snapshot SST: %w", err)
	}
	p.w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{
		TableFormat: s.eng.DB().TableFormat(),
	})
	// The range deletions clear what the member held in these spans; the
	// file's own keys, written at the same sequence number, survive them.
	for _, sp := range p.spans {
		lo, hi := sp.lo, sp.hi
		if lo == nil {
			lo = []byte{}
		}
		if hi == nil {
			hi = []byte{0xff}
		}
		if err := p.w.DeleteRange(lo, hi); err != nil {
			return fmt.Errorf("raftnode: write snapshot SST: %w", err)
		}
	}
	return nil
}

// partFor returns the part whose spans hold key, nil if none does.
func partFor(parts []*sstPart, key []byte) *sstPart {
	for _, p := range parts {
		for _, sp := range p.spans {
			if (sp.lo == nil || bytes.Compare(key, sp.lo) >= 0) && (sp.hi == nil || bytes.Compare(key, sp.hi) < 0) {
				return p
			}
		}
	}
	return nil
}

func (p *sstPart) finish() error {
	if err := p.w.Close(); err != nil { // syncs the file
		p.w = nil
		return fmt.Errorf("raftnode: finish snapshot SST: %w", err)
	}
	p.w = nil
	if err := os.Rename(p.tmp, p.path); err != nil {
		return fmt.Errorf("raftnode: finish snapshot SST: %w", err)
	}
	return nil
}

func (p *sstPart) abort() {
	if p.w != nil {
		p.w.Close()
		p.w = nil
	}
	if p.tmp != "" {
		os.Remove(p.tmp)
	}
}

// InstallSnapshot switches the engine to the snapshot received for snap:
// the replicated keyspaces take the snapshot's keys (and lose every other),
// the log is emptied with its truncation point at the snapshot's index and
// term, and the ConfState becomes the snapshot's, all in one atomic ingest.
// The caller must make sure nothing else writes the replicated keyspaces
// meanwhile. Received files at or below the snapshot's index are removed
// afterwards.
func (s *LogStore) InstallSnapshot(snap *raftpb.Snapshot) error {
	meta := snap.GetMetadata()
	index, term := meta.GetIndex(), meta.GetTerm()
	dir := s.snapDir()
	lo := filepath.Join(dir, snapFileName(index, term, "lo"))
	hi := filepath.Join(dir, snapFileName(index, term, "hi"))
	for _, p := range []string{lo, hi} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("raftnode: snapshot %d (term %d) was not received: %w", index, term, err)
		}
	}
	cs := meta.GetConfState()
	if cs == nil {
		cs = &raftpb.ConfState{}
	}
	logPath := filepath.Join(dir, snapFileName(index, term, "log"))
	if err := s.writeLogSST(logPath, index, term, cs); err != nil {
		return err
	}
	defer os.Remove(logPath)

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.eng.DB().Ingest(context.Background(), []string{lo, logPath, hi}); err != nil {
		return fmt.Errorf("raftnode: ingest snapshot %d: %w", index, err)
	}
	s.mu.Lock()
	s.mu.truncIndex, s.mu.truncTerm = index, term
	s.mu.last = index
	s.mu.cache, s.mu.cacheBytes = nil, 0
	s.mu.cacheFirst = index + 1
	s.mu.confState = proto.CloneOf(cs)
	if s.mu.hardState.GetCommit() < index {
		hs := proto.CloneOf(s.mu.hardState)
		hs.Commit = new(index)
		s.mu.hardState = hs
	}
	s.mu.Unlock()
	// Snapshots this member offered describe the state it just replaced.
	s.out.close()
	s.removeSnapshotFiles(index)
	return nil
}

// writeLogSST writes the raft keyspace's part of a snapshot install.
func (s *LogStore) writeLogSST(path string, index, term uint64, cs *raftpb.ConfState) error {
	csv, err := proto.Marshal(cs)
	if err != nil {
		return fmt.Errorf("raftnode: encode conf state: %w", err)
	}
	f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("raftnode: create log SST: %w", err)
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{
		TableFormat: s.eng.DB().TableFormat(),
	})
	var trunc [16]byte
	binary.BigEndian.PutUint64(trunc[:], index)
	binary.BigEndian.PutUint64(trunc[8:], term)
	// Keys in order: 'r' 'c' < 'r' 'e' ... < 'r' 't'.
	err = errors.Join(
		w.DeleteRange([]byte{storage.PrefixRaft, subEntry}, []byte{storage.PrefixRaft, subEntry + 1}),
		w.Set(keyConfState, csv),
		w.Set(keyTruncated, trunc[:]),
	)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("raftnode: write log SST: %w", err)
	}
	return nil
}

// removeSnapshotFiles deletes received snapshot files at or below index
// (all of them for ^0), and unfinished ones.
func (s *LogStore) removeSnapshotFiles(index uint64) {
	ents, err := os.ReadDir(s.snapDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") && index == ^uint64(0) {
			os.Remove(filepath.Join(s.snapDir(), name))
			continue
		}
		i, _, ok := strings.Cut(name, "-")
		if !ok {
			continue
		}
		at, err := strconv.ParseUint(i, 16, 64)
		if err == nil && at <= index {
			os.Remove(filepath.Join(s.snapDir(), name))
		}
	}
}
