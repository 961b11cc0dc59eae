package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// PathPrefix is the URL path under which Handler serves and under which the
// transport reaches its peers. Mount the handler with
// mux.Handle(transport.PathPrefix+"/", t.Handler()).
const PathPrefix = "/raft"

// The version lives in the path rather than in a header so that a peer that
// does not speak it answers 404 before any body is exchanged.
const (
	streamPath   = PathPrefix + "/v1/stream"
	snapshotPath = PathPrefix + "/v1/snapshot"
)

// Request and response headers. IDs are lower-case hexadecimal, as etcd
// prints member and cluster IDs.
const (
	headerClusterID = "X-Cairn-Cluster-Id"
	headerFrom      = "X-Cairn-From"
	headerTo        = "X-Cairn-To"
	// headerRefusal names why a request was refused, so the sender can tell
	// a permanent refusal (retry slowly) from a transient failure.
	headerRefusal = "X-Cairn-Refusal"
	// headerSnapshotSize is the size the SnapshotSource announced, or absent.
	headerSnapshotSize = "X-Cairn-Snapshot-Size"

	contentTypeStream   = "application/x-cairn-raft-stream"
	contentTypeSnapshot = "application/x-cairn-raft-snapshot"
)

// Refusal reasons carried in headerRefusal.
const (
	refusalClusterMismatch = "cluster-id-mismatch"
	refusalMemberMismatch  = "member-id-mismatch"
	refusalRemoved         = "member-removed"
	refusalTLSRequired     = "tls-required"
)

// Frame types. Every frame is a 1-byte type, a 4-byte big-endian payload
// length and the payload.
const (
	frameMessage byte = 1 // a marshaled raftpb.Message
	framePing    byte = 2 // 8 opaque bytes; the receiver echoes them in a pong
	framePong    byte = 3 // the 8 bytes of a ping, echoed
	frameData    byte = 4 // a chunk of snapshot data
	frameEnd     byte = 5 // end of snapshot data: CRC-32C (4 bytes) + total length (8 bytes)
)

const (
	frameHeaderLen = 5
	pingLen        = 8
	endLen         = 12
	// snapshotChunkLen is how much snapshot data one data frame carries; a
	// receiver accepts data frames up to maxDataFrameLen.
	snapshotChunkLen = 256 << 10
	maxDataFrameLen  = 4 << 20
)

var (
	// ErrClusterIDMismatch is returned (and logged) when a peer belongs to
	// another cluster; the peer refuses every request from this member.
	ErrClusterIDMismatch = errors.New("cluster ID mismatch")
	// ErrMemberIDMismatch is returned when the member reached at a peer URL
	// is not the member the transport meant to reach.
	ErrMemberIDMismatch = errors.New("member ID mismatch")
	// ErrMemberRemoved is returned when a peer refuses this member because it
	// has been removed from the cluster.
	ErrMemberRemoved = errors.New("the member has been permanently removed from the cluster")
	// ErrIncompatibleVersion is returned when a peer does not serve this
	// version of the transport protocol.
	ErrIncompatibleVersion = errors.New("incompatible version")
	// ErrTLSRequired is returned when a peer only accepts requests over TLS.
	ErrTLSRequired = errors.New("transport: TLS required")
	// ErrMessageTooLarge is returned when a frame is larger than the limit.
	ErrMessageTooLarge = errors.New("transport: message too large")
	// ErrStopped is returned by requests that reach a stopped transport.
	ErrStopped = errors.New("transport: stopped")
)

// errProtocol wraps every malformed-input error, so that tests and logs can
// tell a broken peer from a broken connection.
var errProtocol = errors.New("transport: protocol error")

func formatID(id uint64) string { return strconv.FormatUint(id, 16) }

func parseID(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("missing")
	}
	return strconv.ParseUint(s, 16, 64)
}

func setIdentity(h http.Header, clusterID, from, to uint64) {
	h.Set(headerClusterID, formatID(clusterID))
	h.Set(headerFrom, formatID(from))
	h.Set(headerTo, formatID(to))
}

// appendFrameHeader appends a frame header; the caller appends n bytes of
// payload.
func appendFrameHeader(b []byte, typ byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, typ), uint32(n))
}

// appendMessageFrame appends m as a message frame. It returns b unchanged and
// an error when m cannot be marshaled or is larger than limit.
func appendMessageFrame(b []byte, m *raftpb.Message, limit int) ([]byte, error) {
	start := len(b)
	b = appendFrameHeader(b, frameMessage, 0)
	b, err := proto.MarshalOptions{}.MarshalAppend(b, m)
	if err != nil {
		return b[:start], fmt.Errorf("transport: marshal %s: %w", m.GetType(), err)
	}
	n := len(b) - start - frameHeaderLen
	if n > limit {
		return b[:start], fmt.Errorf("%w: %s of %d bytes to %s exceeds the limit of %d bytes",
			ErrMessageTooLarge, m.GetType(), n, formatID(m.GetTo()), limit)
	}
	binary.BigEndian.PutUint32(b[start+1:], uint32(n))
	return b, nil
}

