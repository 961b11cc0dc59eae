package raftnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/storage"
)

// The snapshot a leader sends a follower that needs compacted entries is
// the member's whole replicated state at one applied index: every key of
// the engine outside the raft keyspace, except the LocalKeys. It is never
// written to disk on the sender: LogStore.Snapshot takes a Pebble snapshot
// (a consistent, point-in-time view that costs nothing to take), and
// OpenSnapshot streams it from there. The package doc describes the stream
// and how the receiver installs it.

// appliedIndexKey is where storage.Batch.SetAppliedIndex keeps the applied
// index (8 bytes, big endian). The snapshot reads it from the Pebble
// snapshot, where storage.Engine.AppliedIndex cannot reach; a test keeps
// the two in step.
var appliedIndexKey = []byte("m/applied")

// snapshotMagic starts every snapshot stream (version 1).
var snapshotMagic = [8]byte{'c', 'a', 'i', 'r', 'n', 's', 'n', '1'}

// snapshotHeaderLen is the magic, then index and term (8 bytes BE each).
const snapshotHeaderLen = 8 + 8 + 8

// ErrSnapshotNotFound is returned by OpenSnapshot for an index it holds no
// snapshot at (it was superseded; raft will ask for a new one).
var ErrSnapshotNotFound = errors.New("raftnode: no snapshot at that index")

// outSnapshot is one Pebble snapshot being offered to followers. refs
// counts the cache's reference and each open stream; the Pebble snapshot
// is closed when the last goes.
type outSnapshot struct {
	snap        *pebble.Snapshot
	index, term uint64
	refs        int // guarded by outSnapshots.mu
}

// outSnapshots holds the snapshots offered to followers: the latest one
// (cur, reused while raft keeps asking at the same applied index), the one
// before it (prev: its MsgSnap may still be on its way to the transport
// when raft asks again for another follower), and older ones still being
// streamed.
type outSnapshots struct {
	mu        sync.Mutex
	cur, prev *outSnapshot
	byIndex   map[uint64]*outSnapshot
}

func (o *outSnapshots) releaseLocked(s *outSnapshot) {
	s.refs--
	if s.refs == 0 {
		if o.byIndex[s.index] == s {
			delete(o.byIndex, s.index)
		}
		s.snap.Close()
	}
}

// holding reports whether the cache holds a snapshot.
func (o *outSnapshots) holding() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cur != nil || o.prev != nil
}

// close drops the cache's references; streams still open finish first.
func (o *outSnapshots) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range []*outSnapshot{o.cur, o.prev} {
		if s != nil {
			o.releaseLocked(s)
		}
	}
	o.cur, o.prev = nil, nil
}

// pushLocked makes s the current snapshot (the caller holds a reference
// for the cache) and keeps the previous one.
func (o *outSnapshots) pushLocked(s *outSnapshot) {
	if o.prev != nil {
		o.releaseLocked(o.prev)
	}
	o.prev, o.cur = o.cur, s
}

