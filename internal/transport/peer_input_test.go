package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// TestStreamRefusesMsgSnap: a MsgSnap travels with its data on the
// snapshot endpoint. One on the message stream would reach raft without
// the data, and the member would fail installing a snapshot it never
// received: the stream is a protocol violation and ends there.
func TestStreamRefusesMsgSnap(t *testing.T) {
	b := startMember(t, fastConfig(2, nil))
	postStream(t, b, frames(msgApp(1, 2, 1, nil), msgSnap(1, 2, 7), msgApp(1, 2, 2, nil)))
	got := b.raft.received()
	for _, m := range got {
		if m.GetType() == raftpb.MsgSnap {
			t.Fatal("a MsgSnap from the message stream reached raft")
		}
	}
	if len(got) != 1 || got[0].GetIndex() != 1 {
		t.Fatalf("processed %v, want only the append before the MsgSnap", got)
	}
	if !strings.Contains(b.logs.String(), "MsgSnap") {
		t.Fatalf("the refusal was not logged:\n%s", b.logs.String())
	}
}

// allocated returns the bytes f allocates, as the runtime counts them.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestFrameReaderAllocatesWhatArrives: a frame header may declare any
// length up to the limit (64 MiB for a message by default); the reader
// allocates in step with the bytes that actually arrive, so a peer cannot
// make it reserve the whole limit with a 5-byte header.
func TestFrameReaderAllocatesWhatArrives(t *testing.T) {
	const limit = 64 << 20
	short := append(appendFrameHeader(nil, frameMessage, limit), "only a few bytes"...)
	var err error
	n := allocated(func() {
		fr := newFrameReader(bytes.NewReader(short))
		_, _, err = fr.next(func(byte) int { return limit })
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short frame: %v, want io.ErrUnexpectedEOF", err)
	}
	if n > 1<<20 {
		t.Fatalf("reading a frame that declared %d bytes and carried 16 allocated %d bytes", limit, n)
	}

	// A frame that does carry its length still reads back whole.
	for _, size := range []int{0, 1, 100 << 10, 3<<20 + 7} {
		body := bytes.Repeat([]byte{0xab}, size)
		in := append(appendFrameHeader(nil, frameData, size), body...)
		in = append(in, appendFrameHeader(nil, frameData, 1)...)
		in = append(in, 0xcd)
		fr := newFrameReader(bytes.NewReader(in))
		for i, want := range [][]byte{body, {0xcd}} {
			typ, p, err := fr.next(func(byte) int { return limit })
			if err != nil || typ != frameData || !bytes.Equal(p, want) {
				t.Fatalf("size %d, frame %d: type %d, %d bytes, %v", size, i, typ, len(p), err)
			}
		}
	}
}

// wireRaft checks, for FuzzPeerWire, what reaches raft from a peer.
type wireRaft struct {
	t *testing.T
	// complete is set once a snapshot's data was read whole.
	complete *bool
}

func (w wireRaft) Process(_ context.Context, m *raftpb.Message) error {
	if m.GetFrom() != 1 || m.GetTo() != 2 {
		w.t.Errorf("raft got a message from %d to %d on a connection from 1 to 2", m.GetFrom(), m.GetTo())
	}
	if m.GetType() == raftpb.MsgSnap && !*w.complete {
		w.t.Error("raft got a MsgSnap whose data did not arrive whole")
	}
	return nil
}
func (wireRaft) IsIDRemoved(uint64) bool                    { return false }
func (wireRaft) ReportUnreachable(uint64)                   {}
func (wireRaft) ReportSnapshot(uint64, raft.SnapshotStatus) {}

// wireSink reads the data of a snapshot to the end, as a real sink must.
type wireSink struct{ complete *bool }

func (s wireSink) ReceiveSnapshot(_ *raftpb.Message, r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	*s.complete = true
	return nil
}

// FuzzPeerWire sends arbitrary request bodies from a peer (member 1 of
// the right cluster) to the Handler, on the message stream and on the
// snapshot endpoint (the first byte chooses), with the transport's real
// limits: whatever the bytes, the member never panics, raft sees only
// messages from the connection's sender, a MsgSnap only after its data
// arrived whole on the snapshot endpoint, and the bytes allocated stay in
// proportion to the bytes received, however long the frames claim to be.
func FuzzPeerWire(f *testing.F) {
	stream := func(b []byte) []byte { return append([]byte{0}, b...) }
	snap := func(b []byte) []byte { return append([]byte{1}, b...) }
	data := append(appendFrameHeader(nil, frameData, 3), 1, 2, 3)
	end := appendFrameHeader(nil, frameEnd, endLen)
	end = append(end, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	f.Add(stream(frames(msgApp(1, 2, 1, []byte("data")), heartbeat(1, 2))))
	f.Add(stream(append(appendFrameHeader(nil, framePing, pingLen), make([]byte, pingLen)...)))
	f.Add(stream(frames(msgSnap(1, 2, 7))))
	f.Add(stream(frames(msgApp(3, 2, 1, nil))))
	f.Add(stream(append(appendFrameHeader(nil, frameMessage, 64<<20), "short"...)))
	f.Add(stream([]byte{frameMessage, 0xff, 0xff, 0xff, 0xff}))
	f.Add(snap(append(frames(msgSnap(1, 2, 7)), append(data, end...)...)))
	f.Add(snap(append(frames(msgSnap(1, 2, 7)), end...)))
	f.Add(snap(append(frames(msgSnap(1, 2, 7)), append(appendFrameHeader(nil, frameData, maxDataFrameLen), 9)...)))
	f.Add(snap(append(appendFrameHeader(nil, frameMessage, 64<<20), "short"...)))
	f.Add(snap(frames(msgApp(1, 2, 1, nil))))

	var complete bool
	var tr *Transport
	f.Cleanup(func() {
		if tr != nil {
			tr.Stop()
		}
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		if tr == nil {
			// Real limits: the defaults a member runs with.
			tr = New(Config{LocalID: 2, ClusterID: testCluster, Raft: wireRaft{t, &complete}, SnapshotSink: wireSink{&complete}})
		}
		tr.cfg.Raft = wireRaft{t, &complete}
		path, body := streamPath, in[1:]
		if in[0]&1 == 1 {
			path = snapshotPath
		}
		complete = false
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		setIdentity(req.Header, testCluster, 1, 2)
		w := httptest.NewRecorder()
		n := allocated(func() { tr.Handler().ServeHTTP(w, req) })
		// Fixed costs (buffers of 64 and 256 KiB, the request's plumbing)
		// plus a small multiple of what arrived.
		if bound := uint64(2<<20 + 8*len(body)); n > bound {
			t.Fatalf("a %d-byte body on %s allocated %d bytes (bound %d)", len(body), path, n, bound)
		}
		if path == snapshotPath && w.Code == http.StatusNoContent && !complete {
			t.Fatal("the snapshot endpoint accepted a snapshot whose data the sink did not read whole")
		}
		if path == snapshotPath && w.Code != http.StatusNoContent && complete {
			t.Fatalf("the sink stored the data but the endpoint answered %d", w.Code)
		}
	})
}
