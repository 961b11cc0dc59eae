package crash

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/proc"
)

// readyTimeout bounds how long a started process may take to answer; it is
// a failure deadline, not a wait.
const readyTimeout = 60 * time.Second

// TestMain lets the test binary serve as the cairn (or etcd) process the
// tests start; see tests/kit/proc.
func TestMain(m *testing.M) { proc.Main(m) }

// server is what the tests run: cairn, or with CAIRN_CRASH_ORACLE=etcd an
// embedded etcd, which checks the tests themselves.
func server() proc.Server {
	if os.Getenv("CAIRN_CRASH_ORACLE") == "etcd" {
		return proc.Etcd
	}
	return proc.Cairn
}

// member is one running server process and a connection to it.
type member struct {
	*proc.Process
	t    testing.TB
	addr string // host:port of the client URL
	conn *grpc.ClientConn
	kv   pb.KVClient
}

// startProc starts the server on dataDir, serving clients on a free
// 127.0.0.1 port, with its output in logName under the test's temporary
// directory. extra flags follow the others. It does not wait for the
// process to answer; see waitReady.
func startProc(t testing.TB, dataDir, logName string, extra ...string) *member {
	t.Helper()
	addr := freeport.Addr(t)
	url := "http://" + addr
	args := []string{
		"--name", "n1",
		"--data-dir", dataDir,
		"--listen-client-urls", url,
		"--advertise-client-urls", url,
		// A single member never dials its peer URL; any free port will do,
		// and etcd's default (2380) may be taken by another test or server.
		"--listen-peer-urls", "http://127.0.0.1:0",
	}
	p := proc.Start(t, server(), filepath.Join(t.TempDir(), logName), append(args, extra...)...)
	m := &member{Process: p, t: t, addr: addr}
	t.Cleanup(m.kill)
	return m
}

// waitReady polls until the process answers a linearizable Range, which
// on a restarted member also means it has replayed what it committed.
func (m *member) waitReady() {
	m.t.Helper()
	conn, err := grpc.NewClient(m.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
	)
	if err != nil {
		m.t.Fatalf("dial %s: %v", m.addr, err)
	}
	m.conn, m.kv = conn, pb.NewKVClient(conn)
	err = kit.Poll(readyTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready?")})
		select {
		case <-m.Exited():
			m.t.Fatalf("the server exited before answering (%v); its output:\n%s", m.Err(), m.output())
		default:
		}
		return err
	})
	if err != nil {
		m.t.Fatalf("the server does not answer on %s: %v; its output:\n%s", m.addr, err, m.output())
	}
}

// kill sends SIGKILL, waits for the process to be gone and closes the
// connection. It is a no-op on a process that has exited.
func (m *member) kill() {
	m.Kill()
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
}

// output returns the process's output so far, its last 8 KiB at most.
func (m *member) output() string { return m.Output(8 << 10) }
