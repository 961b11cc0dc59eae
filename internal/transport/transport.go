package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Raft is the member's raft node as the transport sees it. Every method may
// be called from several transport goroutines at once, never from the
// goroutine that called Send, and must return once the node has stopped.
type Raft interface {
	// Process hands a received message to the raft node. It may block (the
	// stream it came from then stops reading, which is the backpressure the
	// sender sees) but must return when ctx is done.
	Process(ctx context.Context, m *raftpb.Message) error
	// IsIDRemoved reports whether id was removed from the cluster. It is
	// called for every received message, so it must be cheap.
	IsIDRemoved(id uint64) bool
	// ReportUnreachable tells raft that messages to id were lost.
	ReportUnreachable(id uint64)
	// ReportSnapshot tells raft how a snapshot transfer to id ended.
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
}

// SnapshotSource provides the data of the snapshots this member sends.
type SnapshotSource interface {
	// OpenSnapshot returns the data of the snapshot at index, the index of a
	// MsgSnap being sent, and its size in bytes, or -1 if unknown. The
	// transport reads it to the end (or until the transfer fails) and closes
	// it. It is called on a transport goroutine, one per transfer.
	OpenSnapshot(index uint64) (io.ReadCloser, int64, error)
}

// SnapshotSink receives the data of snapshots sent to this member.
type SnapshotSink interface {
	// ReceiveSnapshot consumes the data of the snapshot m (a MsgSnap) from r,
	// which returns io.EOF only after the whole data arrived and its checksum
	// matched; any other error means the transfer failed and the data must
	// be discarded. ReceiveSnapshot must read r to io.EOF before returning
	// nil. The transport calls Raft.Process with m only after it returned
	// nil.
	ReceiveSnapshot(m *raftpb.Message, r io.Reader) error
}

// Config configures a Transport. Zero durations and limits take the
// defaults named on each field.
type Config struct {
	// LocalID and ClusterID identify this member on every request; a peer
	// of another cluster refuses the requests.
	LocalID, ClusterID uint64
	// Raft receives messages and reports. Required.
	Raft Raft
	// SnapshotSource provides the data of outgoing MsgSnap; nil fails every
	// snapshot send (reported to raft as SnapshotFailure).
	SnapshotSource SnapshotSource
	// SnapshotSink stores incoming snapshots; nil refuses them.
	SnapshotSink SnapshotSink

	// TLS is the client configuration for https:// peer URLs; nil uses the
	// system roots. http:// URLs are dialed in plaintext.
	TLS *tls.Config
	// ServerTLS is the configuration the member's peer listener serves with.
	// The transport does not own that listener; when ServerTLS is non-nil
	// the Handler refuses requests that did not arrive over TLS, so a
	// listener mistakenly left in plaintext fails loudly.
	ServerTLS *tls.Config

	// DialTimeout bounds connecting to a peer and waiting for its answer to
	// a stream request (default 1s).
	DialTimeout time.Duration
	// WriteTimeout bounds one write to a stream: a peer that stops reading
	// for longer is disconnected (default 5s).
	WriteTimeout time.Duration
	// KeepaliveInterval is how often a stream is pinged; a stream that
	// hears nothing for IdleIntervals intervals is torn down, on either side
	// (default 1s). Members of a cluster must use the same value.
	KeepaliveInterval time.Duration
	// SnapshotStallTimeout is how long a snapshot transfer may make no
	// progress before it is aborted, on either side (default 30s).
	SnapshotStallTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// reconnection attempts (defaults 100ms and 2s). A peer that refused us
	// (another cluster, removed, incompatible) is retried after
	// MaxRetryRefused (default 10s).
	MinBackoff, MaxBackoff, MaxRetryRefused time.Duration

	// MaxMessageBytes is the largest encoded message sent or accepted
	// (default 64 MiB). It must be at least raft's largest MsgApp.
	MaxMessageBytes int
	// QueueMessages and QueueBytes bound each peer's send queue (defaults
	// 4096 messages and 64 MiB); beyond them messages are dropped.
	QueueMessages int
	QueueBytes    int64

	// Logger receives the transport's logs; nil discards them.
	Logger *slog.Logger
	// Metrics, if non-nil, registers the etcd_network_* metrics.
	Metrics prometheus.Registerer
}