// frameReader reads frames from a buffered stream, reusing one payload
// buffer: a payload is valid until the next call.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
	// n counts bytes consumed, headers included, for the metrics.
	n int64
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next reads one frame whose payload may not exceed limit(typ); a type for
// which limit returns a negative value is a protocol error. A clean end of
// input before a header returns io.EOF; an end inside a frame returns
// io.ErrUnexpectedEOF.
func (fr *frameReader) next(limit func(typ byte) int) (byte, []byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	typ, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
	max := limit(typ)
	if max < 0 {
		return 0, nil, fmt.Errorf("%w: unexpected frame type %d", errProtocol, typ)
	}
	if uint64(n) > uint64(max) {
		if typ == frameMessage {
			return 0, nil, fmt.Errorf("%w: %d-byte message exceeds the limit of %d bytes", ErrMessageTooLarge, n, max)
		}
		return 0, nil, fmt.Errorf("%w: %d-byte frame of type %d exceeds %d bytes", errProtocol, n, typ, max)
	}
	p, err := ReadSized(fr.r, fr.buf, int(n))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	fr.buf = p[:0]
	fr.n += frameHeaderLen + int64(n)
	// Do not keep a huge buffer alive for a stream that sent one big
	// message: p stays valid, the next frame gets a new buffer.
	if cap(fr.buf) > 4<<20 {
		fr.buf = nil
	}
	return typ, p, nil
}

// payloadStep is how much of a payload longer than the buffer at hand is
// allocated before its bytes arrive.
const payloadStep = 64 << 10

// ReadSized reads an n-byte payload whose length n came from a peer: into
// buf if it fits, or else into a buffer that grows with the bytes received
// (doubling, from 64 KiB), so that a declared length alone never makes the
// member allocate up to the limit a frame or record may declare. The bytes
// allocated stay within a small multiple of those read. It returns what it
// read and io.ReadFull's error. The peer wire and the snapshot stream
// (raftnode) both read with it.
func ReadSized(r io.Reader, buf []byte, n int) ([]byte, error) {
	if n <= cap(buf) {
		p := buf[:n]
		_, err := io.ReadFull(r, p)
		return p, err
	}
	p := make([]byte, 0, min(n, payloadStep))
	for len(p) < n {
		if len(p) == cap(p) {
			p = slices.Grow(p, min(n, 2*cap(p))-len(p))
		}
		m, err := io.ReadFull(r, p[len(p):min(n, cap(p))])
		p = p[:len(p)+m]
		if err != nil {
			return p, err
		}
	}
	return p, nil
}

// decodeMessage unmarshals a message frame payload. protobuf copies bytes
// fields, so the payload buffer may be reused afterwards.
func decodeMessage(p []byte) (*raftpb.Message, error) {
	m := new(raftpb.Message)
	if err := proto.Unmarshal(p, m); err != nil {
		return nil, fmt.Errorf("%w: %w", errProtocol, err)
	}
	return m, nil
}

// refusalError turns a non-success response into an error, reading at most a
// little of the body for the peer's explanation.
func refusalError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	text := string(trimNewline(body))
	switch {
	case resp.StatusCode == http.StatusPreconditionFailed && resp.Header.Get(headerRefusal) == refusalClusterMismatch:
		return withDetail(ErrClusterIDMismatch, text)
	case resp.StatusCode == http.StatusPreconditionFailed && resp.Header.Get(headerRefusal) == refusalMemberMismatch:
		return withDetail(ErrMemberIDMismatch, text)
	case resp.StatusCode == http.StatusGone:
		return ErrMemberRemoved
	case resp.StatusCode == http.StatusForbidden && resp.Header.Get(headerRefusal) == refusalTLSRequired:
		return ErrTLSRequired
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %s answered 404 for %s", ErrIncompatibleVersion, resp.Request.URL.Host, resp.Request.URL.Path)
	case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(headerRefusal) == "":
		return fmt.Errorf("peer unavailable: %s", text)
	default:
		return fmt.Errorf("unexpected HTTP status %s: %s", resp.Status, text)
	}
}

// withDetail wraps sentinel with the peer's explanation, which usually
// starts with the sentinel's own text.
func withDetail(sentinel error, text string) error {
	text = strings.TrimPrefix(strings.TrimPrefix(text, sentinel.Error()), ": ")
	if text == "" {
		return sentinel
	}
	return fmt.Errorf("%w: %s", sentinel, text)
}

// isRefusal reports whether err is a refusal that retrying soon cannot fix.
func isRefusal(err error) bool {
	return errors.Is(err, ErrClusterIDMismatch) || errors.Is(err, ErrMemberIDMismatch) ||
		errors.Is(err, ErrMemberRemoved) || errors.Is(err, ErrIncompatibleVersion) ||
		errors.Is(err, ErrTLSRequired)
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
