package raftnode

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/raftlog"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/internal/trailer"
)

// A backup (Maintenance.Snapshot, `etcdctl snapshot save`) is the same
// replicated state a follower's snapshot carries, taken the same way (a
// Pebble snapshot, streamed as it is read), wrapped so that a file on its
// own can be checked:
//
//	"cairnbk1"              magic (8 bytes)
//	stream length           8 bytes BE
//	stream                  the snapshot stream (package doc), at the applied index
//	padding                 zeros up to a multiple of 512 bytes
//	sha256                  of everything above (32 bytes)
//
// The padding is there because clientv3's snapshot.SaveWithVersion (which
// etcdctl snapshot save uses) tells a file that ends with a digest by its
// size: a multiple of 512 plus 32, as an etcd (bbolt) file with its digest
// always is. The size is known before the first byte is sent, so a
// Maintenance.Snapshot response can say how many bytes remain.

// backupMagic starts every backup file (version 1).
var backupMagic = [8]byte{'c', 'a', 'i', 'r', 'n', 'b', 'k', '1'}

const (
	backupHeaderLen = 8 + 8
	backupAlign     = 512
	// BackupDigestLen is the length of the sha256 digest a backup ends with.
	BackupDigestLen = sha256.Size
)

var (
	// ErrBackupCorrupt is returned (wrapped, with the reason) by
	// ReadBackup for a file that is truncated, altered or not a cairn
	// snapshot.
	ErrBackupCorrupt = errors.New("raftnode: snapshot file is corrupt")
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// StateSnapshot is a consistent, point-in-time view of the member's
// replicated state (a Pebble snapshot), for backups and hashes. Its methods
// may be called from any goroutine, but not concurrently; Close releases
// it.
type StateSnapshot struct {
	s     *LogStore
	snap  *outSnapshot
	spans []span
	// Index is the applied index the view is at; Term is its raft term.
	Index, Term uint64
}

// SnapshotState takes a view of the replicated state as the engine holds
// it now. Any moment is consistent: the apply side commits each batch
// together with the applied index it covers. The caller must keep a
// snapshot install from running meanwhile (the state is a mix until it
// ends) and must Close the view.
func (s *LogStore) SnapshotState() (*StateSnapshot, error) {
	// The log may be compacted past the view's index between taking the
	// view and reading its term; a fresh view then has a newer index.
	for attempt := 0; ; attempt++ {
		ps := s.eng.DB().NewSnapshot()
		index, _, err := readSnapshotMeta(ps)
		if err != nil {
			ps.Close()
			return nil, err
		}
		term, err := s.Term(index)
		if errors.Is(err, raft.ErrCompacted) && attempt < 5 {
			ps.Close()
			continue
		}
		if err != nil && index == 0 {
			term, err = 0, nil // a new engine: nothing applied, no log yet
		}
		if err != nil {
			ps.Close()
			return nil, fmt.Errorf("raftnode: term of applied index %d: %w", index, err)
		}
		return &StateSnapshot{
			s:     s,
			snap:  &outSnapshot{snap: ps, index: index, refs: 1},
			spans: replicatedSpans(s.localKeys),
			Index: index,
			Term:  term,
		}, nil
	}
}

// SnapshotState takes a view of the replicated state (see
// LogStore.SnapshotState).
func (n *Node) SnapshotState() (*StateSnapshot, error) { return n.log.SnapshotState() }

// Get returns a copy of the value at key in the view, or storage.ErrNotFound.
func (v *StateSnapshot) Get(key []byte) ([]byte, error) {
	val, closer, err := v.snap.snap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), val...)
	closer.Close()
	return out, nil
}

// each calls fn for every replicated record of the view, in key order.
func (v *StateSnapshot) each(fn func(k, val []byte) error) error {
	for _, sp := range v.spans {
		if err := v.Scan(sp.lo, sp.hi, fn); err != nil {
			return err
		}
	}
	return nil
}

