package crash

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestDataDirLock starts a second cairn on a data directory a running one
// holds: it must exit non-zero with an error a user can act on, and the
// first must keep serving, its data intact.
func TestDataDirLock(t *testing.T) {
	if os.Getenv("CAIRN_CRASH_ORACLE") == "etcd" {
		t.Skip("etcd waits for the data directory's lock instead of refusing; this checks cairn's choice")
	}
	dataDir := t.TempDir()
	first := startProc(t, dataDir, "first.log")
	first.waitReady()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := first.kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("before")}); err != nil {
		t.Fatalf("put on the first process: %v", err)
	}

	second := startProc(t, dataDir, "second.log")
	exited, err := second.WaitExit(readyTimeout)
	if !exited {
		t.Fatalf("a second cairn on the same data directory still runs after %v; its output:\n%s", readyTimeout, second.output())
	}
	if err == nil {
		t.Errorf("a second cairn on the same data directory exited with status 0; want a failure. Its output:\n%s", second.output())
	}
	out := second.output()
	if !namesDataDir(out, dataDir) {
		t.Errorf("no error line of the second cairn names the data directory %s, its lock or its being in use; its output:\n%s", dataDir, out)
	}
	t.Logf("second process: %v; output:\n%s", err, out)

	if _, err := first.kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("after")}); err != nil {
		t.Fatalf("the first process stopped serving writes after the second was refused: %v", err)
	}
	resp, err := first.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
	if err != nil {
		t.Fatalf("the first process stopped serving reads after the second was refused: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "after" || resp.Kvs[0].Version != 2 {
		t.Fatalf("the first process's data changed: got %v, want k=after at version 2", resp.Kvs)
	}
}

// namesDataDir reports whether a line of out that reports an error names
// dir, a lock or the directory being in use. Only error lines count: the
// start-up log line names the data directory too.
func namesDataDir(out, dir string) bool {
	for _, line := range strings.Split(out, "\n") {
		l := strings.ToLower(line)
		if !strings.Contains(l, "error") {
			continue
		}
		if strings.Contains(line, dir) || strings.Contains(l, "lock") || strings.Contains(l, "in use") {
			return true
		}
	}
	return false
}
