package runbook

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/proc"
)

// TestMain lets the test binary serve as the cairn and etcd members the
// tests start; see tests/kit/proc.
func TestMain(m *testing.M) { proc.Main(m) }

// commandTimeout bounds one etcdctl or etcdutl run; it is a failure
// deadline for a hung command, not a measure of speed.
const commandTimeout = 2 * time.Minute

var (
	toolMu    sync.Mutex
	toolPaths = map[string]string{}
)

// tool returns the path of a tool dependency of the module (go.mod's tool
// block: etcdctl, etcdutl), built once by the go command, which keeps the
// executable in its build cache.
func tool(t testing.TB, name string) string {
	t.Helper()
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolPaths[name]; ok {
		return p
	}
	out, err := exec.Command("go", "tool", "-n", name).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("build the %s tool (go tool -n %s): %v\n%s", name, name, err, msg)
	}
	p := strings.TrimSpace(string(out))
	toolPaths[name] = p
	return p
}

// cairnBinary builds cmd/cairn, the binary operators run, into a
// temporary directory of t and returns its path. The members themselves
// are the test binary (tests/kit/proc); this is for cairn's subcommands.
func cairnBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cairn")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/cairn-db/cairn/cmd/cairn").CombinedOutput(); err != nil {
		t.Fatalf("build cmd/cairn: %v\n%s", err, out)
	}
	return bin
}

// run runs bin with args and returns its combined output and error. The
// command line and output go to the test log.
func run(t testing.TB, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not end within %v; output:\n%s", filepath.Base(bin), strings.Join(args, " "), commandTimeout, out)
	}
	return string(out), err
}

// etcdctl is etcdctl aimed at some endpoints.
type etcdctl struct {
	bin       string
	endpoints []string
}

func newEtcdctl(t testing.TB, endpoints ...string) etcdctl {
	return etcdctl{bin: tool(t, "etcdctl"), endpoints: endpoints}
}

// run runs etcdctl with args and returns its combined output and error.
func (c etcdctl) run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"--endpoints", strings.Join(c.endpoints, ","), "--command-timeout", "60s", "--dial-timeout", "30s"}, args...)
	return run(t, c.bin, full...)
}

// must runs etcdctl with args and fails the test unless it succeeds.
func (c etcdctl) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.run(t, args...)
	if err != nil {
		t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// json runs etcdctl with args and -w json and decodes its output into v.
func (c etcdctl) json(t testing.TB, v any, args ...string) {
	t.Helper()
	out := c.must(t, append(args, "-w", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("etcdctl %s -w json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// server is a cairn or etcd member started as a process.
type server struct {
	name      string
	dataDir   string
	clientURL string
	peerURL   string
	p         *proc.Process
}

// startServer starts kind on dataDir with the client and peer URLs given
// (fresh ones when empty) and extra flags, and waits until it takes a
// write. It does not wait for a member that cannot serve alone (one of
// several); call waitServing on all of them then.
func startServer(t testing.TB, kind proc.Server, name, dataDir, clientURL, peerURL string, extra ...string) *server {
	t.Helper()
	if clientURL == "" {
		clientURL = "http://" + freeport.Addr(t)
	}
	if peerURL == "" {
		peerURL = "http://" + freeport.Addr(t)
	}
	args := []string{"--name", name, "--data-dir", dataDir,
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL}
	if kind == proc.Cairn {
		args = append(args, "--initial-advertise-peer-urls", peerURL, "--log-level", "info")
	}
	args = append(args, extra...)
	s := &server{name: name, dataDir: dataDir, clientURL: clientURL, peerURL: peerURL}
	s.p = proc.Start(t, kind, filepath.Join(t.TempDir(), name+".log"), args...)
	return s
}

// waitServing waits until s answers a linearizable read, failing the test
// if it exits first or does not within kit.WaitTimeout.
func (s *server) waitServing(t testing.TB) {
	t.Helper()
	cli := s.client(t)
	err := kit.Poll(kit.WaitTimeout, func() error {
		select {
		case <-s.p.Exited():
			t.Fatalf("%s exited before serving (%v); its output:\n%s", s.name, s.p.Err(), s.p.Output(8<<10))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "health")
		return err
	})
	if err != nil {
		t.Fatalf("%s does not serve: %v; its output:\n%s", s.name, err, s.p.Output(8<<10))
	}
}

// client returns a clientv3 client of s, closed when t ends.
func (s *server) client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.clientURL}, Logger: zap.NewNop(),
		DialTimeout: 5 * time.Second, MaxCallRecvMsgSize: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// short picks the size for go test -short or the full one.
func short[T any](shortValue, full T) T {
	if testing.Short() {
		return shortValue
	}
	return full
}

// failf is t.Fatalf with the tail of the servers' output appended.
func failf(t testing.TB, servers []*server, format string, args ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, format, args...)
	for _, s := range servers {
		fmt.Fprintf(&b, "\n--- output of %s:\n%s", s.name, s.p.Output(4<<10))
	}
	t.Fatal(b.String())
}
