package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/freeport"
)

func TestDeliveryInOrder(t *testing.T) {
	a := startMember(t, fastConfig(1, nil))
	b := startMember(t, fastConfig(2, nil))
	connect(t, a, b)

	const n = 2000
	for i := 0; i < n; i += 10 {
		var batch []*raftpb.Message
		for j := i; j < i+10; j++ {
			batch = append(batch, msgApp(1, 2, uint64(j), []byte(fmt.Sprint("entry ", j))))
		}
		a.tr.Send(batch)
		// Keep within the queue so that nothing is dropped.
		waitFor(t, "queue room", func() bool { return queueLen(a.tr, 2) < 1000 })
	}
	b.tr.Send([]*raftpb.Message{msgApp(2, 1, 7, nil)})

	waitFor(t, "all messages at b", func() bool { return len(b.raft.received()) == n })
	for i, m := range b.raft.received() {
		if m.GetIndex() != uint64(i) || m.GetFrom() != 1 || m.GetTo() != 2 || m.GetType() != raftpb.MsgApp {
			t.Fatalf("message %d: got %v", i, m)
		}
		if want := fmt.Sprint("entry ", i); string(m.GetEntries()[0].GetData()) != want {
			t.Fatalf("message %d: data %q, want %q", i, m.GetEntries()[0].GetData(), want)
		}
	}
	waitFor(t, "the message at a", func() bool { return len(a.raft.received()) == 1 })
	if got := a.raft.received()[0]; got.GetIndex() != 7 || got.GetFrom() != 2 {
		t.Fatalf("a received %v", got)
	}
}

func queueLen(tr *Transport, id uint64) int {
	tr.mu.RLock()
	p := tr.mu.peers[id]
	tr.mu.RUnlock()
	p.q.mu.Lock()
	defer p.q.mu.Unlock()
	return p.q.mu.bulk.len() + p.q.mu.urgent.len()
}

func peerOf(tr *Transport, id uint64) *peer {
	tr.mu.RLock()
	defer tr.mu.RUnlock()
	return tr.mu.peers[id]
}

// TestBatching holds the receiver so that messages pile up behind a stream
// whose socket is full, then checks that the backlog leaves in few writes.
func TestBatching(t *testing.T) {
	cfg := fastConfig(1, nil)
	cfg.KeepaliveInterval = time.Hour // no pings among the counted writes
	cfg.WriteTimeout = time.Hour
	a := startMember(t, cfg)
	bcfg := fastConfig(2, nil)
	bcfg.KeepaliveInterval = time.Hour
	b := startMember(t, bcfg)
	connect(t, a, b)

	gate := make(chan struct{})
	b.raft.setGate(gate)
	payload := make([]byte, 4<<10)
	sent := 0
	// Send until the writer is stuck on a full socket and a backlog forms.
	waitFor(t, "a backlog of 1000 messages", func() bool {
		var batch []*raftpb.Message
		for range 100 {
			batch = append(batch, msgApp(1, 2, uint64(sent), payload))
			sent++
		}
		a.tr.Send(batch)
		return queueLen(a.tr, 2) >= 1000
	})
	if n := queueLen(a.tr, 2); n >= a.tr.cfg.QueueMessages {
		t.Fatalf("backlog of %d reached the queue limit; the test needs no drops", n)
	}
	backlog := queueLen(a.tr, 2)
	writesBefore := peerOf(a.tr, 2).writes.Load()
	close(gate)
	waitFor(t, "all messages at b", func() bool { return len(b.raft.received()) == sent })
	writes := peerOf(a.tr, 2).writes.Load() - writesBefore
	// 1000+ messages of 4 KiB fit in a handful of 1 MiB batches; one more
	// write may have been in progress when the backlog was measured.
	maxWrites := int64(backlog*(4<<10+100)/maxBatchBytes + 2)
	if writes > maxWrites {
		t.Fatalf("the backlog of %d messages took %d writes, want at most %d", backlog, writes, maxWrites)
	}
	for i, m := range b.raft.received() {
		if m.GetIndex() != uint64(i) {
			t.Fatalf("message %d has index %d", i, m.GetIndex())
		}
	}
}

