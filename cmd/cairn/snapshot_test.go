package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/embed"
	"github.com/cairn-db/cairn/internal/freeport"
)

func runSnapshotCommand(args ...string) (string, error) {
	cmd := newSnapshotCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestSnapshotStatusAndRestoreCommands(t *testing.T) {
	peer := "http://" + freeport.Addr(t)
	cfg := embed.NewConfig()
	cfg.Name, cfg.DataDir = "m1", t.TempDir()
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.InitialCluster = "m1=" + peer
	cfg.UnsafeNoFsync = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := embed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rev int64
	for i := range 10 {
		resp, err := c.Put(ctx, fmt.Sprint("k", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: m.ClientURLs()[:1]}, path); err != nil {
		t.Fatal(err)
	}

	out, err := runSnapshotCommand("status", path, "-w", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st etcdutl.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -w json: %v\n%s", err, out)
	}
	// The backup is in etcd's format: etcdutl reads it, and cairn's status
	// says what etcdutl's does.
	want, err := etcdutl.NewV3(zap.NewNop()).Status(path)
	if err != nil {
		t.Fatalf("etcdutl status: %v", err)
	}
	if st != want || st.Revision != rev || st.TotalKey != 10 || st.Hash == 0 {
		t.Fatalf("status %+v, etcdutl says %+v; want revision %d and 10 keys", st, want, rev)
	}
	if out, err := runSnapshotCommand("status", path, "-w", "table"); err != nil || !strings.Contains(out, "TOTAL KEYS") {
		t.Fatalf("status -w table: %v\n%s", err, out)
	}

	dir := filepath.Join(t.TempDir(), "r1.cairn")
	args := []string{"restore", path, "--name", "r1", "--data-dir", dir,
		"--initial-cluster", "r1=http://127.0.0.1:2390", "--initial-cluster-token", "tok",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2390"}
	if out, err := runSnapshotCommand(args...); err != nil || !strings.Contains(out, fmt.Sprintf("revision %d", rev)) {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if out, err := runSnapshotCommand(args...); err == nil || !strings.Contains(err.Error(), "data-dir not empty") {
		t.Fatalf("restore into a used directory: %v\n%s", err, out)
	}
}

// TestSnapshotCommandsOnEtcdBackup: status and restore take a snapshot
// saved from etcd; status says what etcdutl says, and a cairn member
// started on the restored directory serves etcd's keys at their revisions.
func TestSnapshotCommandsOnEtcdBackup(t *testing.T) {
	addr, ec := startBenchEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := ec.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := ec.Put(ctx, fmt.Sprint("k", i%3), fmt.Sprint("v", i), clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}
	want, err := ec.Get(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "etcd.db")
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: []string{addr}}, path); err != nil {
		t.Fatal(err)
	}

	out, err := runSnapshotCommand("status", path, "-w", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st etcdutl.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -w json: %v\n%s", err, out)
	}
	if ws, err := etcdutl.NewV3(zap.NewNop()).Status(path); err != nil || st != ws || st.Revision != want.Header.Revision {
		t.Fatalf("status %+v, etcdutl says %+v (%v); want revision %d", st, ws, err, want.Header.Revision)
	}

	peer := "http://" + freeport.Addr(t)
	dir := filepath.Join(t.TempDir(), "r1.cairn")
	if out, err := runSnapshotCommand("restore", path, "--name", "r1", "--data-dir", dir,
		"--initial-cluster", "r1="+peer, "--initial-advertise-peer-urls", peer); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.DataDir = "r1", dir
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.InitialCluster = "r1=" + peer
	cfg.UnsafeNoFsync = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := embed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Get(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if got.Header.Revision != want.Header.Revision || fmt.Sprint(got.Kvs) != fmt.Sprint(want.Kvs) {
		t.Fatalf("restored from etcd: revision %d %v\nwant revision %d %v", got.Header.Revision, got.Kvs, want.Header.Revision, want.Kvs)
	}
	ttl, err := c.TimeToLive(ctx, lease.ID, clientv3.WithAttachedKeys())
	if err != nil || ttl.GrantedTTL != 600 || len(ttl.Keys) != 3 {
		t.Fatalf("restored lease: %+v, %v", ttl, err)
	}
}
