package raftnode

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/internal/transport"
)

// A received snapshot is kept, as the stream came, in
// <data dir>/snap/<index>-<term>.snap until it is installed. Installing is a
// protocol of several Pebble batches that a crash can interrupt anywhere:
//
//  1. a synced batch records the install in the raft keyspace
//     ('r' 'i' → index (8 BE), term (8 BE), ConfState (protobuf));
//  2. one batch deletes the replicated key ranges, and batches of about
//     4 MiB write the snapshot's keys (unsynced);
//  3. a final synced batch deletes the whole log, sets the truncation point
//     at the snapshot's index and term and its ConfState, and removes the
//     record of step 1.
//
// Until step 3 commits, the engine's state is a mix and the record says so:
// RecoverSnapshotInstall, which the owner runs before reading anything from
// an engine it opens, redoes steps 2 and 3 from the kept file (deleting and
// rewriting is idempotent). The file is removed only after step 3.
//
// Why not an SST ingestion, atomic in one step: the SSTs would have to be
// written with the engine's comparer and key schema, which the storage
// package keeps to itself.

const snapDirName = "snap"

// installBatchBytes bounds one batch of an install.
const installBatchBytes = 4 << 20

var keyInstalling = []byte{storage.PrefixRaft, 'i'}

var errSnapshotStream = errors.New("raftnode: malformed snapshot stream")

func snapDir(eng *storage.Engine) string { return filepath.Join(eng.Dir(), snapDirName) }

func snapFileName(index, term uint64) string {
	return fmt.Sprintf("%016x-%016x.snap", index, term)
}

// ReceiveSnapshot reads the stream of MsgSnap m's snapshot from r to
// io.EOF, checks it (format, key order, that every key is replicated
// state, that its applied index is the message's) and keeps it in a file,
// ready to install. It implements the peer transport's snapshot sink; it
// does not touch the engine, so a failed or abandoned transfer leaves
// nothing behind but files that the next install or restart removes.
func (s *LogStore) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	meta := m.GetSnapshot().GetMetadata()
	index, term := meta.GetIndex(), meta.GetTerm()
	fs := s.fs
	dir := snapDir(s.eng)
	if err := storage.MkdirAllSynced(fs, dir, 0o700); err != nil {
		return fmt.Errorf("raftnode: create snapshot directory: %w", err)
	}
	path := filepath.Join(dir, snapFileName(index, term))
	// Temporary names start with the index, so that removeSnapshotFiles
	// clears them too.
	tmp := fmt.Sprintf("%s.%d.tmp", path, tmpSeq.Add(1))
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("raftnode: create snapshot file: %w", err)
	}
	fail := func(err error) error {
		f.Close()
		fs.Remove(tmp)
		return err
	}
	w := bufio.NewWriterSize(f, 256<<10)
	if err := readSnapshot(io.TeeReader(r, w), index, term, replicatedSpans(s.localKeys), nil); err != nil {
		return fail(err)
	}
	// The transport's reader says io.EOF only once the transfer's checksum
	// matched: read it before keeping anything.
	var one [1]byte
	if n, err := r.Read(one[:]); n != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%w: data after the trailer", errSnapshotStream)
		}
		return fail(fmt.Errorf("raftnode: finish snapshot: %w", err))
	}
	if err := w.Flush(); err != nil {
		return fail(fmt.Errorf("raftnode: write snapshot file: %w", err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("raftnode: sync snapshot file: %w", err))
	}
	if err := f.Close(); err != nil {
		return fail(fmt.Errorf("raftnode: close snapshot file: %w", err))
	}
	// The rename is synced before raft hears of the snapshot: the install
	// records itself in a synced batch and counts on the file after a
	// crash.
	if err := storage.RenameSynced(fs, tmp, path); err != nil {
		fs.Remove(tmp)
		return fmt.Errorf("raftnode: keep snapshot file: %w", err)
	}
	return nil
}

// tmpSeq numbers the temporary files of snapshots being received, which may
// overlap.
var tmpSeq atomic.Uint64

// received reports whether the data of the snapshot md describes was
// received and kept, ready to install.
func (s *LogStore) received(md *raftpb.SnapshotMetadata) bool {
	_, err := s.fs.Stat(filepath.Join(snapDir(s.eng), snapFileName(md.GetIndex(), md.GetTerm())))
	return err == nil
}

