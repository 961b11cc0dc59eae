package process

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit/proc"
)

// TestMain lets the test binary serve as the cairn members the tests start;
// see tests/kit/proc.
func TestMain(m *testing.M) { proc.Main(m) }

// member is one cluster member: its identity and addresses, which survive
// restarts, and the process currently running it, if any.
type member struct {
	name      string
	dataDir   string
	clientURL string
	peerURL   string
	logDir    string
	starts    int // processes started so far, for log file names

	mu   sync.Mutex
	proc *proc.Process // nil when not running
	last *proc.Process // the latest process started, running or not
}

func newMember(t testing.TB, name string) *member {
	return &member{
		name:      name,
		dataDir:   filepath.Join(t.TempDir(), name+".cairn"),
		clientURL: "http://" + freeport.Addr(t),
		peerURL:   "http://" + freeport.Addr(t),
		logDir:    t.TempDir(),
	}
}

// start starts a process for m with etcd's clustering flags. state is
// --initial-cluster-state ("new" or "existing"), initialCluster the
// --initial-cluster list; both only matter on a new data directory. It does
// not wait for the member to serve.
func (m *member) start(t testing.TB, initialCluster, state, token string) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		t.Fatalf("member %s is already running", m.name)
	}
	m.starts++
	p := proc.Start(t, proc.Cairn, m.logPath(m.starts),
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", m.clientURL,
		"--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL,
		"--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", initialCluster,
		"--initial-cluster-state", state,
		"--initial-cluster-token", token,
		"--heartbeat-interval", "100",
		"--election-timeout", "1000",
		// Compact the raft log often and keep little of it, so a member
		// that was down or joins late catches up from a snapshot, not
		// only from the log.
		"--snapshot-count", "300",
		"--snapshot-catchup-entries", "50",
		"--log-level", "info",
	)
	m.proc, m.last = p, p
}

// logPath is where the output of m's nth process goes.
func (m *member) logPath(n int) string {
	return filepath.Join(m.logDir, fmt.Sprintf("%s-%d.log", m.name, n))
}

// running returns the current process, nil if none.
func (m *member) running() *proc.Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// kill sends SIGKILL to the running process and waits for it to be gone.
func (m *member) kill(t testing.TB) {
	m.signal(t, syscall.SIGKILL, time.Minute)
}

// stop asks the running process to stop gracefully (SIGTERM) and waits for
// it to exit.
func (m *member) stop(t testing.TB) {
	m.signal(t, syscall.SIGTERM, time.Minute)
}

func (m *member) signal(t testing.TB, sig syscall.Signal, timeout time.Duration) {
	t.Helper()
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.Stop(sig, timeout); err != nil {
		t.Errorf("member %s: %v", m.name, err)
	}
}

// exitedEarly reports a process that exited without being told to, with
// its error.
func (m *member) exitedEarly() (bool, error) {
	p := m.running()
	if p == nil {
		return false, nil
	}
	select {
	case <-p.Exited():
		return true, p.Err()
	default:
		return false, nil
	}
}

// countInLogs counts the lines of all of m's process logs that contain s.
func (m *member) countInLogs(s string) int {
	m.mu.Lock()
	n := m.starts
	m.mu.Unlock()
	count := 0
	for i := 1; i <= n; i++ {
		b, err := os.ReadFile(m.logPath(i))
		if err == nil {
			count += strings.Count(string(b), s)
		}
	}
	return count
}

// output returns the tail of the output of m's latest process.
func (m *member) output() string {
	m.mu.Lock()
	last := m.last
	m.mu.Unlock()
	if last == nil {
		return "(never started)"
	}
	return last.Output(6 << 10)
}
