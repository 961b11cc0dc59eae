// Package proc starts servers as real processes for cairn's process test
// tiers (tests/crash, tests/process): a cairn member, or an etcd member
// that stands in for it to check a test itself.
//
// There is no separate server binary. A package that uses proc calls Main
// from its TestMain, and Start runs the package's own test binary again
// with an environment variable that makes Main serve instead of testing:
// the cairn command (internal/servecmd, exactly what cmd/cairn runs) or
// embedded etcd. So the server is the code the test binary was built
// from: go test's cache key covers it, a change to the server reruns the
// tiers instead of reporting them "(cached)", and a test binary built with
// -race runs race-built servers.
//
// A server process gets the test's environment without the CAIRN_*
// variables, which are the tests' own knobs (CAIRN_CRASH_CYCLES, ...) and
// which cairn would read as its configuration.
package proc

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/cairn-db/cairn/internal/servecmd"
	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// Server names the server a process runs.
type Server string

// The servers Start can run.
const (
	// Cairn is a cairn member, run by cmd/cairn's command with the
	// arguments Start is given.
	Cairn Server = "cairn"
	// Etcd is an embedded etcd member taking the few flags a single member
	// needs (--name, --data-dir, --listen-client-urls,
	// --advertise-client-urls, --bcrypt-cost; --listen-peer-urls is accepted and ignored,
	// the peer URL is a free port). etcd keeps every write it
	// acknowledged, so a test that fails against it has a bug of its own.
	Etcd Server = "etcd"
)

// roleEnv carries the server a re-executed test binary is to run. It does
// not start with CAIRN_, so cairn does not read it as configuration.
const roleEnv = "CAIRNKIT_SERVE"

// Main is the body of the TestMain of a package whose tests call Start:
// in a process Start started it runs the server and exits with its status;
// otherwise it runs the tests and exits.
func Main(m *testing.M) {
	switch Server(os.Getenv(roleEnv)) {
	case Cairn:
		os.Exit(servecmd.Main())
	case Etcd:
		if err := serveEtcd(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "etcd:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveEtcd runs an embedded etcd member until SIGTERM or SIGINT.
func serveEtcd(args []string) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	name := fs.String("name", "default", "member name")
	dir := fs.String("data-dir", "", "data directory")
	listen := fs.String("listen-client-urls", "", "client URL to listen on")
	advertise := fs.String("advertise-client-urls", "", "client URL to advertise")
	fs.String("listen-peer-urls", "", "ignored: the peer URL is a free port")
	bcryptCost := fs.Uint("bcrypt-cost", 0, "bcrypt cost of passwords (0: etcd's default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lc, err := url.Parse(*listen)
	if err != nil {
		return err
	}
	ac, err := url.Parse(*advertise)
	if err != nil {
		return err
	}
	cfg, err := oracle.Config(oracle.Dir(*dir), func(cfg *embed.Config) {
		cfg.Name = *name
		if *bcryptCost != 0 {
			cfg.BcryptCost = *bcryptCost
		}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*lc}, []url.URL{*ac}
		// Errors go to the process's output, which a failing test prints.
		cfg.ZapLoggerBuilder, cfg.LogLevel = nil, "error"
	})
	if err != nil {
		return err
	}
	// Signals are caught before etcd serves, so one that arrives once
	// clients can reach it always means a graceful stop.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	e, err := oracle.Run(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case err := <-e.Err():
		return err
	case <-sig:
		return nil
	}
}

// Process is one server process started by Start.
type Process struct {
	// LogPath is the file holding the process's output.
	LogPath string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error // set before exited is closed
}

// Start starts server as a process with args, its standard output and
// error in logPath, and kills it when t ends if it is still running. It
// does not wait for the server to serve. The package's TestMain must call
// Main.
func Start(t testing.TB, server Server, logPath string, args ...string) *Process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("find the test binary to run as %s: %v", server, err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(childEnv(), roleEnv+"="+string(server))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", server, err)
	}
	p := &Process{LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.Kill)
	return p
}

// childEnv is this process's environment without CAIRN_ variables.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAIRN_") && !strings.HasPrefix(kv, roleEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err returns how the process exited (nil for status 0). Call it only
// after Exited is closed.
func (p *Process) Err() error { return p.waitErr }

// Kill sends SIGKILL and waits for the process to be gone. It is a no-op
// on a process that has exited.
func (p *Process) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.exited
}

// Stop sends sig and waits up to timeout for the process to exit; a
// process still running then is killed, and Stop says so in its error.
func (p *Process) Stop(sig syscall.Signal, timeout time.Duration) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("did not exit within %v of %v", timeout, sig)
	}
}

// WaitExit waits up to timeout for the process to exit on its own and
// reports whether it did and how (nil for status 0).
func (p *Process) WaitExit(timeout time.Duration) (exited bool, err error) {
	select {
	case <-p.exited:
		return true, p.waitErr
	case <-time.After(timeout):
		return false, nil
	}
}

// Output returns the process's output so far, its last max bytes at most.
func (p *Process) Output(max int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	if len(b) > max {
		return fmt.Sprintf("...[%d bytes cut; the whole output is %s]\n%s", len(b)-max, p.LogPath, b[len(b)-max:])
	}
	return string(b)
}