// IdleIntervals is the number of keepalive intervals without any sign of
// life after which a stream is declared dead.
const IdleIntervals = 5

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DialTimeout, time.Second)
	def(&c.WriteTimeout, 5*time.Second)
	def(&c.KeepaliveInterval, time.Second)
	def(&c.SnapshotStallTimeout, 30*time.Second)
	def(&c.MinBackoff, 100*time.Millisecond)
	def(&c.MaxBackoff, 2*time.Second)
	def(&c.MaxRetryRefused, 10*time.Second)
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 64 << 20
	}
	if c.QueueMessages <= 0 {
		c.QueueMessages = 4096
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Transport carries raft messages between members. All methods are safe for
// concurrent use.
type Transport struct {
	cfg     Config
	label   string // the local ID as metrics and logs print it
	log     *slog.Logger
	metrics *metrics

	// streamClient carries message streams; snapshotClient carries snapshot
	// transfers, which have no response deadline (the receiver answers
	// after it has stored the snapshot).
	streamClient, snapshotClient *http.Client

	ctx    context.Context // canceled by Stop
	cancel context.CancelFunc
	// wg counts the reporter and inbound handlers; peers wait for their own
	// goroutines.
	wg sync.WaitGroup

	removedOnce sync.Once
	removed     chan struct{}

	unreachable struct {
		sync.Mutex
		ids  map[uint64]struct{}
		wake chan struct{}
	}

	mu struct {
		sync.RWMutex
		stopped bool
		peers   map[uint64]*peer
		inbound map[uint64]*inboundStream
	}
}

// New returns a running transport with no peers.
func New(cfg Config) *Transport {
	if cfg.Raft == nil {
		panic("transport: Config.Raft is required")
	}
	cfg.setDefaults()
	t := &Transport{
		cfg:     cfg,
		label:   formatID(cfg.LocalID),
		log:     cfg.Logger.With("local", formatID(cfg.LocalID)),
		metrics: newMetrics(cfg.Metrics),
		removed: make(chan struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.streamClient = &http.Client{Transport: newHTTPTransport(cfg.TLS, cfg.DialTimeout, cfg.DialTimeout+cfg.WriteTimeout)}
	t.snapshotClient = &http.Client{Transport: newHTTPTransport(cfg.TLS, cfg.DialTimeout, 0)}
	t.mu.peers = make(map[uint64]*peer)
	t.mu.inbound = make(map[uint64]*inboundStream)
	t.unreachable.ids = make(map[uint64]struct{})
	t.unreachable.wake = make(chan struct{}, 1)
	t.wg.Add(1)
	go t.reportUnreachableLoop()
	return t
}

// newHTTPTransport returns a client transport that speaks HTTP/1.1 only (see
// the package doc) and keeps no idle connections: every request is a
// long-lived stream or a snapshot, so there is nothing to reuse, and Stop
// leaves no connection goroutines behind.
func newHTTPTransport(tlsCfg *tls.Config, dialTimeout, headerTimeout time.Duration) *http.Transport {
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tlsCfg = tlsCfg.Clone()
	tlsCfg.NextProtos = []string{"http/1.1"}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   dialTimeout,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableKeepAlives:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: headerTimeout,
	}
}

// AddPeer starts maintaining a stream to member id at urls (peer URLs such
// as "http://10.0.0.2:2380", tried in turn). If id is already a peer,
// AddPeer behaves as UpdatePeer. It does nothing after Stop or for the local
// ID.
func (t *Transport) AddPeer(id uint64, urls []string) {
	if id == t.cfg.LocalID || id == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.stopped {
		return
	}
	if p, ok := t.mu.peers[id]; ok {
		p.setURLs(urls)
		return
	}
	p := newPeer(t, id, urls)
	t.mu.peers[id] = p
	p.start()
	t.log.Info("added peer", "peer", formatID(id), "urls", urls)
}

// UpdatePeer replaces the URLs of peer id and reconnects to it. It does
// nothing for an unknown peer.
func (t *Transport) UpdatePeer(id uint64, urls []string) {
	t.mu.RLock()
	p := t.mu.peers[id]
	t.mu.RUnlock()
	if p != nil {
		p.setURLs(urls)
		t.log.Info("updated peer", "peer", formatID(id), "urls", urls)
	}
}

// RemovePeer closes the stream to peer id, aborts a snapshot transfer to it
// and waits for their goroutines, one of which may be inside
// Raft.ReportSnapshot: the caller must not hold up that call. Messages to id
// are dropped from then on.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	p := t.mu.peers[id]
	delete(t.mu.peers, id)
	t.mu.Unlock()
	if p != nil {
		p.stop()
		t.log.Info("removed peer", "peer", formatID(id))
	}
}

// Send queues msgs for their recipients and returns without blocking or
// calling back into Raft, so the raft Ready loop may call it. A message that
// cannot be queued (no stream to its peer, the peer's queue full, or larger
// than MaxMessageBytes) is dropped and, for the first two, the peer is
// reported unreachable soon after from another goroutine. Messages to
// unknown peers are dropped silently. A MsgSnap starts a snapshot transfer
// (see SnapshotSource). Send does not modify msgs, but the transport reads
// the messages after Send returns: the caller must not modify them.
func (t *Transport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		to := m.GetTo()
		if to == 0 || to == t.cfg.LocalID {
			continue
		}
		t.mu.RLock()
		p := t.mu.peers[to]
		t.mu.RUnlock()
		if p == nil {
			continue
		}
		if m.GetType() == raftpb.MsgSnap {
			p.sendSnapshot(m)
			continue
		}
		if err := p.q.push(m, approxSize(m)); err != nil {
			t.metrics.sentFailures.WithLabelValues(p.label).Inc()
			t.markUnreachable(to)
		}
	}
}

