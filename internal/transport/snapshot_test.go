package transport

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// memSource serves snapshot data from memory.
type memSource struct {
	data        []byte
	unknownSize bool
	// failAfter, if positive, makes the reader fail after that many bytes.
	failAfter int
	mu        sync.Mutex
	opened    []uint64
	closed    int
}

func (s *memSource) OpenSnapshot(index uint64) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	s.opened = append(s.opened, index)
	s.mu.Unlock()
	var r io.Reader = bytes.NewReader(s.data)
	if s.failAfter > 0 {
		r = io.MultiReader(io.LimitReader(r, int64(s.failAfter)), errReader{})
	}
	size := int64(len(s.data))
	if s.unknownSize {
		size = -1
	}
	return &closeCounter{Reader: r, s: s}, size, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

type closeCounter struct {
	io.Reader
	s *memSource
}

func (c *closeCounter) Close() error {
	c.s.mu.Lock()
	c.s.closed++
	c.s.mu.Unlock()
	return nil
}

// memSink stores received snapshots and records the order of events.
type memSink struct {
	mu     sync.Mutex
	data   [][]byte
	errs   []error
	events *[]string
	fail   error
}

func (s *memSink) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	b, err := io.ReadAll(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.events = append(*s.events, "sink")
	if err != nil {
		s.errs = append(s.errs, err)
		return err
	}
	if s.fail != nil {
		return s.fail
	}
	s.data = append(s.data, b)
	return nil
}

func msgSnap(from, to, index uint64) *raftpb.Message {
	term := uint64(3)
	return &raftpb.Message{
		Type: raftpb.MsgSnap.Enum(), From: &from, To: &to, Term: &term,
		Snapshot: &raftpb.Snapshot{
			Data:     []byte("raft metadata"),
			Metadata: &raftpb.SnapshotMetadata{Index: &index, Term: &term, ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}}},
		},
	}
}

type snapPair struct {
	a, b   *member
	src    *memSource
	sink   *memSink
	events []string
}

func startSnapPair(t *testing.T, src *memSource) *snapPair {
	sp := &snapPair{src: src}
	sp.sink = &memSink{events: &sp.events}
	acfg := fastConfig(1, nil)
	acfg.SnapshotSource = src
	sp.a = startMember(t, acfg)
	bRaft := newFakeRaft()
	bRaft.onProcess = func(m *raftpb.Message) {
		sp.sink.mu.Lock()
		sp.events = append(sp.events, "process "+m.GetType().String())
		sp.sink.mu.Unlock()
	}
	bcfg := fastConfig(2, bRaft)
	bcfg.SnapshotSink = sp.sink
	sp.b = startMember(t, bcfg)
	connect(t, sp.a, sp.b)
	return sp
}

func (sp *snapPair) eventLog() []string {
	sp.sink.mu.Lock()
	defer sp.sink.mu.Unlock()
	return slices.Clone(sp.events)
}

func randomData(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{7})
	_, _ = r.Read(b)
	return b
}

func TestSnapshotStreamedIntact(t *testing.T) {
	for _, tc := range []struct {
		name        string
		size        int
		unknownSize bool
	}{
		{"7MiB+3", 7<<20 + 3, false},
		{"unknown size", 3<<20 + 1, true},
		{"empty", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomData(tc.size)
			sp := startSnapPair(t, &memSource{data: data, unknownSize: tc.unknownSize})
			// A MsgApp sent with the MsgSnap still goes over the stream.
			sp.a.tr.Send([]*raftpb.Message{msgSnap(1, 2, 42), msgApp(1, 2, 43, nil)})

			waitFor(t, "the snapshot report", func() bool { return len(sp.a.raft.snapshotReports()) == 1 })
			if got := sp.a.raft.snapshotReports()[0]; got != raft.SnapshotFinish {
				t.Fatalf("reported %v, want SnapshotFinish", got)
			}
			sp.sink.mu.Lock()
			got := sp.sink.data
			sp.sink.mu.Unlock()
			if len(got) != 1 || sha256.Sum256(got[0]) != sha256.Sum256(data) {
				t.Fatalf("the sink got %d snapshots, first intact: %v", len(got), len(got) == 1 && bytes.Equal(got[0], data))
			}
			var snap *raftpb.Message
			for _, m := range sp.b.raft.received() {
				if m.GetType() == raftpb.MsgSnap {
					snap = m
				}
			}
			if snap == nil || snap.GetSnapshot().GetMetadata().GetIndex() != 42 ||
				string(snap.GetSnapshot().GetData()) != "raft metadata" {
				t.Fatalf("raft got MsgSnap %v", snap)
			}
			// The data is stored before raft learns of the snapshot.
			ev := sp.eventLog()
			if i, j := slices.Index(ev, "sink"), slices.Index(ev, "process MsgSnap"); i < 0 || j < i {
				t.Fatalf("events %v: the sink must come before raft", ev)
			}
			sp.src.mu.Lock()
			defer sp.src.mu.Unlock()
			if !slices.Equal(sp.src.opened, []uint64{42}) || sp.src.closed != 1 {
				t.Fatalf("source opened %v, closed %d times", sp.src.opened, sp.src.closed)
			}
		})
	}
}

