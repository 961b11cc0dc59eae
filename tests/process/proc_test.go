package process

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-db/cairn/internal/freeport"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// cairnBinary builds cmd/cairn once per test binary and returns its path.
func cairnBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "cairn-processtest-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "cairn")
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", binPath, "github.com/cairn-db/cairn/cmd/cairn")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/cairn: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("cannot build the cairn binary: %v", buildErr)
	}
	return binPath
}

// childEnv is this process's environment without CAIRN_ variables: the
// test's own knobs (CAIRN_PROCESS_LONG) must not reach the members, which
// read CAIRN_* as their configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAIRN_") {
			env = append(env, kv)
		}
	}
	return env
}

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
	proc *proc // nil when not running
}

// proc is one cairn process.
type proc struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error // set before exited is closed
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
	logPath := filepath.Join(m.logDir, fmt.Sprintf("%s-%d.log", m.name, m.starts))
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(cairnBinary(t),
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
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = childEnv()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start member %s: %v", m.name, err)
	}
	p := &proc{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	m.proc = p
}

// running returns the current process, nil if none.
func (m *member) running() *proc {
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
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signal member %s: %v", m.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("member %s did not exit within %v of %v", m.name, timeout, sig)
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
	case <-p.exited:
		return true, p.waitErr
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
		b, err := os.ReadFile(filepath.Join(m.logDir, fmt.Sprintf("%s-%d.log", m.name, i)))
		if err == nil {
			count += strings.Count(string(b), s)
		}
	}
	return count
}

// output returns the tail of the output of m's latest process.
func (m *member) output() string {
	m.mu.Lock()
	n := m.starts
	m.mu.Unlock()
	if n == 0 {
		return "(never started)"
	}
	path := filepath.Join(m.logDir, fmt.Sprintf("%s-%d.log", m.name, n))
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	const max = 6 << 10
	if len(b) > max {
		return fmt.Sprintf("...[%d bytes cut; the whole log is %s]\n%s", len(b)-max, path, b[len(b)-max:])
	}
	return string(b)
}
