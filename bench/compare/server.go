package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-db/cairn/internal/freeport"
)

// member is one server process (etcd or cairn, started with the same etcd
// flags) listening on 127.0.0.1.
type member struct {
	name       string
	bin        string
	dataDir    string
	clientURL  string
	peerURL    string
	cluster    string // --initial-cluster
	extraFlags []string
	logPath    string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// newMembers prepares n members of one cluster under dir, with fresh ports
// and data directories; nothing is started yet.
func newMembers(bin, dir string, n int, extraFlags []string) ([]*member, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ms := make([]*member, n)
	var cluster []string
	for i := range ms {
		cp, err := freeport.Get()
		if err != nil {
			return nil, err
		}
		pp, err := freeport.Get()
		if err != nil {
			return nil, err
		}
		m := &member{
			name:       fmt.Sprintf("m%d", i+1),
			bin:        bin,
			clientURL:  fmt.Sprintf("http://127.0.0.1:%d", cp),
			peerURL:    fmt.Sprintf("http://127.0.0.1:%d", pp),
			extraFlags: extraFlags,
		}
		m.dataDir = filepath.Join(dir, m.name+".data")
		m.logPath = filepath.Join(dir, m.name+".log")
		cluster = append(cluster, m.name+"="+m.peerURL)
		ms[i] = m
	}
	for _, m := range ms {
		m.cluster = strings.Join(cluster, ",")
	}
	return ms, nil
}

// start launches the process. The data directory decides whether it is a
// new member or a restart; the flags are the same either way.
func (m *member) start() error {
	state := "new"
	if _, err := os.Stat(m.dataDir); err == nil {
		state = "existing"
	}
	args := []string{
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", m.clientURL,
		"--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL,
		"--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", m.cluster,
		"--initial-cluster-state", state,
		"--initial-cluster-token", "compare",
	}
	args = append(args, m.extraFlags...)
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	m.cmd = exec.Command(m.bin, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", m.bin, err)
	}
	m.exited = make(chan struct{})
	go func() {
		m.cmd.Wait()
		logf.Close()
		close(m.exited)
	}()
	return nil
}

// waitReady returns how long, from since, the member took to answer a
// linearizable read, or an error if the process exits or timeout passes.
// It first waits for the client port to accept connections, then reads
// with a new client per attempt: a client that failed to connect waits out
// gRPC's reconnect backoff (a second), which would swamp a restart time.
func (m *member) waitReady(since time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := since.Add(timeout)
	host := strings.TrimPrefix(m.clientURL, "http://")
	var lastErr error
	for {
		select {
		case <-m.exited:
			tail := m.logTail()
			return 0, fmt.Errorf("%s exited before it was ready (%s); its log ends:\n%s", m.bin, errorLine(tail), tail)
		default:
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s not ready after %v (last error: %v):\n%s", m.bin, timeout, lastErr, m.logTail())
		}
		if lastErr = probe(host); lastErr == nil {
			return time.Since(since), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// probe returns nil once host accepts a connection and answers a
// linearizable read.
func probe(host string) error {
	conn, err := net.DialTimeout("tcp", host, 100*time.Millisecond)
	if err != nil {
		return err
	}
	conn.Close()
	cli, err := newClient("http://" + host)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = cli.Get(ctx, "compare-ready-probe")
	return err
}

// stop sends SIGTERM and waits for the exit, killing the process if it has
// not exited after 30 seconds.
func (m *member) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// logTail returns the last lines of the member's log, for error messages.
func (m *member) logTail() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// errorLine picks the line of a log tail most likely to say what went
// wrong: the last one mentioning an error, else the last one.
func errorLine(tail string) string {
	lines := strings.Split(strings.TrimRight(tail, "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(strings.ToLower(lines[i]), "error") {
			return strings.TrimSpace(lines[i])
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

// rss returns the process's resident memory in bytes (VmRSS).
func (m *member) rss() (int64, error) {
	return procStatusBytes(m.cmd.Process.Pid, "VmRSS:")
}

func procStatusBytes(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s %q: %w", field, rest, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// clockTicks is the unit of utime and stime in /proc/<pid>/stat
// (USER_HZ), 100 on every Linux this runs on.
const clockTicks = 100

// cpuTime returns the CPU time (user and system, all threads) the process
// has used so far.
func (m *member) cpuTime() (time.Duration, error) {
	return procCPUTime(m.cmd.Process.Pid)
}

func procCPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// the fields after it start at field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] { // utime and stime: fields 14 and 15
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// sampleRSS records the member's peak VmRSS until stop is closed, sampling
// every 10ms, and sends the peak on the returned channel.
func (m *member) sampleRSS(stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := m.rss(); err == nil {
				peak = max(peak, v)
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// diskUsage returns the bytes allocated on disk under dir, as du counts
// them (preallocated files, like etcd's and Pebble's write-ahead logs,
// count in full; sparse holes do not), and the files' apparent size, the
// bytes actually written.
func diskUsage(dir string) (allocated, apparent int64, err error) {
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked (a compaction)
			}
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		apparent += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		} else {
			allocated += info.Size()
		}
		return nil
	})
	return allocated, apparent, err
}