func TestSnapshotSourceFailure(t *testing.T) {
	sp := startSnapPair(t, &memSource{data: randomData(2 << 20), failAfter: 1 << 20})
	sp.a.tr.Send([]*raftpb.Message{msgSnap(1, 2, 42)})
	waitFor(t, "the snapshot report", func() bool { return len(sp.a.raft.snapshotReports()) == 1 })
	if got := sp.a.raft.snapshotReports()[0]; got != raft.SnapshotFailure {
		t.Fatalf("reported %v, want SnapshotFailure", got)
	}
	// The receiver saw an error, not a clean end, and raft got no MsgSnap.
	waitFor(t, "the sink to see the failure", func() bool {
		sp.sink.mu.Lock()
		defer sp.sink.mu.Unlock()
		return len(sp.sink.errs) == 1
	})
	for _, m := range sp.b.raft.received() {
		if m.GetType() == raftpb.MsgSnap {
			t.Fatal("raft received the MsgSnap of a failed transfer")
		}
	}
}

func TestSnapshotSinkFailure(t *testing.T) {
	sp := startSnapPair(t, &memSource{data: randomData(1 << 20)})
	sp.sink.fail = errors.New("no space left")
	sp.a.tr.Send([]*raftpb.Message{msgSnap(1, 2, 42)})
	waitFor(t, "the snapshot report", func() bool { return len(sp.a.raft.snapshotReports()) == 1 })
	if got := sp.a.raft.snapshotReports()[0]; got != raft.SnapshotFailure {
		t.Fatalf("reported %v, want SnapshotFailure", got)
	}
	if len(sp.b.raft.received()) != 0 {
		t.Fatal("raft received the MsgSnap of a snapshot the sink refused")
	}
	if !strings.Contains(sp.a.logs.String(), "no space left") {
		t.Fatalf("the sender's log does not say why:\n%s", sp.a.logs.String())
	}
}

func TestSnapshotWithoutSourceFails(t *testing.T) {
	a := startMember(t, fastConfig(1, nil))
	b := startMember(t, fastConfig(2, nil))
	connect(t, a, b)
	a.tr.Send([]*raftpb.Message{msgSnap(1, 2, 5)})
	waitFor(t, "the snapshot report", func() bool { return len(a.raft.snapshotReports()) == 1 })
	if got := a.raft.snapshotReports()[0]; got != raft.SnapshotFailure {
		t.Fatalf("reported %v, want SnapshotFailure", got)
	}
}

// TestSnapshotReaderDetectsCorruption feeds the receiver's reader a stream
// whose data was altered in transit.
func TestSnapshotReaderDetectsCorruption(t *testing.T) {
	data := randomData(600 << 10)
	body := &snapshotBody{src: io.NopCloser(bytes.NewReader(data)), size: int64(len(data)), timeout: 1 << 62}
	body.stall = newStoppedTimer()
	wire, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	read := func(wire []byte, declared int64) ([]byte, error) {
		sr := &snapshotReader{fr: newFrameReader(bytes.NewReader(wire)), declared: declared}
		return io.ReadAll(sr)
	}
	if got, err := read(wire, int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("intact stream: %v", err)
	}
	bad := slices.Clone(wire)
	bad[frameHeaderLen+1000] ^= 1
	if _, err := read(bad, -1); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("flipped bit: %v", err)
	}
	if _, err := read(wire[:len(wire)-20], -1); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated stream: %v", err)
	}
	if _, err := read(wire, int64(len(data))-1); err == nil {
		t.Fatal("more data than announced was accepted")
	}
}

func newStoppedTimer() *time.Timer {
	t := time.AfterFunc(time.Hour, func() {})
	t.Stop()
	return t
}

// stuckSink stops reading after the first bytes until released.
type stuckSink struct{ started, release chan struct{} }

func (s *stuckSink) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	if _, err := io.ReadFull(r, make([]byte, 1024)); err != nil {
		return err
	}
	close(s.started)
	<-s.release
	_, err := io.Copy(io.Discard, r)
	return err
}

// TestSnapshotStallAborts checks that a receiver that stops reading makes
// the sender give up and report the failure, rather than hold the transfer
// (and raft's progress) forever.
func TestSnapshotStallAborts(t *testing.T) {
	acfg := fastConfig(1, nil)
	acfg.SnapshotSource = endlessSource{}
	acfg.SnapshotStallTimeout = 100 * time.Millisecond
	a := startMember(t, acfg)
	sink := &stuckSink{started: make(chan struct{}), release: make(chan struct{})}
	bcfg := fastConfig(2, nil)
	bcfg.SnapshotSink = sink
	b := startMember(t, bcfg)
	connect(t, a, b)
	a.tr.Send([]*raftpb.Message{msgSnap(1, 2, 42)})
	waitFor(t, "the snapshot report", func() bool { return len(a.raft.snapshotReports()) == 1 })
	if got := a.raft.snapshotReports()[0]; got != raft.SnapshotFailure {
		t.Fatalf("reported %v, want SnapshotFailure", got)
	}
	if !strings.Contains(a.logs.String(), errStalled.Error()) {
		t.Fatalf("the sender's log does not say the transfer stalled:\n%s", a.logs.String())
	}
	<-sink.started
	close(sink.release)
	waitFor(t, "the receiver to fail the transfer", func() bool {
		return counterValue(t, b.tr.metrics.snapRecvFailures.WithLabelValues("1")) == 1
	})
	if len(b.raft.received()) != 0 {
		t.Fatal("raft received the MsgSnap of an aborted transfer")
	}
}
