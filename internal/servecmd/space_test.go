package servecmd

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/embed"
	"github.com/cairn-db/cairn/internal/storage"
	"github.com/cairn-db/cairn/tests/kit"
)

func TestStartErrorMessages(t *testing.T) {
	for _, c := range []struct {
		err  error
		want []string
	}{
		{fmt.Errorf("storage: %w", storage.ErrLocked), []string{"/d is in use by another process"}},
		{fmt.Errorf("%w: /d: recovering the write-ahead log needs to write a table: %w; free space on the device holding /d and restart",
			storage.ErrNoSpace, syscall.ENOSPC), []string{"/d", "no space left", "free space", "restart"}},
		{fmt.Errorf("create manifest: %w", syscall.ENOSPC), []string{"cannot open data directory /d", "device holding it is full", "free space", "restart"}},
	} {
		got := startError("/d", c.err).Error()
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("startError(%v) = %q, missing %q", c.err, got, w)
			}
		}
	}
	if err := errors.New("other"); startError("/d", err) != err {
		t.Errorf("startError changed an unrelated error")
	}
}

// TestFullDiskAtStart starts the command on a data directory whose device
// (a small tmpfs) is full while the write-ahead log holds data to recover:
// it must end with a clear error naming the directory and the remedy, not
// hang. Mounting needs root: the test is skipped where it cannot mount,
// except on CI (CI=true), where it fails.
func TestFullDiskAtStart(t *testing.T) {
	mnt := kit.Tmpfs(t, "4m")
	dir := filepath.Join(mnt, "data")

	cfg := embed.NewConfig()
	cfg.Name, cfg.DataDir = "full", dir
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.ListenPeerURLs = []string{"http://127.0.0.1:0"}
	cfg.QuotaBackendBytes = 1 << 20 // small memtables and logs
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := embed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := m.Server().Put(t.Context(), putRequest(fmt.Sprintf("k%d", i), strings.Repeat("v", 1000))); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	// Fill the device.
	f, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()

	cmd, _ := newServeCommandFlags()
	var logs bytes.Buffer
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&logs)
	cmd.SetArgs([]string{"--name", "full", "--data-dir", dir, "--listen-client-urls", "http://127.0.0.1:0",
		"--advertise-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", "http://127.0.0.1:0",
		"--quota-backend-bytes", "1048576", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the command did not end within 60s on a full device; log:\n%s", logs.String())
	}
	if err == nil {
		t.Fatal("the command started on a full device")
	}
	t.Logf("the command ended with: %v", err)
	for _, w := range []string{dir, "free space", "restart"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if !storage.IsNoSpace(err) {
		t.Errorf("error %q is not a no-space error", err)
	}
}

func putRequest(k, v string) *pb.PutRequest { return &pb.PutRequest{Key: []byte(k), Value: []byte(v)} }