// Scan calls fn for every record of the view whose key lies in [lo, hi),
// in key order, for a backup in another format. fn must not keep k or val.
func (v *StateSnapshot) Scan(lo, hi []byte, fn func(k, val []byte) error) error {
	it, err := v.snap.snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("raftnode: state iterator: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		val, err := it.ValueAndErr()
		if err == nil {
			err = fn(it.Key(), val)
		}
		if err != nil {
			it.Close()
			return err
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("raftnode: read state: %w", err)
	}
	return nil
}

// Hash returns the CRC-32 (Castagnoli) of the view's replicated records,
// the applied index left out (see StateHash).
func (v *StateSnapshot) Hash() (uint32, error) {
	h := NewStateHash()
	if err := v.each(func(k, val []byte) error { h.Add(k, val); return nil }); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}

// Backup returns the backup file of the view as a stream, and its exact
// size. The stream reads the view as it goes (one buffer in memory) and
// owns it from now on: closing the stream closes the view, and the view's
// other methods must no longer be called.
func (v *StateSnapshot) Backup() (io.ReadCloser, int64, error) {
	streamLen := int64(snapshotHeaderLen + 1 + 8) // header, end marker, count
	err := v.each(func(k, val []byte) error {
		streamLen += int64(uvarintLen(uint64(len(k))) + len(k) + uvarintLen(uint64(len(val))) + len(val))
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	body := int64(backupHeaderLen) + streamLen
	pad := (backupAlign - body%backupAlign) % backupAlign
	hdr := append(backupMagic[:len(backupMagic):len(backupMagic)], make([]byte, 8)...)
	binary.BigEndian.PutUint64(hdr[8:], uint64(streamLen))

	w := &snapshotWriter{s: v.s, snap: v.snap, spans: v.spans}
	w.buf = append(w.buf, snapshotMagic[:]...)
	w.buf = binary.BigEndian.AppendUint64(w.buf, v.Index)
	w.buf = binary.BigEndian.AppendUint64(w.buf, v.Term)
	v.snap = nil
	b := &backupReader{
		Reader: trailer.WithDigest(io.MultiReader(bytes.NewReader(hdr), w, bytes.NewReader(make([]byte, pad))), sha256.New()),
		w:      w,
	}
	return b, body + pad + BackupDigestLen, nil
}

// IsBackup reports whether head, the first bytes of a file, start like a
// backup in cairn's own format (Backup): it looks at the magic only, to
// tell formats apart; ReadBackup checks the rest.
func IsBackup(head []byte) bool { return bytes.HasPrefix(head, backupMagic[:]) }

// Close releases the view, unless Backup handed it to a stream.
func (v *StateSnapshot) Close() {
	if v.snap != nil {
		v.s.releaseOut(v.snap)
		v.snap = nil
	}
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}

// backupReader emits the backup's body, then its digest, and closes the
// snapshot it streams.
type backupReader struct {
	io.Reader
	w *snapshotWriter
}

func (b *backupReader) Close() error { return b.w.Close() }

// StateHash hashes replicated records the way StateSnapshot.Hash does, so
// a backup file's records can be hashed as the member hashed its state.
// The record at the applied index key is left out: members that applied
// the same changes hash the same even when one of them also applied
// entries that changed nothing (a new leader's empty entry).
type StateHash struct {
	crc uint32
	buf []byte
}

// NewStateHash returns an empty StateHash.
func NewStateHash() *StateHash { return &StateHash{} }

// Add hashes one record; records must come in key order.
func (h *StateHash) Add(k, v []byte) {
	if bytes.Equal(k, appliedIndexKey) {
		return
	}
	h.buf = binary.AppendUvarint(h.buf[:0], uint64(len(k)))
	h.buf = append(h.buf, k...)
	h.buf = binary.AppendUvarint(h.buf, uint64(len(v)))
	h.crc = crc32.Update(h.crc, crcTable, h.buf)
	h.crc = crc32.Update(h.crc, crcTable, v)
}

// Sum32 returns the hash of the records added so far.
func (h *StateHash) Sum32() uint32 { return h.crc }

// BackupInfo describes a backup file ReadBackup read.
type BackupInfo struct {
	// Index and Term are the raft index and term the state was taken at.
	Index, Term uint64
	// Size is the file's size in bytes; Records the number of records.
	Size    int64
	Records uint64
	// Hash is the StateHash of the records: the Maintenance.Hash the
	// member would have answered at that moment.
	Hash uint32
	// SHA256 is the file's digest.
	SHA256 [sha256.Size]byte
}

// ReadBackup checks the backup file at path (its size, then its sha256
// digest, before anything else is read) and then hands each of its records
// to put (if not nil), in key order, checking the format as it goes.
// localKeys are the keys no backup may hold (Config.LocalKeys). A file that
// fails a check gives an error wrapping ErrBackupCorrupt that says what
// failed; an error from put is returned as is. put must not keep k or v.
func ReadBackup(path string, localKeys [][]byte, put func(k, v []byte) error) (BackupInfo, error) {
	var info BackupInfo
	f, err := os.Open(path)
	if err != nil {
		return info, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return info, err
	}
	info.Size = st.Size()
	var hdr [backupHeaderLen + snapshotHeaderLen]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil || !bytes.Equal(hdr[:8], backupMagic[:]) {
		return info, fmt.Errorf("%w: %s is not a cairn snapshot (it does not start with cairn's snapshot header)", ErrBackupCorrupt, path)
	}
	body := info.Size - BackupDigestLen
	if body%backupAlign != 0 {
		return info, fmt.Errorf("%w: %s is truncated or has extra bytes: %d bytes is not a multiple of %d plus the %d-byte sha256 digest",
			ErrBackupCorrupt, path, info.Size, backupAlign, BackupDigestLen)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, body)); err != nil {
		return info, fmt.Errorf("raftnode: read %s: %w", path, err)
	}
	if _, err := f.ReadAt(info.SHA256[:], body); err != nil {
		return info, fmt.Errorf("raftnode: read %s: %w", path, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, info.SHA256[:]) {
		return info, fmt.Errorf("%w: %s fails its integrity check: sha256 of the content is %x, the file records %x",
			ErrBackupCorrupt, path, got, info.SHA256[:])
	}
	streamLen := int64(binary.BigEndian.Uint64(hdr[8:]))
	if streamLen < snapshotHeaderLen || streamLen > body-backupHeaderLen {
		return info, fmt.Errorf("%w: stream length %d does not fit the file", ErrBackupCorrupt, streamLen)
	}
	info.Index = binary.BigEndian.Uint64(hdr[backupHeaderLen+8:])
	info.Term = binary.BigEndian.Uint64(hdr[backupHeaderLen+16:])
	sh := NewStateHash()
	err = readSnapshot(io.NewSectionReader(f, backupHeaderLen, streamLen), info.Index, info.Term,
		replicatedSpans(localKeys), func(k, v []byte) error {
			info.Records++
			sh.Add(k, v)
			if put != nil {
				return put(k, v)
			}
			return nil
		})
	if errors.Is(err, errSnapshotStream) || errors.Is(err, io.ErrUnexpectedEOF) {
		return info, fmt.Errorf("%w: %w", ErrBackupCorrupt, err)
	}
	if err != nil {
		return info, err
	}
	info.Hash = sh.Sum32()
	return info, nil
}

// restoredLog is the raft state every member of a cluster restored from
// a backup starts with, encoded: cs, an empty log truncated at index and
// term, and a hard state at term with commit index index and no vote.
type restoredLog struct {
	confState []byte
	truncated [16]byte
	hardState [24]byte
}

func newRestoredLog(index, term uint64, cs *raftpb.ConfState) (restoredLog, error) {
	var r restoredLog
	csv, err := proto.Marshal(cs)
	if err != nil {
		return r, fmt.Errorf("raftnode: encode conf state: %w", err)
	}
	r.confState = csv
	binary.BigEndian.PutUint64(r.truncated[:], index)
	binary.BigEndian.PutUint64(r.truncated[8:], term)
	encodeHardState(r.hardState[:], &raftpb.HardState{Term: new(term), Commit: new(index)})
	return r, nil
}

// raftSpan is the key range of the raft state in an engine.
var raftSpan = [2][]byte{{storage.PrefixRaft}, {storage.PrefixRaft + 1}}

// StageRestoredLog writes to b the raft state of a member restored from a
// backup: an empty log whose truncation point is index and term, cs as the
// configuration, and a hard state at term with commit index index and no
// vote. Every member of the restored cluster stages the same, so their
// logs agree up to index and the first leader's entries follow on.
func StageRestoredLog(b *storage.Batch, index, term uint64, cs *raftpb.ConfState) error {
	r, err := newRestoredLog(index, term, cs)
	if err != nil {
		return err
	}
	return errors.Join(
		b.DeleteRange(raftSpan[0], raftSpan[1], nil),
		b.Set(keyConfState, r.confState, nil),
		b.Set(keyTruncated, r.truncated[:], nil),
		b.Set(keyHardState, r.hardState[:], nil),
	)
}

// StageRestoredSeparateLog is StageRestoredLog for a member whose raft log
// has an engine of its own (--wal-dir, the package doc's Where the log is): the
// truncation point and hard state go to log, the configuration to state,
// and both name the log by a new identity, as BindLog pairs a new log with
// a new state. The caller commits log (synced) before state, as BindLog
// writes them.
func StageRestoredSeparateLog(state, log *storage.Batch, index, term uint64, cs *raftpb.ConfState) error {
	r, err := newRestoredLog(index, term, cs)
	if err != nil {
		return err
	}
	id := newLogID()
	return errors.Join(
		state.DeleteRange(raftSpan[0], raftSpan[1], nil),
		state.Set(keyConfState, r.confState, nil),
		state.Set(keyLogID, id, nil),
		log.DeleteRange(raftSpan[0], raftSpan[1], nil),
		log.Set(keyTruncated, r.truncated[:], nil),
		log.Set(keyHardState, r.hardState[:], nil),
		log.Set(keyLogID, id, nil),
	)
}

// StageRestoredFileLog is StageRestoredLog for a member whose raft log is
// kept in segment files: it resets files to an empty log truncated at
// index and term with the hard state StageRestoredLog writes, and names it
// with a new identity (both synced), and stages in state the configuration
// and that identity, as BindLog pairs a new log with a new state. The
// caller commits state afterwards.
func StageRestoredFileLog(state *storage.Batch, files *raftlog.Log, index, term uint64, cs *raftpb.ConfState) error {
	r, err := newRestoredLog(index, term, cs)
	if err != nil {
		return err
	}
	id := newLogID()
	hs := &raftpb.HardState{Term: new(term), Commit: new(index)}
	if err := files.Reset(index, term, hs); err != nil {
		return fmt.Errorf("raftnode: write the restored log in %s: %w", files.Dir(), err)
	}
	if err := files.SetIdentity(id); err != nil {
		return fmt.Errorf("raftnode: name the restored log in %s: %w", files.Dir(), err)
	}
	return errors.Join(
		state.DeleteRange(raftSpan[0], raftSpan[1], nil),
		state.Set(keyConfState, r.confState, nil),
		state.Set(keyLogID, id, nil),
	)
}
