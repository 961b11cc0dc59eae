package embed

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// TestAuditLogLeaseRefusalsOverTheWire: the lease calls and txns clientv3
// and the gateway make, refused for want of a permission, are in the
// audit log under their RPC's name, with the user, the key that lacked
// the permission and the lease.
func TestAuditLogLeaseRefusalsOverTheWire(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	cfg := authConfig(t)
	cfg.AuditLog = path
	m := start(t, cfg)
	enableAuth(t, client(t, m))
	root := clientAs(t, m, "root", "rootpw")
	alice := clientAs(t, m, "alice", "pw")
	ctx := ctxT(t)

	l, err := root.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Put(ctx, "z", "v", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		do   func() error
	}{
		{"LeaseRevoke", func() error { _, err := alice.Revoke(ctx, l.ID); return err }},
		{"LeaseTimeToLive", func() error { _, err := alice.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys()); return err }},
		{"LeaseKeepAlive", func() error { _, err := alice.KeepAliveOnce(ctx, l.ID); return err }},
		{"LeaseLeases", func() error { _, err := alice.Leases(ctx); return err }},
		{"Put", func() error { _, err := alice.Put(ctx, "k2", "v", clientv3.WithLease(l.ID)); return err }},
		{"Txn", func() error {
			_, err := alice.Txn(ctx).If(clientv3.Compare(clientv3.Version("k1"), "=", 0)).
				Then(clientv3.OpPut("k1", "v")).Else(clientv3.OpGet("a", clientv3.WithRange("c"))).Commit()
			return err
		}},
	}
	al, err := alice.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	calls = append(calls, struct {
		name string
		do   func() error
	}{"Lock", func() error {
		_, err := v3lockpb.NewLockClient(alice.ActiveConnection()).Lock(ctx, &v3lockpb.LockRequest{Name: []byte("z-lock"), Lease: int64(al.ID)})
		return rpctypes.Error(err)
	}})
	for _, c := range calls {
		if err := c.do(); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("%s as alice: %v, want %v", c.name, err, rpctypes.ErrPermissionDenied)
		}
	}
	var login struct {
		Token string `json:"token"`
	}
	postJSON(t, http.DefaultClient, m.ClientURLs()[0]+"/v3/auth/authenticate", `{"name":"alice","password":"pw"}`, http.StatusOK, &login)
	gw := jwtSide{name: "cairn", endpoints: m.ClientURLs(), url: m.ClientURLs()[0]}
	if status, body := gw.post(t, "/v3/lease/revoke", login.Token, fmt.Sprintf(`{"ID":"%d"}`, l.ID)); status != http.StatusForbidden {
		t.Fatalf("LeaseRevoke over the gateway as alice: %d %s", status, body)
	}
	m.Close() // flushes the log

	hexID := strconv.FormatInt(int64(l.ID), 16)
	// The Lock service makes a txn that puts the lock's key, through the
	// member's own client with alice's token: it is that txn refused.
	want := []string{
		"LeaseRevoke alice z  " + hexID,
		"LeaseTimeToLive alice z  " + hexID,
		"LeaseKeepAlive alice z  " + hexID,
		"LeaseLeases alice z  " + hexID,
		"Put alice z  " + hexID,
		"Txn alice a c ",
		"Txn alice z-lock/" + strconv.FormatInt(int64(al.ID), 16) + "  ",
		"LeaseRevoke alice z  " + hexID,
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Kind     string `json:"kind"`
			Method   string `json:"method"`
			User     string `json:"user"`
			Key      string `json:"key"`
			RangeEnd string `json:"range_end"`
			Lease    string `json:"lease"`
			Reason   string `json:"reason"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if line.Kind != "refused" {
			continue
		}
		if line.Reason != rpctypes.ErrPermissionDenied.Error() {
			t.Errorf("refusal %s: reason %q", sc.Text(), line.Reason)
		}
		got = append(got, line.Method+" "+line.User+" "+line.Key+" "+line.RangeEnd+" "+line.Lease)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("refusals in the audit log:\n%q\nwant\n%q", got, want)
	}
}