// readSnapshot parses a snapshot stream at index and term, checking every
// key against spans and the applied index, and hands each record to put
// (if not nil). It reads up to the trailer, not to io.EOF.
func readSnapshot(r io.Reader, index, term uint64, spans []span, put func(k, v []byte) error) error {
	br := bufio.NewReaderSize(r, 256<<10)
	var hdr [snapshotHeaderLen]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("raftnode: read snapshot header: %w", eofIsUnexpected(err))
	}
	if !bytes.Equal(hdr[:8], snapshotMagic[:]) {
		return fmt.Errorf("%w: bad magic", errSnapshotStream)
	}
	if gi, gt := binary.BigEndian.Uint64(hdr[8:]), binary.BigEndian.Uint64(hdr[16:]); gi != index || gt != term {
		return fmt.Errorf("%w: stream is at index %d term %d, message at %d term %d", errSnapshotStream, gi, gt, index, term)
	}
	var (
		n          uint64
		prev       []byte
		sawApplied bool
		key, value []byte
		applied    [8]byte
	)
	binary.BigEndian.PutUint64(applied[:], index)
	for {
		kl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("raftnode: read snapshot: %w", eofIsUnexpected(err))
		}
		if kl == 0 {
			break
		}
		if kl > 1<<30 {
			return fmt.Errorf("%w: key of %d bytes", errSnapshotStream, kl)
		}
		if key, err = transport.ReadSized(br, key, int(kl)); err != nil {
			return fmt.Errorf("raftnode: read snapshot: %w", eofIsUnexpected(err))
		}
		vl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("raftnode: read snapshot: %w", eofIsUnexpected(err))
		}
		if vl > 1<<31 {
			return fmt.Errorf("%w: value of %d bytes", errSnapshotStream, vl)
		}
		if value, err = transport.ReadSized(br, value, int(vl)); err != nil {
			return fmt.Errorf("raftnode: read snapshot: %w", eofIsUnexpected(err))
		}
		if prev != nil && bytes.Compare(key, prev) <= 0 {
			return fmt.Errorf("%w: keys out of order", errSnapshotStream)
		}
		prev = append(prev[:0], key...)
		if !inSpans(spans, key) {
			return fmt.Errorf("%w: key %q is not replicated state", errSnapshotStream, key)
		}
		if bytes.Equal(key, appliedIndexKey) {
			if !bytes.Equal(value, applied[:]) {
				return fmt.Errorf("%w: applied index in the data does not match index %d", errSnapshotStream, index)
			}
			sawApplied = true
		}
		if put != nil {
			if err := put(key, value); err != nil {
				return err
			}
		}
		n++
	}
	var cnt [8]byte
	if _, err := io.ReadFull(br, cnt[:]); err != nil {
		return fmt.Errorf("raftnode: read snapshot trailer: %w", eofIsUnexpected(err))
	}
	if got := binary.BigEndian.Uint64(cnt[:]); got != n {
		return fmt.Errorf("%w: trailer counts %d records, read %d", errSnapshotStream, got, n)
	}
	if !sawApplied {
		return fmt.Errorf("%w: no applied index in the data", errSnapshotStream)
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("%w: data after the trailer", errSnapshotStream)
	}
	return nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func inSpans(spans []span, key []byte) bool {
	for _, sp := range spans {
		if (sp.lo == nil || bytes.Compare(key, sp.lo) >= 0) && (sp.hi == nil || bytes.Compare(key, sp.hi) < 0) {
			return true
		}
	}
	return false
}

