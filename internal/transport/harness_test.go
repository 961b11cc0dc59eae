package transport

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/tests/kit"
)

const testCluster = 0xc1

// fakeRaft records what the transport hands to raft.
type fakeRaft struct {
	mu          sync.Mutex
	got         []*raftpb.Message
	removed     map[uint64]bool
	unreachable map[uint64]int
	snapReports []raft.SnapshotStatus
	// gate, if non-nil, blocks Process until it is closed.
	gate chan struct{}
	// onProcess, if set, runs before a message is recorded.
	onProcess func(m *raftpb.Message)
}

func newFakeRaft() *fakeRaft {
	return &fakeRaft{removed: map[uint64]bool{}, unreachable: map[uint64]int{}}
}

func (f *fakeRaft) Process(ctx context.Context, m *raftpb.Message) error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.onProcess != nil {
		f.onProcess(m)
	}
	f.mu.Lock()
	f.got = append(f.got, m)
	f.mu.Unlock()
	return nil
}

func (f *fakeRaft) IsIDRemoved(id uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.removed[id]
}

func (f *fakeRaft) ReportUnreachable(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unreachable[id]++
}

func (f *fakeRaft) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapReports = append(f.snapReports, status)
}

func (f *fakeRaft) setRemoved(id uint64) {
	f.mu.Lock()
	f.removed[id] = true
	f.mu.Unlock()
}

func (f *fakeRaft) setGate(g chan struct{}) {
	f.mu.Lock()
	f.gate = g
	f.mu.Unlock()
}

func (f *fakeRaft) received() []*raftpb.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*raftpb.Message(nil), f.got...)
}

func (f *fakeRaft) unreachableCount(id uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unreachable[id]
}

func (f *fakeRaft) snapshotReports() []raft.SnapshotStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]raft.SnapshotStatus(nil), f.snapReports...)
}

// member is a transport served by an httptest server on 127.0.0.1.
type member struct {
	id   uint64
	raft *fakeRaft
	tr   *Transport
	srv  *httptest.Server
	url  string
	logs *syncBuffer
}

// syncBuffer is a log destination tests can read while the transport logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fastConfig returns a config whose reconnects are quick, for tests.
func fastConfig(id uint64, r Raft) Config {
	return Config{
		LocalID:    id,
		ClusterID:  testCluster,
		Raft:       r,
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	}
}

// startMember starts a transport with cfg (LocalID and Raft taken from it)
// and serves it; stop it with m.close.
func startMember(t *testing.T, cfg Config) *member {
	t.Helper()
	m := &member{id: cfg.LocalID, logs: &syncBuffer{}}
	if cfg.Raft == nil {
		m.raft = newFakeRaft()
		cfg.Raft = m.raft
	} else if fr, ok := cfg.Raft.(*fakeRaft); ok {
		m.raft = fr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(m.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m.tr = New(cfg)
	mux := http.NewServeMux()
	mux.Handle(PathPrefix+"/", m.tr.Handler())
	m.srv = httptest.NewServer(mux)
	m.url = m.srv.URL
	t.Cleanup(m.close)
	return m
}

// close stops the transport first: the server's Close waits for open
// streams, which only the transport ends.
func (m *member) close() {
	m.tr.Stop()
	m.srv.Close()
}

// connect makes a and b peers of each other and waits for both streams.
func connect(t *testing.T, a, b *member) {
	t.Helper()
	a.tr.AddPeer(b.id, []string{b.url})
	b.tr.AddPeer(a.id, []string{a.url})
	waitActive(t, a, b.id)
	waitActive(t, b, a.id)
}

func waitActive(t *testing.T, m *member, peer uint64) {
	t.Helper()
	waitFor(t, "stream from "+formatID(m.id)+" to "+formatID(peer), func() bool {
		return !m.tr.ActiveSince(peer).IsZero()
	})
}

// waitFor is the test kit's WaitFor (tests/kit): it polls cond until it
// holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	kit.WaitFor(t, what, cond)
}

func msgApp(from, to, index uint64, data []byte) *raftpb.Message {
	return &raftpb.Message{
		Type:    raftpb.MsgApp.Enum(),
		From:    &from,
		To:      &to,
		Index:   &index,
		Entries: []*raftpb.Entry{{Index: &index, Data: data}},
	}
}

func heartbeat(from, to uint64) *raftpb.Message {
	return &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: &from, To: &to}
}