// TestUrgentOvertakesBulk checks that a heartbeat queued behind a backlog of
// MsgApp leaves first.
func TestUrgentOvertakesBulk(t *testing.T) {
	q := newSendQueue(100, 1<<20)
	q.setOpen(true)
	for i := range 10 {
		if err := q.push(msgApp(1, 2, uint64(i), nil), 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.push(heartbeat(1, 2), 10); err != nil {
		t.Fatal(err)
	}
	got := q.drain(nil, maxBatchBytes)
	if len(got) != 11 || got[0].GetType() != raftpb.MsgHeartbeat {
		t.Fatalf("drain returned %d messages, first %v", len(got), got[0].GetType())
	}
	for i, m := range got[1:] {
		if m.GetIndex() != uint64(i) {
			t.Fatalf("bulk message %d has index %d", i, m.GetIndex())
		}
	}
}

func TestQueueBounds(t *testing.T) {
	q := newSendQueue(4, 1000)
	if err := q.push(msgApp(1, 2, 0, nil), 10); !errors.Is(err, errNotConnected) {
		t.Fatalf("push to a closed queue: %v", err)
	}
	q.setOpen(true)
	// A single message over the byte budget still goes into an empty queue.
	if err := q.push(msgApp(1, 2, 0, nil), 5000); err != nil {
		t.Fatal(err)
	}
	if err := q.push(msgApp(1, 2, 1, nil), 10); !errors.Is(err, errQueueFull) {
		t.Fatalf("push beyond the byte budget: %v", err)
	}
	q.drain(nil, maxBatchBytes)
	for i := range 4 {
		if err := q.push(msgApp(1, 2, uint64(i), nil), 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.push(msgApp(1, 2, 4, nil), 10); !errors.Is(err, errQueueFull) {
		t.Fatalf("push beyond the message limit: %v", err)
	}
	// Urgent messages have their own budget.
	if err := q.push(heartbeat(1, 2), 10); err != nil {
		t.Fatalf("heartbeat into a queue full of MsgApp: %v", err)
	}
	if n := q.setOpen(false); n != 5 {
		t.Fatalf("closing dropped %d messages, want 5", n)
	}
}

func TestReconnectAfterPeerComesUp(t *testing.T) {
	a := startMember(t, fastConfig(1, nil))
	addr := freeport.Addr(t)
	a.tr.AddPeer(2, []string{"http://" + addr})

	// The peer is down: messages are dropped and raft hears about it.
	waitFor(t, "a failed dial", func() bool {
		st, _ := a.tr.PeerStatus(2)
		return st.LastError != nil
	})
	a.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, nil)})
	waitFor(t, "ReportUnreachable(2)", func() bool { return a.raft.unreachableCount(2) > 0 })

	// The peer comes up at that address.
	for round := range 2 {
		b := startMemberAt(t, fastConfig(2, nil), addr)
		waitActive(t, a, 2)
		a.tr.Send([]*raftpb.Message{msgApp(1, 2, uint64(100+round), nil)})
		waitFor(t, "delivery after reconnect", func() bool { return len(b.raft.received()) == 1 })
		if got := b.raft.received()[0].GetIndex(); got != uint64(100+round) {
			t.Fatalf("received index %d", got)
		}
		// And goes down again; a notices and reconnects to the next one.
		b.close()
		waitFor(t, "a to notice the peer is gone", func() bool { return a.tr.ActiveSince(2).IsZero() })
	}
}

// startMemberAt serves a member on a given address (a restarted peer).
func startMemberAt(t *testing.T, cfg Config, addr string) *member {
	t.Helper()
	var l net.Listener
	waitFor(t, "listening on "+addr, func() bool {
		var err error
		l, err = net.Listen("tcp", addr)
		return err == nil
	})
	m := &member{id: cfg.LocalID, raft: newFakeRaft(), logs: &syncBuffer{}}
	cfg.Raft = m.raft
	m.tr = New(cfg)
	mux := http.NewServeMux()
	mux.Handle(PathPrefix+"/", m.tr.Handler())
	m.srv = httptest.NewUnstartedServer(mux)
	m.srv.Listener.Close()
	m.srv.Listener = l
	m.srv.Start()
	m.url = m.srv.URL
	t.Cleanup(m.close)
	return m
}

func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	cfg := fastConfig(1, nil)
	cfg.QueueMessages = 32
	cfg.WriteTimeout = time.Hour // the stuck stream must stay up for the test
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	a := startMember(t, cfg)
	b := startMember(t, fastConfig(2, nil))
	connect(t, a, b)

	gate := make(chan struct{})
	b.raft.setGate(gate)
	payload := make([]byte, 64<<10)
	// Far more than the socket buffers and the queue hold. Send must return
	// every time; if it blocked, this loop would never end and the test
	// would time out.
	sent := 0
	waitFor(t, "drops reported to raft", func() bool {
		msgs := make([]*raftpb.Message, 64)
		for i := range msgs {
			msgs[i] = msgApp(1, 2, uint64(sent), payload)
			sent++
		}
		a.tr.Send(msgs)
		return a.raft.unreachableCount(2) > 0
	})
	if n := queueLen(a.tr, 2); n > cfg.QueueMessages {
		t.Fatalf("queue holds %d messages, limit %d", n, cfg.QueueMessages)
	}
	if f := counterValue(t, a.tr.metrics.sentFailures.WithLabelValues("2")); f == 0 {
		t.Fatal("etcd_network_peer_sent_failures_total did not count the drops")
	}
	close(gate)
	// Once the peer reads again, what was kept arrives in order, with gaps
	// where messages were dropped.
	waitFor(t, "the backlog to drain", func() bool { return queueLen(a.tr, 2) == 0 })
	a.tr.Send([]*raftpb.Message{msgApp(1, 2, uint64(sent), nil)})
	waitFor(t, "the last message", func() bool {
		got := b.raft.received()
		return len(got) > 0 && got[len(got)-1].GetIndex() == uint64(sent)
	})
	got := b.raft.received()
	if len(got) >= sent {
		t.Fatalf("received %d of %d messages: nothing was dropped", len(got), sent+1)
	}
	for i := 1; i < len(got); i++ {
		if got[i].GetIndex() <= got[i-1].GetIndex() {
			t.Fatalf("out of order: %d after %d", got[i].GetIndex(), got[i-1].GetIndex())
		}
	}
}

