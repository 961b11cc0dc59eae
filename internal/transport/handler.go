package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

var errReplaced = errors.New("replaced by a newer stream from the same peer")

// unknownPeer labels the metrics of requests refused before their sender was
// trusted: labelling them with a claimed ID would let anyone who can reach
// the port grow the metrics without bound.
const unknownPeer = "unknown"

// inboundStream is a stream some peer opened to this member.
type inboundStream struct {
	cancel context.CancelCauseFunc
}

// Handler returns the handler for requests from peers. It serves paths
// under PathPrefix and answers 404 to anything else; mount it with
// mux.Handle(transport.PathPrefix+"/", t.Handler()). Streams stay open for as
// long as the peer keeps them open, so the server it is mounted on must not
// bound a request's total duration (its ReadTimeout and WriteTimeout are
// overridden per read and write on the transport's own connections).
func (t *Transport) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case streamPath:
			t.serveStream(w, r)
		case snapshotPath:
			t.serveSnapshot(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// refuse answers a request with a plain-text error and a machine-readable
// reason.
func refuse(w http.ResponseWriter, status int, reason, msg string) {
	if reason != "" {
		w.Header().Set(headerRefusal, reason)
	}
	http.Error(w, msg, status)
}

// admit checks who sent r. It answers and returns ok=false if the request is
// refused; otherwise the caller handles it and must call t.wg.Done.
func (t *Transport) admit(w http.ResponseWriter, r *http.Request) (from uint64, ok bool) {
	w.Header().Set(headerClusterID, formatID(t.cfg.ClusterID))
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "transport: method not allowed", http.StatusMethodNotAllowed)
		return 0, false
	}
	if t.cfg.ServerTLS != nil && r.TLS == nil {
		refuse(w, http.StatusForbidden, refusalTLSRequired, ErrTLSRequired.Error())
		return 0, false
	}
	var ids [3]uint64
	for i, h := range []string{headerClusterID, headerFrom, headerTo} {
		id, err := parseID(r.Header.Get(h))
		if err != nil {
			http.Error(w, fmt.Sprintf("transport: bad %s header: %v", h, err), http.StatusBadRequest)
			return 0, false
		}
		ids[i] = id
	}
	cid, from, to := ids[0], ids[1], ids[2]
	if cid != t.cfg.ClusterID {
		t.log.Warn("refused a request from another cluster", "peer", formatID(from),
			"remote_cluster", formatID(cid), "cluster", formatID(t.cfg.ClusterID), "remote_addr", r.RemoteAddr)
		t.metrics.recvFailures.WithLabelValues(unknownPeer).Inc()
		refuse(w, http.StatusPreconditionFailed, refusalClusterMismatch, fmt.Sprintf("%s: this member is in cluster %s, the request is from cluster %s",
			ErrClusterIDMismatch, formatID(t.cfg.ClusterID), formatID(cid)))
		return 0, false
	}
	if to != t.cfg.LocalID {
		t.log.Warn("refused a request meant for another member", "peer", formatID(from), "to", formatID(to))
		t.metrics.recvFailures.WithLabelValues(unknownPeer).Inc()
		refuse(w, http.StatusPreconditionFailed, refusalMemberMismatch, fmt.Sprintf("%s: this member is %s, the request is for %s",
			ErrMemberIDMismatch, formatID(t.cfg.LocalID), formatID(to)))
		return 0, false
	}
	if t.cfg.Raft.IsIDRemoved(from) {
		t.log.Warn("refused a request from a removed member", "peer", formatID(from))
		t.metrics.recvFailures.WithLabelValues(formatID(from)).Inc()
		refuse(w, http.StatusGone, refusalRemoved, ErrMemberRemoved.Error())
		return 0, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.stopped {
		http.Error(w, ErrStopped.Error(), http.StatusServiceUnavailable)
		return 0, false
	}
	t.wg.Add(1)
	return from, true
}

