package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errSinkShortRead = errors.New("transport: snapshot sink returned before reading all the data")

// sendSnapshot starts transferring the snapshot of MsgSnap m, unless one is
// already in flight to this peer: raft then still waits for that transfer's
// report, which also settles this one.
func (p *peer) sendSnapshot(m *raftpb.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return
	}
	if !p.snapshotInFlight.CompareAndSwap(false, true) {
		p.log.Warn("a snapshot transfer to the peer is in progress; dropping MsgSnap",
			"index", m.GetSnapshot().GetMetadata().GetIndex())
		return
	}
	p.wg.Add(1)
	go p.transferSnapshot(m)
}

// transferSnapshot sends one snapshot and reports the outcome to raft,
// except when the peer or the transport is being stopped.
func (p *peer) transferSnapshot(m *raftpb.Message) {
	defer p.wg.Done()
	index := m.GetSnapshot().GetMetadata().GetIndex()
	met := p.t.metrics
	met.snapSendInflight.WithLabelValues(p.label).Inc()
	start := time.Now()
	n, err := p.postSnapshot(m)
	met.snapSendInflight.WithLabelValues(p.label).Dec()
	// Free the slot before reporting: raft may answer a failure with a new
	// MsgSnap right away.
	p.snapshotInFlight.Store(false)
	if p.ctx.Err() != nil {
		p.log.Info("snapshot transfer aborted", "index", index, "err", err)
		return
	}
	if err != nil {
		met.snapSendFailures.WithLabelValues(p.label).Inc()
		p.log.Warn("snapshot transfer failed", "index", index, "sent_bytes", n, "err", err)
		p.t.noteRemoved(err)
		p.t.cfg.Raft.ReportSnapshot(p.id, raft.SnapshotFailure)
		return
	}
	met.snapSendSuccess.WithLabelValues(p.label).Inc()
	met.snapSendDuration.WithLabelValues(p.label).Observe(time.Since(start).Seconds())
	p.log.Info("snapshot sent", "index", index, "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
	p.t.cfg.Raft.ReportSnapshot(p.id, raft.SnapshotFinish)
}

// postSnapshot streams m and the snapshot data to the peer and waits until
// the peer has stored it and handed m to raft. It returns how many data
// bytes were sent.
func (p *peer) postSnapshot(m *raftpb.Message) (int64, error) {
	src := p.t.cfg.SnapshotSource
	if src == nil {
		return 0, errors.New("transport: no snapshot source configured")
	}
	url := p.pickURL()
	if url == "" {
		return 0, errors.New("the peer has no URLs")
	}
	hdr, err := appendMessageFrame(nil, m, p.t.cfg.MaxMessageBytes)
	if err != nil {
		return 0, err
	}
	index := m.GetSnapshot().GetMetadata().GetIndex()
	data, size, err := src.OpenSnapshot(index)
	if err != nil {
		return 0, fmt.Errorf("opening snapshot %d: %w", index, err)
	}
	ctx, cancel := context.WithCancelCause(p.ctx)
	defer cancel(nil)
	body := &snapshotBody{src: data, pending: hdr, size: size, timeout: p.t.cfg.SnapshotStallTimeout}
	body.stall = time.AfterFunc(time.Hour, func() { cancel(errStalled) })
	body.stall.Stop()
	defer body.Close()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+snapshotPath, body)
	if err != nil {
		return 0, fmt.Errorf("bad peer URL %q: %w", url, err)
	}
	setIdentity(req.Header, p.t.cfg.ClusterID, p.t.cfg.LocalID, p.id)
	req.Header.Set("Content-Type", contentTypeSnapshot)
	if size >= 0 {
		req.Header.Set(headerSnapshotSize, strconv.FormatInt(size, 10))
	}
	resp, err := p.t.snapshotClient.Do(req)
	sent := body.sent()
	p.t.metrics.sentBytes.WithLabelValues(p.label).Add(float64(sent))
	if err != nil {
		return body.dataBytes(), causeOr(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return body.dataBytes(), refusalError(resp)
	}
	return body.dataBytes(), nil
}

// snapshotBody is the request body of a snapshot transfer: the MsgSnap
// frame, the data in frames of snapshotChunkLen, and an end frame. It
// generates the frames as the HTTP client reads, so the data is never held
// in memory beyond one chunk, and it aborts the request (stall) when the
// client stops reading for longer than timeout, which is what a peer that
// stopped reading looks like from here.
type snapshotBody struct {
	stall   *time.Timer
	timeout time.Duration
	size    int64 // announced by the source, -1 if unknown

	// mu serializes Read and Close: the HTTP client may still read after
	// Do returned, when the snapshot's own Close also runs.
	mu      sync.Mutex
	src     io.ReadCloser
	pending []byte // the rest of the frame being read
	chunk   []byte
	crc     uint32
	data    int64 // data bytes framed so far
	n       int64 // body bytes read so far
	srcDone bool
	err     error // returned once pending is empty
}

func (b *snapshotBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stall.Stop()
	for len(b.pending) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		b.fill()
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	b.n += int64(n)
	b.stall.Reset(b.timeout)
	return n, nil
}

// fill frames the next chunk of data, or the end frame, or records an error.
func (b *snapshotBody) fill() {
	if b.src == nil {
		b.err = errors.New("snapshot body closed")
		return
	}
	if b.srcDone {
		if b.size >= 0 && b.data != b.size {
			b.err = fmt.Errorf("the snapshot source produced %d bytes, announced %d", b.data, b.size)
			return
		}
		end := appendFrameHeader(make([]byte, 0, frameHeaderLen+endLen), frameEnd, endLen)
		end = binary.BigEndian.AppendUint32(end, b.crc)
		end = binary.BigEndian.AppendUint64(end, uint64(b.data))
		b.pending, b.err = end, io.EOF
		return
	}
	if b.chunk == nil {
		b.chunk = make([]byte, frameHeaderLen+snapshotChunkLen)
	}
	n, err := io.ReadFull(b.src, b.chunk[frameHeaderLen:])
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		b.srcDone = true
	case err != nil:
		b.err = fmt.Errorf("reading the snapshot: %w", err)
		return
	}
	if n > 0 {
		appendFrameHeader(b.chunk[:0], frameData, n)
		b.crc = crc32.Update(b.crc, castagnoli, b.chunk[frameHeaderLen:frameHeaderLen+n])
		b.data += int64(n)
		b.pending = b.chunk[:frameHeaderLen+n]
	}
}