func TestClusterIDMismatchRefused(t *testing.T) {
	var hits atomic.Int64
	cfg := fastConfig(1, nil)
	cfg.MaxRetryRefused = time.Hour
	a := startMember(t, cfg)
	bcfg := fastConfig(2, nil)
	bcfg.ClusterID = 0xbad
	b := startMember(t, bcfg)
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b.tr.Handler().ServeHTTP(w, r)
	}))
	defer counting.Close()

	a.tr.AddPeer(2, []string{counting.URL})
	waitFor(t, "the refusal", func() bool {
		st, _ := a.tr.PeerStatus(2)
		return errors.Is(st.LastError, ErrClusterIDMismatch)
	})
	for range 100 {
		a.tr.Send([]*raftpb.Message{heartbeat(1, 2)})
	}
	a.tr.Stop()
	// The refusal is not retried in a loop, and it is logged once.
	if n := hits.Load(); n != 1 {
		t.Fatalf("the peer was asked %d times, want 1", n)
	}
	if n := strings.Count(a.logs.String(), "cluster ID mismatch"); n != 1 {
		t.Fatalf("the mismatch was logged %d times, want 1:\n%s", n, a.logs.String())
	}
	if len(b.raft.received()) != 0 {
		t.Fatal("messages from another cluster reached raft")
	}

	// What the refusal looks like on the wire.
	req, _ := http.NewRequest(http.MethodPost, b.url+streamPath, strings.NewReader(""))
	setIdentity(req.Header, testCluster, 1, 2)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPreconditionFailed || !strings.Contains(string(body), "cluster ID mismatch") {
		t.Fatalf("got %s %q", resp.Status, body)
	}
	if got := resp.Header.Get(headerClusterID); got != "bad" {
		t.Fatalf("the refusal names cluster %q, want bad", got)
	}
}

func TestMemberIDMismatchRefused(t *testing.T) {
	cfg := fastConfig(1, nil)
	cfg.MaxRetryRefused = time.Hour
	a := startMember(t, cfg)
	b := startMember(t, fastConfig(3, nil))
	a.tr.AddPeer(2, []string{b.url}) // b is member 3, not 2
	waitFor(t, "the refusal", func() bool {
		st, _ := a.tr.PeerStatus(2)
		return errors.Is(st.LastError, ErrMemberIDMismatch)
	})
}

func TestRemovedMemberRefused(t *testing.T) {
	cfg := fastConfig(1, nil)
	cfg.MaxRetryRefused = time.Hour
	a := startMember(t, cfg)
	b := startMember(t, fastConfig(2, nil))
	b.raft.setRemoved(1)
	a.tr.AddPeer(2, []string{b.url})
	select {
	case <-a.tr.Removed():
	case <-time.After(20 * time.Second):
		t.Fatal("a was not told it was removed")
	}
	if st, _ := a.tr.PeerStatus(2); !errors.Is(st.LastError, ErrMemberRemoved) {
		t.Fatalf("last error %v", st.LastError)
	}
	if !a.tr.ActiveSince(2).IsZero() {
		t.Fatal("a stream from a removed member was accepted")
	}
}