// Snapshot implements raft.Storage. Raft calls it (on the Ready loop) when a
// follower needs entries that were compacted away. It describes the state
// the engine holds right now: a Pebble snapshot fixes it, and the applied
// index and ConfState read from that snapshot are the metadata, so the data
// OpenSnapshot later streams matches the metadata exactly.
func (s *LogStore) Snapshot() (*raftpb.Snapshot, error) {
	ps := s.eng.DB().NewSnapshot()
	index, cs, err := readSnapshotMeta(ps)
	if err != nil {
		ps.Close()
		return nil, err
	}
	s.mu.Lock()
	trunc := s.mu.truncIndex
	s.mu.Unlock()
	if index == 0 || index < trunc {
		// Nothing applied yet, or (impossible while compaction stays at or
		// below the applied index) state older than the log start.
		ps.Close()
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	if s.testHookRead != nil {
		s.testHookRead()
	}
	// The term comes from the same Pebble snapshot: the log may have been
	// compacted past index since (the applied index moved on), but in the
	// snapshot's view compaction never passed its own applied index.
	var term uint64
	if s.separate() {
		// The log is in another engine, outside the Pebble snapshot: a
		// compaction past index since then shows as ErrCompacted, and raft
		// asks again (compaction keeps entries behind the applied index).
		term, err = s.Term(index)
	} else {
		term, err = storedTerm(ps, index)
	}
	if err != nil {
		ps.Close()
		if errors.Is(err, raft.ErrCompacted) {
			// Impossible while compaction stays at or below the applied
			// index; raft panics on anything but this error.
			return nil, raft.ErrSnapshotTemporarilyUnavailable
		}
		return nil, fmt.Errorf("raftnode: term of snapshot index %d: %w", index, err)
	}

	o := &s.out
	o.mu.Lock()
	if o.byIndex == nil {
		o.byIndex = map[uint64]*outSnapshot{}
	}
	switch old := o.byIndex[index]; {
	case o.cur != nil && o.cur.index == index:
		ps.Close()
	case old != nil:
		// The previous snapshot, or a stream still open, is at this index.
		ps.Close()
		old.refs++
		o.pushLocked(old)
	default:
		snap := &outSnapshot{snap: ps, index: index, term: term, refs: 1}
		o.byIndex[index] = snap
		o.pushLocked(snap)
	}
	o.mu.Unlock()
	return &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
		Index: new(index), Term: new(term), ConfState: cs,
	}}, nil
}

func readSnapshotMeta(ps *pebble.Snapshot) (uint64, *raftpb.ConfState, error) {
	var index uint64
	v, closer, err := ps.Get(appliedIndexKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return 0, nil, fmt.Errorf("raftnode: read applied index: %w", err)
	default:
		if len(v) != 8 {
			closer.Close()
			return 0, nil, fmt.Errorf("raftnode: applied index is %d bytes, want 8", len(v))
		}
		index = binary.BigEndian.Uint64(v)
		closer.Close()
	}
	cs := &raftpb.ConfState{}
	v, closer, err = ps.Get(keyConfState)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return 0, nil, fmt.Errorf("raftnode: read conf state: %w", err)
	default:
		err := proto.Unmarshal(v, cs)
		closer.Close()
		if err != nil {
			return 0, nil, fmt.Errorf("raftnode: decode conf state: %w", err)
		}
	}
	return index, cs, nil
}

// OpenSnapshot returns the stream of the snapshot Snapshot described at
// index, and -1 for its size (not known in advance). It implements the
// peer transport's snapshot source; the caller must Close the stream.
// ErrSnapshotNotFound means the snapshot was superseded.
func (s *LogStore) OpenSnapshot(index uint64) (io.ReadCloser, int64, error) {
	o := &s.out
	o.mu.Lock()
	snap := o.byIndex[index]
	if snap != nil {
		snap.refs++
	}
	o.mu.Unlock()
	if snap == nil {
		return nil, 0, fmt.Errorf("%w %d", ErrSnapshotNotFound, index)
	}
	r := &snapshotWriter{s: s, snap: snap, spans: replicatedSpans(s.localKeys)}
	r.buf = append(r.buf, snapshotMagic[:]...)
	r.buf = binary.BigEndian.AppendUint64(r.buf, index)
	r.buf = binary.BigEndian.AppendUint64(r.buf, snap.term)
	return r, -1, nil
}

func (s *LogStore) releaseOut(snap *outSnapshot) {
	s.out.mu.Lock()
	s.out.releaseLocked(snap)
	s.out.mu.Unlock()
}

// span is a half-open key range [lo, hi); a nil bound is open.
type span struct{ lo, hi []byte }

// replicatedSpans returns the key ranges a snapshot carries: everything
// but the raft keyspace and the local keys (sorted). The raft keyspace is
// one prefix byte, so it splits the key space in two.
func replicatedSpans(local [][]byte) []span {
	raftLo := []byte{storage.PrefixRaft}
	raftHi := []byte{storage.PrefixRaft + 1}
	var out []span
	lo := []byte(nil)
	for _, k := range local {
		if bytes.HasPrefix(k, raftLo) {
			continue
		}
		if bytes.Compare(k, raftLo) < 0 {
			out = append(out, span{lo, k})
			lo = append(append([]byte(nil), k...), 0)
		}
	}
	out = append(out, span{lo, raftLo})
	lo = raftHi
	for _, k := range local {
		if bytes.Compare(k, raftHi) >= 0 {
			out = append(out, span{lo, k})
			lo = append(append([]byte(nil), k...), 0)
		}
	}
	return append(out, span{lo, nil})
}