// serveStream receives one peer's stream: frames of raft messages, handed to
// Raft.Process in order, and pings, answered on the response body.
func (t *Transport) serveStream(w http.ResponseWriter, r *http.Request) {
	from, ok := t.admit(w, r)
	if !ok {
		return
	}
	defer t.wg.Done()
	label := formatID(from)
	log := t.log.With("peer", label)
	rc := http.NewResponseController(w)
	// HTTP/1 servers otherwise stop the request body once the response
	// starts; HTTP/2 is always full duplex.
	if err := rc.EnableFullDuplex(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		http.Error(w, fmt.Sprintf("transport: full duplex: %v", err), http.StatusInternalServerError)
		return
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	stopOnStop := context.AfterFunc(t.ctx, func() { cancel(ErrStopped) })
	defer stopOnStop()

	// One stream per sender: a peer that reconnects after a failure it saw
	// first retires the old stream instead of leaving it to time out.
	in := &inboundStream{cancel: cancel}
	t.mu.Lock()
	old := t.mu.inbound[from]
	t.mu.inbound[from] = in
	t.mu.Unlock()
	if old != nil {
		old.cancel(errReplaced)
	}
	defer func() {
		t.mu.Lock()
		if t.mu.inbound[from] == in {
			delete(t.mu.inbound, from)
		}
		t.mu.Unlock()
	}()

	body := newDeadlineReader(ctx, r.Body, rc, IdleIntervals*t.cfg.KeepaliveInterval)
	defer body.release()
	w.Header().Set("Content-Type", contentTypeStream)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	log.Debug("accepted stream from peer", "remote_addr", r.RemoteAddr)

	fr := newFrameReader(body)
	limit := func(typ byte) int {
		switch typ {
		case frameMessage:
			return t.cfg.MaxMessageBytes
		case framePing:
			return pingLen
		}
		return -1
	}
	received, recvBytes := int64(0), t.metrics.recvBytes.WithLabelValues(label)
	for {
		typ, payload, err := fr.next(limit)
		recvBytes.Add(float64(fr.n - received))
		received = fr.n
		if err != nil {
			t.logStreamEnd(ctx, log, label, err)
			return
		}
		switch typ {
		case framePing:
			var pong [frameHeaderLen + pingLen]byte
			appendFrameHeader(pong[:0], framePong, pingLen)
			copy(pong[frameHeaderLen:], payload)
			_ = rc.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
			if _, err := w.Write(pong[:]); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		case frameMessage:
			m, err := decodeMessage(payload)
			switch {
			case err != nil:
			case m.GetFrom() != from || m.GetTo() != t.cfg.LocalID:
				err = fmt.Errorf("%w: message from %s to %s on the stream from %s to %s", errProtocol,
					formatID(m.GetFrom()), formatID(m.GetTo()), label, formatID(t.cfg.LocalID))
			case m.GetType() == raftpb.MsgSnap:
				// Its data comes only on the snapshot endpoint: raft would
				// take the snapshot and the member fail to install it.
				err = fmt.Errorf("%w: a MsgSnap on the message stream", errProtocol)
			}
			if err != nil {
				t.logStreamEnd(ctx, log, label, err)
				return
			}
			if t.cfg.Raft.IsIDRemoved(from) {
				log.Warn("closing the stream from a removed member")
				return
			}
			if err := t.cfg.Raft.Process(ctx, m); err != nil {
				if ctx.Err() != nil {
					return
				}
				t.metrics.recvFailures.WithLabelValues(label).Inc()
				log.Debug("raft did not process a message", "type", m.GetType(), "err", err)
			}
		}
	}
}

// logStreamEnd logs why an inbound stream ended, loudly only when the peer
// broke the protocol: connections end all the time in a cluster.
func (t *Transport) logStreamEnd(ctx context.Context, log *slog.Logger, label string, err error) {
	if c := context.Cause(ctx); c != nil {
		log.Debug("stream from peer closed", "reason", c)
		return
	}
	if errors.Is(err, errProtocol) || errors.Is(err, ErrMessageTooLarge) {
		t.metrics.recvFailures.WithLabelValues(label).Inc()
		log.Warn("closing a stream that broke the protocol", "err", err)
		return
	}
	log.Debug("stream from peer ended", "err", err)
}

// deadlineReader reads a request body with a fresh read deadline before each
// read, so that a silent peer (or a stalled snapshot) is noticed, and lets
// the transport's shutdown interrupt a blocked read.
type deadlineReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	stop    func() bool

	mu      sync.Mutex
	stopped error // set once interrupted; reads fail with it
}

func newDeadlineReader(ctx context.Context, r io.Reader, rc *http.ResponseController, timeout time.Duration) *deadlineReader {
	d := &deadlineReader{r: r, rc: rc, timeout: timeout}
	d.stop = context.AfterFunc(ctx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.stopped = context.Cause(ctx)
		// A deadline in the past wakes a read that is blocked right now;
		// the mutex orders it after any deadline a reader just set.
		_ = rc.SetReadDeadline(time.Now())
	})
	return d
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.mu.Lock()
	if d.stopped != nil {
		d.mu.Unlock()
		return 0, d.stopped
	}
	_ = d.rc.SetReadDeadline(time.Now().Add(d.timeout))
	d.mu.Unlock()
	return d.r.Read(p)
}

// release detaches the reader from its context.
func (d *deadlineReader) release() { d.stop() }