// InstallSnapshot switches the engine to the snapshot received for snap:
// the replicated keyspaces take the snapshot's keys (and lose every other),
// the log is emptied with its truncation point at the snapshot's index and
// term, and the ConfState becomes the snapshot's. It survives a crash at
// any point (see RecoverSnapshotInstall). The caller must make sure nothing
// else writes the replicated keyspaces meanwhile. Received files at or
// below the snapshot's index are removed afterwards.
func (s *LogStore) InstallSnapshot(snap *raftpb.Snapshot) error {
	meta := snap.GetMetadata()
	index, term := meta.GetIndex(), meta.GetTerm()
	path := filepath.Join(snapDir(s.eng), snapFileName(index, term))
	if _, err := s.fs.Stat(path); err != nil {
		return fmt.Errorf("raftnode: snapshot %d (term %d) was not received: %w", index, term, err)
	}
	cs := meta.GetConfState()
	if cs == nil {
		cs = &raftpb.ConfState{}
	}
	csv, err := proto.Marshal(cs)
	if err != nil {
		return fmt.Errorf("raftnode: encode conf state: %w", err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	rec := binary.BigEndian.AppendUint64(nil, index)
	rec = binary.BigEndian.AppendUint64(rec, term)
	rec = append(rec, csv...)
	b := s.eng.NewWriteBatch()
	if err := errors.Join(b.Set(keyInstalling, rec, nil), b.Commit(true)); err != nil {
		return fmt.Errorf("raftnode: record snapshot install: %w", err)
	}
	if err := installFromFile(s.fs, s.eng, s.logEng, s.back, s.localKeys, index, term, cs); err != nil {
		return err
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
	removeSnapshotFiles(s.fs, s.eng, index)
	return nil
}

// installFromFile runs steps 2 and 3 of an install from the kept file. back
// holds the log; logEng is its engine if it is one (eng itself when the
// log is kept inside).
func installFromFile(fs vfs.FS, eng, logEng *storage.Engine, back logBackend, localKeys [][]byte, index, term uint64, cs *raftpb.ConfState) error {
	f, err := fs.Open(filepath.Join(snapDir(eng), snapFileName(index, term)))
	if err != nil {
		return fmt.Errorf("raftnode: open snapshot %d: %w", index, err)
	}
	defer f.Close()
	spans := replicatedSpans(localKeys)
	b := eng.NewWriteBatch()
	for _, sp := range spans {
		lo, hi := sp.lo, sp.hi
		if lo == nil {
			lo = []byte{}
		}
		if hi == nil {
			hi = []byte{0xff} // no keyspace prefix is 0xff
		}
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			b.Discard()
			return fmt.Errorf("raftnode: clear state for snapshot %d: %w", index, err)
		}
	}
	put := func(k, v []byte) error {
		if err := b.Set(k, v, nil); err != nil {
			return err
		}
		if b.Len() >= installBatchBytes {
			if err := b.Commit(false); err != nil {
				return err
			}
			b = eng.NewWriteBatch()
		}
		return nil
	}
	if err := readSnapshot(f, index, term, spans, put); err != nil {
		b.Discard()
		return fmt.Errorf("raftnode: install snapshot %d: %w", index, err)
	}
	csv, err := proto.Marshal(cs)
	if err != nil {
		b.Discard()
		return fmt.Errorf("raftnode: encode conf state: %w", err)
	}
	if logEng == eng {
		err = errors.Join(stageReset(b, index, term), b.Set(keyConfState, csv, nil), b.Delete(keyInstalling, nil))
		if err != nil {
			b.Discard()
			return fmt.Errorf("raftnode: install snapshot %d: %w", index, err)
		}
		if err := b.Commit(true); err != nil {
			return fmt.Errorf("raftnode: install snapshot %d: %w", index, err)
		}
		return nil
	}
	// Two engines: 3a the state, synced; 3b the log, synced; 3c the
	// record goes. A crash before 3c redoes 2 and 3 (see the package doc's
	// Where the log is); the log is never emptied before the state it would
	// rebuild is durable.
	if err := b.Set(keyConfState, csv, nil); err != nil {
		b.Discard()
		return fmt.Errorf("raftnode: install snapshot %d: %w", index, err)
	}
	if err := b.Commit(true); err != nil {
		return fmt.Errorf("raftnode: install snapshot %d: %w", index, err)
	}
	if err := back.reset(index, term); err != nil {
		return fmt.Errorf("raftnode: install snapshot %d: reset the log: %w", index, err)
	}
	rb := eng.NewWriteBatch()
	if err := errors.Join(rb.Delete(keyInstalling, nil), rb.Commit(true)); err != nil {
		return fmt.Errorf("raftnode: install snapshot %d: %w", index, err)
	}
	return nil
}

// RecoverSnapshotInstall finishes a snapshot install that a crash
// interrupted, from the received file it kept; it reports whether there was
// one. The owner of an engine must call it before reading anything from
// the engine (the replicated state is a mix until it has run) and before
// Start. An interrupted install whose file is gone is an error: the state
// cannot be repaired.
func RecoverSnapshotInstall(eng *storage.Engine, localKeys [][]byte) (bool, error) {
	return recoverSnapshotInstall(eng, eng, localKeys)
}

// RecoverSeparateSnapshotInstall is RecoverSnapshotInstall for a member
// whose log has an engine of its own (OpenSeparateLogStore); log may be
// state itself, which is RecoverSnapshotInstall.
func RecoverSeparateSnapshotInstall(state *storage.Engine, log Log, localKeys [][]byte) (bool, error) {
	return recoverSnapshotInstall(state, log, localKeys)
}

func recoverSnapshotInstall(eng *storage.Engine, log Log, localKeys [][]byte) (bool, error) {
	v, err := eng.Get(keyInstalling)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("raftnode: read snapshot install record: %w", err)
	}
	if len(v) < 16 {
		return false, fmt.Errorf("raftnode: snapshot install record is %d bytes, want at least 16", len(v))
	}
	index, term := binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	cs := &raftpb.ConfState{}
	if err := proto.Unmarshal(v[16:], cs); err != nil {
		return false, fmt.Errorf("raftnode: decode conf state of snapshot %d: %w", index, err)
	}
	back, logEng, err := backendFor(log)
	if err != nil {
		return false, err
	}
	if err := installFromFile(eng.FS(), eng, logEng, back, localKeys, index, term, cs); err != nil {
		return false, err
	}
	removeSnapshotFiles(eng.FS(), eng, index)
	return true, nil
}

// removeSnapshotFiles deletes received snapshot files at or below index
// (all of them, and unfinished ones, for ^0).
func removeSnapshotFiles(fs vfs.FS, eng *storage.Engine, index uint64) {
	dir := snapDir(eng)
	names, err := fs.List(dir)
	if err != nil {
		return
	}
	for _, name := range names {
		at, err := strconv.ParseUint(strings.SplitN(name, "-", 2)[0], 16, 64)
		if err == nil && at <= index {
			fs.Remove(filepath.Join(dir, name))
		}
	}
}
