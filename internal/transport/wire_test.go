package transport

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// postStream sends body as a whole stream from member 1 to b and returns
// the response status once b has finished with it.
func postStream(t *testing.T, b *member, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.url+streamPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	setIdentity(req.Header, testCluster, 1, b.id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// frames encodes msgs as message frames.
func frames(msgs ...*raftpb.Message) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = appendMessageFrame(b, m, 1<<30); err != nil {
			panic(err)
		}
	}
	return b
}

func TestReceiverChecksEveryMessage(t *testing.T) {
	cfg := fastConfig(2, nil)
	cfg.MaxMessageBytes = 1 << 10
	b := startMember(t, cfg)

	// A well-formed stream of two messages, then a message claiming to be
	// from member 3 on member 1's stream: the stream ends there.
	body := frames(msgApp(1, 2, 1, nil), msgApp(1, 2, 2, nil), msgApp(3, 2, 3, nil), msgApp(1, 2, 4, nil))
	postStream(t, b, body)
	if got := len(b.raft.received()); got != 2 {
		t.Fatalf("processed %d messages, want 2", got)
	}

	// A message over the receiver's limit ends the stream too.
	body = frames(msgApp(1, 2, 5, make([]byte, 2<<10)), msgApp(1, 2, 6, nil))
	postStream(t, b, body)
	if got := len(b.raft.received()); got != 2 {
		t.Fatalf("processed %d messages, want 2", got)
	}
	if !strings.Contains(b.logs.String(), "message too large") {
		t.Fatalf("the oversized message was not logged:\n%s", b.logs.String())
	}

	// Garbage in a frame is a protocol error, not a crash.
	body = append(appendFrameHeader(nil, frameMessage, 3), 0xff, 0xff, 0xff)
	postStream(t, b, body)
	body = appendFrameHeader(nil, 9, 0)
	postStream(t, b, body)
	if got := len(b.raft.received()); got != 2 {
		t.Fatalf("processed %d messages, want 2", got)
	}
}

func TestSenderDropsOversizedMessage(t *testing.T) {
	cfg := fastConfig(1, nil)
	cfg.MaxMessageBytes = 1 << 10
	a := startMember(t, cfg)
	b := startMember(t, fastConfig(2, nil))
	connect(t, a, b)
	a.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, make([]byte, 2<<10)), msgApp(1, 2, 2, nil)})
	waitFor(t, "the small message", func() bool { return len(b.raft.received()) == 1 })
	if got := b.raft.received()[0].GetIndex(); got != 2 {
		t.Fatalf("received index %d, want 2", got)
	}
	if !strings.Contains(a.logs.String(), "message too large") {
		t.Fatalf("the drop was not logged:\n%s", a.logs.String())
	}
}

func TestFrameRoundTrip(t *testing.T) {
	msgs := []*raftpb.Message{msgApp(1, 2, 1, []byte("x")), heartbeat(1, 2), msgSnap(1, 2, 7)}
	fr := newFrameReader(bytes.NewReader(frames(msgs...)))
	for i := range msgs {
		typ, p, err := fr.next(func(byte) int { return 1 << 20 })
		if err != nil || typ != frameMessage {
			t.Fatalf("frame %d: type %d, %v", i, typ, err)
		}
		m, err := decodeMessage(p)
		if err != nil {
			t.Fatal(err)
		}
		if m.GetType() != msgs[i].GetType() || m.GetIndex() != msgs[i].GetIndex() {
			t.Fatalf("frame %d: got %v, want %v", i, m, msgs[i])
		}
	}
	if _, _, err := fr.next(func(byte) int { return 1 << 20 }); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v", err)
	}
}

// Allocation bounds FuzzStreamDecode holds the decoders to.
const (
	// fuzzMessageLimit is the message frame limit the fuzz target reads
	// with.
	fuzzMessageLimit = 1 << 16
	// readerBufferBytes is what newFrameReader's buffered reader
	// allocates.
	readerBufferBytes = 64 << 10
	// decodeBytesPerByte bounds what decoding a message allocates per
	// byte of it: protobuf builds Go structs far larger than their
	// encoding (an empty entry of 2 bytes becomes a 48-byte raftpb.Entry
	// and an empty response of 2 bytes a raftpb.Message of about 200, in
	// slices that grow by doubling), about 126 bytes per byte at worst.
	decodeBytesPerByte = 256
	// allocSlack covers small allocations (errors, io.Copy's buffer) and
	// whatever another goroutine of the test process allocates meanwhile.
	allocSlack = 256 << 10
)

// bytesAllocated returns how many bytes the process allocated while f ran.
func bytesAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// FuzzStreamDecode feeds arbitrary bytes to the receiving side's decoders:
// they must fail cleanly, never panic, and never allocate past the limits.
// A frame's declared length is checked against its type's limit before a
// buffer is allocated for it, so reading frames costs at most the reader's
// buffer, the payloads actually received, and one buffer of at most the
// limit for a frame cut short; decoding a message costs at most
// decodeBytesPerByte per byte of it. A frame that declares more than its
// limit (4 GiB, say, in a 5-byte input) must cost nothing of the kind: the
// seeds include such frames for both readers.
func FuzzStreamDecode(f *testing.F) {
	f.Add(frames(msgApp(1, 2, 1, []byte("data")), heartbeat(1, 2)))
	f.Add(append(appendFrameHeader(nil, framePing, pingLen), make([]byte, pingLen)...))
	f.Add(append(appendFrameHeader(nil, frameData, 3), 1, 2, 3))
	f.Add(appendFrameHeader(nil, frameEnd, endLen))
	f.Add([]byte{frameMessage, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{frameData, 0xff, 0xff, 0xff, 0xff})
	// Declared past the limits, by a little and by a lot.
	f.Add(appendFrameHeader(nil, frameMessage, fuzzMessageLimit+1))
	f.Add(appendFrameHeader(nil, frameMessage, 1<<20))
	f.Add(appendFrameHeader(nil, frameData, maxDataFrameLen+1))
	f.Add(appendFrameHeader(nil, frameData, 64<<20))
	// Declared at the limits and cut short.
	f.Add(append(appendFrameHeader(nil, frameMessage, fuzzMessageLimit), 1, 2, 3))
	f.Add(append(appendFrameHeader(nil, frameData, maxDataFrameLen), 1, 2, 3))
	f.Fuzz(func(t *testing.T, in []byte) {
		n := uint64(len(in))
		got := bytesAllocated(func() {
			fr := newFrameReader(bytes.NewReader(in))
			for {
				typ, p, err := fr.next(func(typ byte) int {
					if typ == frameMessage {
						return fuzzMessageLimit
					}
					if typ == framePing {
						return pingLen
					}
					return -1
				})
				if err != nil {
					break
				}
				if typ == frameMessage {
					_, _ = decodeMessage(p)
				}
			}
		})
		if limit := readerBufferBytes + fuzzMessageLimit + (1+decodeBytesPerByte)*n + allocSlack; got > limit {
			t.Fatalf("reading and decoding the frames of a %d-byte input allocated %d bytes, more than the %d its limits allow", n, got, limit)
		}
		got = bytesAllocated(func() {
			sr := &snapshotReader{fr: newFrameReader(bytes.NewReader(in)), declared: -1}
			_, _ = io.Copy(io.Discard, sr)
		})
		if limit := readerBufferBytes + maxDataFrameLen + n + allocSlack; got > limit {
			t.Fatalf("reading a %d-byte input as snapshot data allocated %d bytes, more than the %d its limits allow", n, got, limit)
		}
	})
}
