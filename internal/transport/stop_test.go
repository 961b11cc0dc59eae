package transport

import (
	"io"
	"runtime"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/freeport"
)

// endlessSource serves a snapshot that never ends.
type endlessSource struct{}

func (endlessSource) OpenSnapshot(uint64) (io.ReadCloser, int64, error) {
	return io.NopCloser(zeros{}), -1, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// blockingSink reads a snapshot until the transfer is aborted.
type blockingSink struct{ started chan struct{} }

func (s *blockingSink) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	buf := make([]byte, 1024)
	if _, err := io.ReadFull(r, buf); err != nil {
		return err
	}
	close(s.started)
	_, err := io.Copy(io.Discard, r)
	return err
}

// TestStopLeavesNoGoroutines stops members in the middle of everything a
// transport does: open streams both ways, a message stuck in raft, a peer
// that is down, and a snapshot transfer in flight.
func TestStopLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()

	acfg := fastConfig(1, nil)
	acfg.SnapshotSource = endlessSource{}
	a := startMember(t, acfg)
	sink := &blockingSink{started: make(chan struct{})}
	bcfg := fastConfig(2, nil)
	bcfg.SnapshotSink = sink
	b := startMember(t, bcfg)
	c := startMember(t, fastConfig(3, nil))
	connect(t, a, b)
	connect(t, a, c)
	connect(t, b, c)
	a.tr.AddPeer(4, []string{"http://" + freeport.Addr(t)}) // down
	t.Logf("%d goroutines before, %d running", before, runtime.NumGoroutine())

	gate := make(chan struct{})
	c.raft.setGate(gate) // c's raft never takes the next message
	a.tr.Send([]*raftpb.Message{msgApp(1, 3, 1, nil), msgApp(1, 2, 1, nil), msgApp(1, 4, 1, nil), msgSnap(1, 2, 9)})
	waitFor(t, "the message at b", func() bool { return len(b.raft.received()) == 1 })
	select {
	case <-sink.started:
	case <-time.After(20 * time.Second):
		t.Fatal("the snapshot transfer did not start")
	}

	// b stops first while a still streams to it and sends it a snapshot;
	// then c, whose raft is stuck in Process; then a.
	b.close()
	c.close()
	a.close()

	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines before, %d after Stop:\n%s", before, runtime.NumGoroutine(), buf[:n])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStopIsIdempotentAndRefusesLateRequests(t *testing.T) {
	a := startMember(t, fastConfig(1, nil))
	b := startMember(t, fastConfig(2, nil))
	b.tr.Stop()
	b.tr.Stop()
	b.tr.AddPeer(1, []string{a.url}) // ignored after Stop
	if _, ok := b.tr.PeerStatus(1); ok {
		t.Fatal("AddPeer after Stop added a peer")
	}
	a.tr.AddPeer(2, []string{b.url})
	waitFor(t, "the 503", func() bool {
		st, _ := a.tr.PeerStatus(2)
		return st.LastError != nil
	})
	if !a.tr.ActiveSince(2).IsZero() {
		t.Fatal("a stopped transport accepted a stream")
	}
	b.tr.Send([]*raftpb.Message{msgApp(2, 1, 1, nil)}) // no panic, no effect
}