// ActiveSince returns when the current stream to peer id was established,
// or the zero time if there is none (or id is not a peer).
func (t *Transport) ActiveSince(id uint64) time.Time {
	st, _ := t.PeerStatus(id)
	return st.ActiveSince
}

// PeerStatus describes the outbound stream to one peer.
type PeerStatus struct {
	// ActiveSince is when the current stream was established, zero if none.
	ActiveSince time.Time
	// URL is the peer URL of the current stream or of the last attempt.
	URL string
	// LastError is why the last stream ended or could not start, nil if it
	// never failed.
	LastError error
}

// PeerStatus returns the status of the stream to peer id; ok is false if id
// is not a peer.
func (t *Transport) PeerStatus(id uint64) (st PeerStatus, ok bool) {
	t.mu.RLock()
	p := t.mu.peers[id]
	t.mu.RUnlock()
	if p == nil {
		return PeerStatus{}, false
	}
	return p.status(), true
}

// Removed returns a channel that is closed once a peer refused this member
// because it was removed from the cluster; the member should then stop.
func (t *Transport) Removed() <-chan struct{} { return t.removed }

// Stop closes every stream, aborts snapshot transfers, makes inbound
// requests return, and waits for every goroutine the transport started.
// Inbound requests arriving afterwards are refused with 503. Stop is
// idempotent.
func (t *Transport) Stop() {
	t.mu.Lock()
	if t.mu.stopped {
		t.mu.Unlock()
		return
	}
	t.mu.stopped = true
	peers := t.mu.peers
	t.mu.peers = map[uint64]*peer{}
	t.mu.Unlock()

	t.cancel()
	for _, p := range peers {
		p.stop()
	}
	t.wg.Wait()
	t.streamClient.CloseIdleConnections()
	t.snapshotClient.CloseIdleConnections()
}

// markUnreachable records that messages to id were lost; the reporter
// goroutine tells raft, once per burst.
func (t *Transport) markUnreachable(id uint64) {
	t.unreachable.Lock()
	t.unreachable.ids[id] = struct{}{}
	t.unreachable.Unlock()
	select {
	case t.unreachable.wake <- struct{}{}:
	default:
	}
}

// reportUnreachableLoop calls Raft.ReportUnreachable outside Send, so that
// a raft implementation that is not reentrant (RawNode under a lock) can
// call Send safely and the caller of Send never waits on raft.
func (t *Transport) reportUnreachableLoop() {
	defer t.wg.Done()
	var ids []uint64
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.unreachable.wake:
		}
		t.unreachable.Lock()
		for id := range t.unreachable.ids {
			ids = append(ids, id)
		}
		clear(t.unreachable.ids)
		t.unreachable.Unlock()
		for _, id := range ids {
			t.mu.RLock()
			_, known := t.mu.peers[id]
			t.mu.RUnlock()
			if known && t.ctx.Err() == nil {
				t.cfg.Raft.ReportUnreachable(id)
			}
		}
		ids = ids[:0]
	}
}

// noteRemoved records that a peer refused us as a removed member.
func (t *Transport) noteRemoved(err error) {
	if errors.Is(err, ErrMemberRemoved) {
		t.removedOnce.Do(func() {
			t.log.Error("a peer reports that this member was removed from the cluster")
			close(t.removed)
		})
	}
}
