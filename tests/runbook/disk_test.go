package runbook

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/proc"
)

// fullDiskExitTimeout bounds how long a member started on a full device
// may take to give up. It is a failure deadline for a hang, not a measure
// of speed.
const fullDiskExitTimeout = 2 * time.Minute

// TestFullDisk runs a cairn process with its data directory on a 64 MiB
// tmpfs (and a quota far above it, so the device fills first) under a
// write load until writes are refused, recording every acknowledged write;
// kills it; fills what is left of the device and restarts it there: it
// must exit with an error naming the data directory and the remedy (or,
// if it won the space its own start freed, serve every acknowledged
// write), never hang; grows the tmpfs to 256 MiB and restarts it: every acknowledged
// write is there (etcdctl get) and etcdctl put succeeds again.
//
// Mounting needs root. Where it cannot mount the test is skipped, except
// on CI (CI=true), where that fails it.
func TestFullDisk(t *testing.T) {
	mnt := kit.Tmpfs(t, "64m")
	dataDir := filepath.Join(mnt, "data")
	flags := []string{"--quota-backend-bytes", fmt.Sprint(256 << 20)}

	s := startServer(t, proc.Cairn, "disk", dataDir, "", "", flags...)
	s.waitServing(t)
	acked, refusal := fillDevice(t, s)
	t.Logf("%d writes acknowledged before the member refused them with: %v", len(acked), refusal)
	s.p.Kill()

	// Take whatever space is left, so the device is full at the restart,
	// and keep taking what frees up while the member starts (opening the
	// engine deletes the files the killed process left behind), as
	// another writer on the device would.
	fill(t, filepath.Join(mnt, "filler"))
	stopFilling := keepFilling(t, filepath.Join(mnt, "filler2"))
	full := startServer(t, proc.Cairn, "disk-full", dataDir, s.clientURL, s.peerURL, flags...)
	exited, err := exitOrServe(t, full)
	stopFilling()
	switch {
	case exited && err == nil:
		failf(t, []*server{full}, "the member started on a full device exited with status 0")
	case exited:
		out := full.p.Output(16 << 10)
		for _, w := range []string{dataDir, "free space"} {
			if !strings.Contains(out, w) {
				failf(t, []*server{full}, "the member started on a full device exited (%v) without a message saying %q", err, w)
			}
		}
		t.Logf("on the full device the member exited with %v", err)
	default:
		// The member won the race for the space it freed and wrote its
		// recovery flush: then it serves, and must serve every
		// acknowledged write.
		t.Logf("on the full device the member recovered and serves")
		checkAcked(t, full, acked)
		full.p.Kill()
	}

	kit.ResizeTmpfs(t, mnt, "256m")
	grown := startServer(t, proc.Cairn, "disk-grown", dataDir, s.clientURL, s.peerURL, flags...)
	grown.waitServing(t)
	checkAcked(t, grown, acked)
	ctl := newEtcdctl(t, grown.clientURL)
	// The NOSPACE alarm raised on the full device clears itself now that
	// the member is far under its quota; until then puts are refused.
	var out string
	err = kit.Poll(kit.WaitTimeout, func() error {
		var err error
		out, err = ctl.run(t, "put", "/after/grow", "v")
		return err
	})
	if err != nil {
		failf(t, []*server{grown}, "etcdctl put on the grown device: %v\n%s", err, out)
	}
}

// fillDevice writes random 4 KiB values to unique keys from a few clients
// until the member refuses a write with etcd's NOSPACE error, and returns
// the writes it acknowledged and the refusal.
func fillDevice(t *testing.T, s *server) (map[string]string, error) {
	t.Helper()
	cli := s.client(t)
	var (
		mu      sync.Mutex
		acked   = map[string]string{}
		refusal error
		stop    atomic.Bool
		seq     atomic.Int64
		wg      sync.WaitGroup
	)
	// The device holds 64 MiB: a member that takes four times that
	// without refusing a write is not noticing its full device.
	const limit = 4 * 64 << 20 / 4096
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 17))
			raw := make([]byte, 3<<10)
			for !stop.Load() {
				n := seq.Add(1)
				if n > limit {
					stop.Store(true)
					return
				}
				for i := range raw {
					raw[i] = byte(rnd.Uint32())
				}
				k, v := fmt.Sprintf("/disk/%07d", n), base64.StdEncoding.EncodeToString(raw)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := cli.Put(ctx, k, v)
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					acked[k] = v
				case errors.Is(err, rpctypes.ErrNoSpace):
					if refusal == nil {
						refusal = err
					}
					stop.Store(true)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if refusal == nil {
		failf(t, []*server{s}, "%d puts of 4 KiB on a 64 MiB device and none refused with %q", limit, noSpaceText)
	}
	return acked, refusal
}

// fill writes to path until the device is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			return
		}
	}
}

// exitOrServe waits until s exits or answers a linearizable read, and
// fails the test if neither happens within fullDiskExitTimeout: a member
// must never hang on a full device.
func exitOrServe(t *testing.T, s *server) (exited bool, err error) {
	t.Helper()
	cli := s.client(t)
	deadline := time.Now().Add(fullDiskExitTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.p.Exited():
			return true, s.p.Err()
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "health")
		cancel()
		if err == nil {
			return false, nil
		}
	}
	failf(t, []*server{s}, "the member started on a full device neither exited nor served within %v", fullDiskExitTimeout)
	return false, nil
}

// checkAcked reads the keys under /disk/ from s with etcdctl get and
// fails the test if any acknowledged write is missing or different.
func checkAcked(t *testing.T, s *server, acked map[string]string) {
	t.Helper()
	var got clientv3.GetResponse
	newEtcdctl(t, s.clientURL).json(t, &got, "get", "--prefix", "/disk/")
	values := make(map[string]string, len(got.Kvs))
	for _, kv := range got.Kvs {
		values[string(kv.Key)] = string(kv.Value)
	}
	lost := 0
	for k, v := range acked {
		if values[k] != v {
			if lost < 5 {
				t.Errorf("%s: acknowledged write %s is lost (a value present: %t)", s.name, k, values[k] != "")
			}
			lost++
		}
	}
	if lost > 0 {
		failf(t, []*server{s}, "%s: %d of %d acknowledged writes are lost", s.name, lost, len(acked))
	}
}

// keepFilling appends to path whenever the device has room, until the
// returned function is called; that function waits for it to stop.
func keepFilling(t *testing.T, path string) (stop func()) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	var done atomic.Bool
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer f.Close()
		chunk := make([]byte, 4<<10)
		for !done.Load() {
			if _, err := f.Write(chunk); err != nil {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	return func() {
		done.Store(true)
		<-stopped
	}
}