// snapshotWriter produces a snapshot stream on demand: it walks the Pebble
// snapshot span by span and encodes records into its buffer as Read drains
// it, so no more than one buffer's worth is in memory.
//
// Stream format: the magic, index and term; then one record per key,
// uvarint key length, key, uvarint value length, value (keys are never
// empty and come in increasing order); then a zero key length and the
// number of records (8 bytes BE).
type snapshotWriter struct {
	s     *LogStore
	snap  *outSnapshot
	spans []span
	it    *pebble.Iterator
	n     uint64
	buf   []byte
	off   int
	done  bool
	err   error
}

const snapshotChunk = 256 << 10

func (w *snapshotWriter) Read(p []byte) (int, error) {
	for w.off == len(w.buf) {
		if w.err != nil {
			return 0, w.err
		}
		if w.done {
			return 0, io.EOF
		}
		w.buf, w.off = w.buf[:0], 0
		w.fill()
	}
	n := copy(p, w.buf[w.off:])
	w.off += n
	return n, nil
}

// fill encodes records until the buffer holds a chunk or the data ends.
func (w *snapshotWriter) fill() {
	for len(w.buf) < snapshotChunk {
		if w.it == nil {
			if len(w.spans) == 0 {
				w.buf = binary.AppendUvarint(w.buf, 0)
				w.buf = binary.BigEndian.AppendUint64(w.buf, w.n)
				w.done = true
				return
			}
			sp := w.spans[0]
			w.spans = w.spans[1:]
			it, err := w.snap.snap.NewIter(&pebble.IterOptions{LowerBound: sp.lo, UpperBound: sp.hi})
			if err != nil {
				w.err = fmt.Errorf("raftnode: snapshot iterator: %w", err)
				return
			}
			w.it = it
			if !it.First() {
				w.closeIter()
				if w.err != nil {
					return
				}
			}
			continue
		}
		k, v := w.it.Key(), w.it.Value()
		w.buf = binary.AppendUvarint(w.buf, uint64(len(k)))
		w.buf = append(w.buf, k...)
		w.buf = binary.AppendUvarint(w.buf, uint64(len(v)))
		w.buf = append(w.buf, v...)
		w.n++
		if !w.it.Next() {
			w.closeIter()
			if w.err != nil {
				return
			}
		}
	}
}

func (w *snapshotWriter) closeIter() {
	if err := w.it.Error(); err != nil && w.err == nil {
		w.err = fmt.Errorf("raftnode: read snapshot: %w", err)
	}
	if err := w.it.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("raftnode: read snapshot: %w", err)
	}
	w.it = nil
}

// Close releases the stream's hold on the Pebble snapshot.
func (w *snapshotWriter) Close() error {
	if w.snap == nil {
		return nil
	}
	if w.it != nil {
		w.it.Close()
		w.it = nil
	}
	w.s.releaseOut(w.snap)
	w.snap = nil
	return nil
}

// OpenSnapshot returns the stream of the snapshot at index for the peer
// transport (see LogStore.OpenSnapshot).
func (n *Node) OpenSnapshot(index uint64) (io.ReadCloser, int64, error) {
	return n.log.OpenSnapshot(index)
}

// ReceiveSnapshot stores the snapshot a leader streams with MsgSnap m, for
// a later InstallSnapshot (see LogStore.ReceiveSnapshot).
func (n *Node) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	return n.log.ReceiveSnapshot(m, r)
}

// InstallSnapshot replaces the member's replicated state and log with the
// snapshot received for snap (see LogStore.InstallSnapshot). The apply
// side calls it for a Committed carrying a snapshot, with every earlier
// entry applied and nothing else writing the replicated keyspaces, then
// reports the snapshot's index with AppliedTo.
func (n *Node) InstallSnapshot(snap *raftpb.Snapshot) error {
	return n.log.InstallSnapshot(snap)
}
