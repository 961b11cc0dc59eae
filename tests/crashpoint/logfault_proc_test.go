package crashpoint

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/proc"
)

// TestRaftLogFullDeviceProcess runs a real cairn process whose raft log
// (--wal-dir) is on an 8 MiB tmpfs, its data directory elsewhere, and
// writes 256 KiB values until the log's device fills. The log keeps its
// next segment allocated ahead; when the device has no room for it, the
// member must go read-only: refuse the next write with etcd's NOSPACE
// error, raise the alarm, say so in its log, and keep serving reads (no
// exit, no Go panic). Once the tmpfs is grown, the restarted member holds
// every write it acknowledged, clears the alarm by itself and takes writes
// again. Mounting needs root: the test is skipped without (and fails with
// CI=true).
func TestRaftLogFullDeviceProcess(t *testing.T) {
	mnt := kit.Tmpfs(t, "8m")
	walDir := filepath.Join(mnt, "wal")
	dataDir := filepath.Join(t.TempDir(), "data")
	clientURL, peerURL := "http://"+freeport.Addr(t), "http://"+freeport.Addr(t)
	start := func(name string) *proc.Process {
		return proc.Start(t, proc.Cairn, filepath.Join(t.TempDir(), name+".log"),
			"--name", "m1", "--data-dir", dataDir, "--wal-dir", walDir,
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "m1="+peerURL, "--log-level", "info")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	serving := func(p *proc.Process) {
		t.Helper()
		err := kit.Poll(kit.WaitTimeout, func() error {
			select {
			case <-p.Exited():
				t.Fatalf("the member exited before serving (%v):\n%s", p.Err(), p.Output(8<<10))
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := cli.Get(ctx, "health")
			return err
		})
		if err != nil {
			t.Fatalf("the member does not serve: %v\n%s", err, p.Output(8<<10))
		}
	}

	p := start("full")
	serving(p)
	// One writer, so that every acknowledged write came before the
	// failure. 128 writes of 256 KiB are four times the device.
	rng := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, 256<<10)
	acked := map[string]string{}
	var failure error
	for i := 0; i < 128 && failure == nil; i++ {
		for j := range raw {
			raw[j] = 'a' + byte(rng.IntN(26))
		}
		k, v := fmt.Sprintf("/wal/%04d", i), string(raw)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, failure = cli.Put(ctx, k, v)
		cancel()
		if failure == nil {
			acked[k] = v
		}
	}
	if failure == nil {
		t.Fatalf("128 writes of 256 KiB acknowledged with the raft log on an 8 MiB device")
	}
	t.Logf("%d writes acknowledged, then: %v", len(acked), failure)
	if !errors.Is(failure, rpctypes.ErrNoSpace) {
		t.Fatalf("the write after the device filled failed with %v, want %v:\n%s", failure, rpctypes.ErrNoSpace, p.Output(8<<10))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "/wal/0000"); err != nil {
		t.Fatalf("the read-only member does not serve a linearizable read: %v\n%s", err, p.Output(8<<10))
	}
	// Writes are refused as soon as the log has no room; the alarm is
	// logged once its proposal has been applied, a moment later.
	var out string
	err = kit.Poll(kit.WaitTimeout, func() error {
		out = p.Output(64 << 10)
		for _, want := range []string{"no room for the next segment", walDir, "NOSPACE alarm raised"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("the member's output does not say %q", want)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("%v:\n%s", err, out)
	}
	if strings.Contains(out, "goroutine ") {
		t.Errorf("the member's output holds a Go stack:\n%s", out)
	}
	p.Kill()

	kit.ResizeTmpfs(t, mnt, "64m")
	p = start("grown")
	serving(p)
	resp, err := cli.Get(ctx, "/wal/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	for k, v := range acked {
		if got[k] != v {
			t.Fatalf("the acknowledged write %s is lost after the restart (%d of %d present)", k, len(got), len(acked))
		}
	}
	t.Logf("all %d acknowledged writes present after growing the device and restarting", len(acked))
	// The alarm clears itself now that the log has room; until then puts
	// are refused.
	err = kit.Poll(kit.WaitTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cli.Put(ctx, "/after/grow", "v")
		return err
	})
	if err != nil {
		t.Fatalf("a put on the grown device: %v\n%s", err, p.Output(8<<10))
	}
}
