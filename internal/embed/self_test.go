package embed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// lockOnce takes and releases a lock through m's Lock service, which makes
// its calls through the member's self-client.
func lockOnce(t *testing.T, m *Member) {
	t.Helper()
	ctx := ctxT(t)
	lc := v3lockpb.NewLockClient(client(t, m).ActiveConnection())
	l, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("self")})
	if err != nil {
		t.Fatalf("lock through the self-client: %v", err)
	}
	if _, err := lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: l.Key}); err != nil {
		t.Fatalf("unlock through the self-client: %v", err)
	}
}

func TestSelfSocketInDataDir(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, selfSocketName)
	// A socket file left by a member that was killed is replaced.
	if err := os.WriteFile(sock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Start(testConfig(t, dir))
	if err != nil {
		t.Fatalf("start over a stale socket file: %v", err)
	}
	defer m.Close()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a socket only its owner may use", sock, fi.Mode())
	}
	lockOnce(t, m)
	m.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("after Close the socket is still there: %v", err)
	}
}

func TestSelfSocketLongDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	m, err := Start(testConfig(t, dir))
	if err != nil {
		t.Fatalf("start in a data directory too deep for a socket: %v", err)
	}
	defer m.Close()
	tmp := m.self.tmpDir
	if tmp == "" || len(filepath.Join(tmp, selfSocketName)) > maxSocketPath {
		t.Fatalf("socket directory %q, want a temporary one short enough", tmp)
	}
	lockOnce(t, m)
	m.Close()
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("after Close the socket's directory %s is still there: %v", tmp, err)
	}
}
