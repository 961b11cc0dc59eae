package crash

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cairn-db/cairn/internal/freeport"
)

// readyTimeout bounds how long a started process may take to answer; it is
// a failure deadline, not a wait.
const readyTimeout = 60 * time.Second

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
		buildDir, buildErr = os.MkdirTemp("", "cairn-crashtest-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "cairn")
		pkg := "github.com/cairn-db/cairn/cmd/cairn"
		if os.Getenv("CAIRN_CRASH_ORACLE") == "etcd" {
			pkg = "./testdata/etcdserver"
		}
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", binPath, pkg)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("cannot build the cairn binary: %v", buildErr)
	}
	return binPath
}

// proc is one running cairn process.
type proc struct {
	t       testing.TB
	cmd     *exec.Cmd
	logPath string
	addr    string // host:port of the client URL
	exited  chan struct{}
	waitErr error // set before exited is closed
	conn    *grpc.ClientConn
	kv      pb.KVClient
}

// startProc starts cairn on dataDir, serving clients on a free 127.0.0.1 port,
// with its output in logName under the test's temporary directory. It does
// not wait for the process to answer; see waitReady.
func startProc(t testing.TB, dataDir, logName string) *proc {
	t.Helper()
	bin := cairnBinary(t)
	addr := freeport.Addr(t)
	url := "http://" + addr
	logPath := filepath.Join(t.TempDir(), logName)
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--name", "n1",
		"--data-dir", dataDir,
		"--listen-client-urls", url,
		"--advertise-client-urls", url,
		// A single member never dials its peer URL; any free port will do,
		// and etcd's default (2380) may be taken by another test or server.
		"--listen-peer-urls", "http://127.0.0.1:0",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = childEnv()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start cairn: %v", err)
	}
	p := &proc{t: t, cmd: cmd, logPath: logPath, addr: addr, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if p.conn != nil {
			p.conn.Close()
		}
	})
	return p
}

// childEnv is this process's environment without CAIRN_ variables: the
// test's own knobs (CAIRN_CRASH_CYCLES) must not reach the server, which
// reads CAIRN_* as its configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAIRN_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitReady polls until the process answers a linearizable Range, which
// on a restarted member also means it has replayed what it committed.
func (p *proc) waitReady() {
	p.t.Helper()
	conn, err := grpc.NewClient(p.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
	)
	if err != nil {
		p.t.Fatalf("dial %s: %v", p.addr, err)
	}
	p.conn, p.kv = conn, pb.NewKVClient(conn)
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := p.kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready?")})
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			p.t.Fatalf("cairn exited before answering (%v); its output:\n%s", p.waitErr, p.output())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("cairn does not answer on %s after %v (last error: %v); its output:\n%s", p.addr, readyTimeout, err, p.output())
		}
		<-tick.C
	}
}

// kill sends SIGKILL and waits for the process to be gone. It is a no-op
// on a process that has exited.
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("kill cairn: %v", err)
	}
	<-p.exited
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}

// waitExit waits for the process to exit on its own and returns its error
// (nil for exit status 0).
func (p *proc) waitExit(timeout time.Duration) (exited bool, err error) {
	select {
	case <-p.exited:
		return true, p.waitErr
	case <-time.After(timeout):
		return false, nil
	}
}

// output returns the process's output so far, its last 8 KiB at most.
func (p *proc) output() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	const max = 8 << 10
	if len(b) > max {
		return fmt.Sprintf("...[%d bytes cut]\n%s", len(b)-max, b[len(b)-max:])
	}
	return string(b)
}