// Close closes the snapshot source; later reads fail.
func (b *snapshotBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stall.Stop()
	if b.src == nil {
		return nil
	}
	err := b.src.Close()
	b.src = nil
	b.pending = nil
	return err
}

func (b *snapshotBody) sent() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

func (b *snapshotBody) dataBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.data
}

// serveSnapshot receives one snapshot: the MsgSnap, then the data, which
// goes to the SnapshotSink; only once the sink has stored all of it intact
// is the MsgSnap handed to raft. The response tells the sender the outcome.
func (t *Transport) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	from, ok := t.admit(w, r)
	if !ok {
		return
	}
	defer t.wg.Done()
	label := formatID(from)
	log := t.log.With("peer", label)
	met := t.metrics
	if t.cfg.SnapshotSink == nil {
		met.snapRecvFailures.WithLabelValues(label).Inc()
		http.Error(w, "transport: this member does not accept snapshots", http.StatusServiceUnavailable)
		return
	}
	declared := int64(-1)
	if s := r.Header.Get(headerSnapshotSize); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, fmt.Sprintf("transport: bad %s header %q", headerSnapshotSize, s), http.StatusBadRequest)
			return
		}
		declared = n
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	stopOnStop := context.AfterFunc(t.ctx, func() { cancel(ErrStopped) })
	defer stopOnStop()
	body := newDeadlineReader(ctx, r.Body, http.NewResponseController(w), t.cfg.SnapshotStallTimeout)
	defer body.release()

	start := time.Now()
	met.snapRecvInflight.WithLabelValues(label).Inc()
	defer met.snapRecvInflight.WithLabelValues(label).Dec()
	fail := func(status int, err error) {
		met.snapRecvFailures.WithLabelValues(label).Inc()
		log.Warn("receiving a snapshot failed", "err", err)
		http.Error(w, err.Error(), status)
	}

	fr := newFrameReader(body)
	defer func() { met.recvBytes.WithLabelValues(label).Add(float64(fr.n)) }()
	_, payload, err := fr.next(func(typ byte) int {
		if typ == frameMessage {
			return t.cfg.MaxMessageBytes
		}
		return -1
	})
	if err != nil {
		fail(http.StatusBadRequest, fmt.Errorf("reading the snapshot message: %w", err))
		return
	}
	m, err := decodeMessage(payload)
	if err == nil && (m.GetType() != raftpb.MsgSnap || m.GetFrom() != from || m.GetTo() != t.cfg.LocalID) {
		err = fmt.Errorf("%w: expected a MsgSnap from %s to %s, got %s from %s to %s", errProtocol, label,
			formatID(t.cfg.LocalID), m.GetType(), formatID(m.GetFrom()), formatID(m.GetTo()))
	}
	if err != nil {
		fail(http.StatusBadRequest, err)
		return
	}
	index := m.GetSnapshot().GetMetadata().GetIndex()
	sr := &snapshotReader{fr: fr, declared: declared}
	if err := t.cfg.SnapshotSink.ReceiveSnapshot(m, sr); err != nil {
		fail(http.StatusInternalServerError, fmt.Errorf("storing snapshot %d: %w", index, err))
		return
	}
	if !sr.complete() {
		fail(http.StatusInternalServerError, errSinkShortRead)
		return
	}
	if err := t.cfg.Raft.Process(ctx, m); err != nil {
		fail(http.StatusInternalServerError, fmt.Errorf("raft did not process snapshot %d: %w", index, err))
		return
	}
	met.snapRecvSuccess.WithLabelValues(label).Inc()
	met.snapRecvDuration.WithLabelValues(label).Observe(time.Since(start).Seconds())
	log.Info("received snapshot", "index", index, "bytes", sr.n, "duration", time.Since(start).Round(time.Millisecond))
	w.WriteHeader(http.StatusNoContent)
}