// TestRemovedWhileStreaming removes the sender while its stream is open: the
// receiver drops the stream and processes nothing more from it.
func TestRemovedWhileStreaming(t *testing.T) {
	a := startMember(t, fastConfig(1, nil))
	b := startMember(t, fastConfig(2, nil))
	connect(t, a, b)
	a.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, nil)})
	waitFor(t, "the first message", func() bool { return len(b.raft.received()) == 1 })
	b.raft.setRemoved(1)
	a.tr.Send([]*raftpb.Message{msgApp(1, 2, 2, nil)})
	select {
	case <-a.tr.Removed():
	case <-time.After(20 * time.Second):
		t.Fatal("a was not told it was removed")
	}
	if n := len(b.raft.received()); n != 1 {
		t.Fatalf("b processed %d messages, want 1", n)
	}
}

func TestPeerURLFallback(t *testing.T) {
	a := startMember(t, fastConfig(1, nil))
	b := startMember(t, fastConfig(2, nil))
	a.tr.AddPeer(2, []string{"http://" + freeport.Addr(t), b.url + "/"})
	waitActive(t, a, 2)
	if st, _ := a.tr.PeerStatus(2); st.URL != b.url {
		t.Fatalf("connected through %q, want %q", st.URL, b.url)
	}
	// UpdatePeer moves the stream to the new URL list.
	c := startMember(t, fastConfig(2, nil))
	a.tr.UpdatePeer(2, []string{c.url})
	waitFor(t, "the stream to move", func() bool {
		st, _ := a.tr.PeerStatus(2)
		return st.URL == c.url && !st.ActiveSince.IsZero()
	})
	a.tr.Send([]*raftpb.Message{msgApp(1, 2, 5, nil)})
	waitFor(t, "delivery to the new URL", func() bool { return len(c.raft.received()) == 1 })

	a.tr.RemovePeer(2)
	if _, ok := a.tr.PeerStatus(2); ok {
		t.Fatal("a removed peer still has a status")
	}
	a.tr.Send([]*raftpb.Message{msgApp(1, 2, 6, nil)}) // dropped, no panic
}

func TestTLS(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	srv.StartTLS()
	bRaft := newFakeRaft()
	bcfg := fastConfig(2, bRaft)
	bcfg.ServerTLS = srv.TLS
	b := New(bcfg)
	mux.Handle(PathPrefix+"/", b.Handler())
	defer func() { b.Stop(); srv.Close() }()

	// a trusts the test server's certificate.
	acfg := fastConfig(1, newFakeRaft())
	acfg.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
	a := New(acfg)
	defer a.Stop()
	a.AddPeer(2, []string{srv.URL})
	waitFor(t, "a TLS stream", func() bool { return !a.ActiveSince(2).IsZero() })
	a.Send([]*raftpb.Message{msgApp(1, 2, 9, nil)})
	waitFor(t, "delivery over TLS", func() bool { return len(bRaft.received()) == 1 })

	// The same handler behind a plaintext listener refuses requests.
	plain := httptest.NewServer(mux)
	defer plain.Close()
	req, _ := http.NewRequest(http.MethodPost, plain.URL+streamPath, strings.NewReader(""))
	setIdentity(req.Header, testCluster, 1, 2)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get(headerRefusal) != refusalTLSRequired {
		t.Fatalf("plaintext request to a TLS member: %s", resp.Status)
	}
}

func TestKeepaliveDetectsSilentPeer(t *testing.T) {
	cfg := fastConfig(1, nil)
	cfg.KeepaliveInterval = 20 * time.Millisecond
	a := startMember(t, cfg)
	// A peer that accepts the stream and then never answers a ping.
	var accepted atomic.Int64
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accepted.Add(1)
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer silent.Close()
	a.tr.AddPeer(2, []string{silent.URL})
	waitFor(t, "the silent stream to be dropped", func() bool {
		st, _ := a.tr.PeerStatus(2)
		return errors.Is(st.LastError, errPeerSilent)
	})
	waitFor(t, "a reconnect", func() bool { return accepted.Load() >= 2 })
	a.tr.Stop()
}

func TestRoundTripMetric(t *testing.T) {
	cfg := fastConfig(1, nil)
	cfg.KeepaliveInterval = 5 * time.Millisecond
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	a := startMember(t, cfg)
	b := startMember(t, fastConfig(2, nil))
	connect(t, a, b)
	waitFor(t, "a round-trip sample", func() bool {
		return histogramSamples(t, reg, "etcd_network_peer_round_trip_time_seconds") > 0
	})
	a.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, make([]byte, 1000))})
	waitFor(t, "delivery", func() bool { return len(b.raft.received()) == 1 })
	if v := counterValue(t, a.tr.metrics.sentBytes.WithLabelValues("2")); v < 1000 {
		t.Fatalf("sent bytes %v", v)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func histogramSamples(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}