// snapshotReader yields the data frames of a snapshot transfer. It returns
// io.EOF only at an end frame whose checksum and length match what was read
// (and the announced size, if any); a transfer cut short returns
// io.ErrUnexpectedEOF or the connection's error.
type snapshotReader struct {
	fr       *frameReader
	declared int64
	cur      []byte // unread part of the current data frame
	crc      uint32
	n        int64
	err      error // sticky
}

func (s *snapshotReader) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		s.err = s.nextFrame()
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

func (s *snapshotReader) nextFrame() error {
	typ, payload, err := s.fr.next(func(typ byte) int {
		switch typ {
		case frameData:
			return maxDataFrameLen
		case frameEnd:
			return endLen
		}
		return -1
	})
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("receiving snapshot data: %w", err)
	}
	if typ == frameData {
		s.cur = payload
		s.crc = crc32.Update(s.crc, castagnoli, payload)
		s.n += int64(len(payload))
		if s.declared >= 0 && s.n > s.declared {
			return fmt.Errorf("%w: more snapshot data than the announced %d bytes", errProtocol, s.declared)
		}
		return nil
	}
	if len(payload) != endLen {
		return fmt.Errorf("%w: end frame of %d bytes", errProtocol, len(payload))
	}
	crc, total := binary.BigEndian.Uint32(payload), int64(binary.BigEndian.Uint64(payload[4:]))
	switch {
	case total != s.n:
		return fmt.Errorf("%w: received %d bytes of snapshot data, the sender sent %d", errProtocol, s.n, total)
	case s.declared >= 0 && total != s.declared:
		return fmt.Errorf("%w: received %d bytes of snapshot data, the sender announced %d", errProtocol, s.n, s.declared)
	case crc != s.crc:
		return fmt.Errorf("%w: snapshot data checksum mismatch", errProtocol)
	}
	return io.EOF
}

// complete reports whether the whole snapshot was read and verified.
func (s *snapshotReader) complete() bool { return len(s.cur) == 0 && s.err == io.EOF }
