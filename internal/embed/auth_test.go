package embed

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"

	"github.com/cairn-db/cairn/tests/kit"
)

// enableAuth sets up, through c (no credentials, auth still disabled),
// root (password rootpw), role rw (READWRITE on [k, l)), users alice
// (password pw) and cairn (no password; the test certificates' CN), both
// with rw, and enables auth.
func enableAuth(t *testing.T, c *clientv3.Client) {
	t.Helper()
	ctx := ctxT(t)
	steps := []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := c.RoleAdd(ctx, "root"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.RoleAdd(ctx, "rw"); return err },
		func() error {
			_, err := c.RoleGrantPermission(ctx, "rw", "k", "l", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := c.UserAdd(ctx, "alice", "pw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "alice", "rw"); return err },
		func() error {
			_, err := c.UserAddWithOptions(ctx, "cairn", "", &clientv3.UserAddOptions{NoPassword: true})
			return err
		},
		func() error { _, err := c.UserGrantRole(ctx, "cairn", "rw"); return err },
		func() error { _, err := c.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
}

func clientAs(t *testing.T, m *Member, user, password string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs(), DialTimeout: 10 * time.Second,
		Username: user, Password: password, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func authConfig(t *testing.T) *Config {
	cfg := testConfig(t, t.TempDir())
	cfg.BcryptCost = 4
	return cfg
}

// TestAuthGateway runs the auth flow over the JSON gateway, as curl users
// do: authenticate, then send the token in the Authorization header.
func TestAuthGateway(t *testing.T) {
	m := start(t, authConfig(t))
	enableAuth(t, client(t, m))
	url := m.ClientURLs()[0]
	hc := http.DefaultClient

	var st struct {
		Enabled bool `json:"enabled"`
	}
	postJSON(t, hc, url+"/v3/auth/status", `{}`, http.StatusOK, &st)
	if !st.Enabled {
		t.Fatal("auth status over the gateway: not enabled")
	}
	postJSON(t, hc, url+"/v3/auth/authenticate", `{"name":"alice","password":"nope"}`, http.StatusBadRequest, nil)
	var login struct {
		Token string `json:"token"`
	}
	postJSON(t, hc, url+"/v3/auth/authenticate", `{"name":"alice","password":"pw"}`, http.StatusOK, &login)
	if login.Token == "" {
		t.Fatal("no token")
	}
	post := func(path, token, body string) (int, string) {
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cases := []struct {
		path, token, body string
		status            int
		has               string
	}{
		{"/v3/kv/put", "", `{"key":"` + b64("k1") + `","value":"` + b64("v") + `"}`, http.StatusBadRequest, "user name is empty"},
		{"/v3/kv/put", login.Token, `{"key":"` + b64("k1") + `","value":"` + b64("v") + `"}`, http.StatusOK, "header"},
		{"/v3/kv/range", login.Token, `{"key":"` + b64("k1") + `"}`, http.StatusOK, b64("v")},
		{"/v3/kv/put", login.Token, `{"key":"` + b64("z") + `","value":"` + b64("v") + `"}`, http.StatusForbidden, "permission denied"},
		{"/v3/kv/range", "bogus.token", `{"key":"` + b64("k1") + `"}`, http.StatusUnauthorized, "invalid auth token"},
		{"/v3/auth/user/list", login.Token, `{}`, http.StatusForbidden, "permission denied"},
		{"/v3/maintenance/defragment", login.Token, `{}`, http.StatusForbidden, "permission denied"},
		{"/v3/maintenance/alarm", login.Token, `{"action":"GET"}`, http.StatusOK, "header"},
		{"/v3/maintenance/alarm", login.Token, `{"action":"DEACTIVATE"}`, http.StatusForbidden, "permission denied"},
		{"/v3/maintenance/status", "", `{}`, http.StatusBadRequest, "user name is empty"},
	}
	for _, c := range cases {
		status, body := post(c.path, c.token, c.body)
		if status != c.status || !strings.Contains(body, c.has) {
			t.Errorf("POST %s (token %q): %d %s, want %d containing %q", c.path, c.token, status, body, c.status, c.has)
		}
	}
	var rootLogin struct {
		Token string `json:"token"`
	}
	postJSON(t, hc, url+"/v3/auth/authenticate", `{"name":"root","password":"rootpw"}`, http.StatusOK, &rootLogin)
	status, body := post("/v3/auth/user/list", rootLogin.Token, `{}`)
	var users struct {
		Users []string `json:"users"`
	}
	if err := json.Unmarshal([]byte(body), &users); status != http.StatusOK || err != nil || strings.Join(users.Users, ",") != "alice,cairn,root" {
		t.Fatalf("user list as root: %d %s", status, body)
	}
}

// TestAuthClientCertCN: with --client-cert-auth, a client that presents a
// verified certificate and no credentials runs as the certificate's CN
// ("cairn"), as in etcd.
func TestAuthClientCertCN(t *testing.T) {
	pki := newTestPKI(t)
	cfg := authConfig(t)
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{CertFile: pki.certFile, KeyFile: pki.keyFile, TrustedCAFile: pki.caFile, ClientCertAuth: true}
	m := start(t, cfg)
	withCert := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}
	c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs(), TLS: withCert, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enableAuth(t, c)
	ctx := ctxT(t)
	if _, err := c.Put(ctx, "k1", "v"); err != nil {
		t.Fatalf("put k1 as the certificate's CN: %v", err)
	}
	if _, err := c.Put(ctx, "z", "v"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("put z as the certificate's CN: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	if _, err := c.UserList(ctx); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("user list as the certificate's CN: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
}

// TestAuthLockAndElection: the Lock and Election services run on the
// member's self-client with the caller's token: a user may lock and campaign
// on names inside their permissions and not outside.
func TestAuthLockAndElection(t *testing.T) {
	m := start(t, authConfig(t))
	enableAuth(t, client(t, m))
	alice := clientAs(t, m, "alice", "pw")
	ctx := ctxT(t)
	s, err := concurrency.NewSession(alice, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mu := concurrency.NewMutex(s, "k-lock")
	if err := mu.Lock(ctx); err != nil {
		t.Fatalf("lock inside alice's permissions: %v", err)
	}
	if err := mu.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := concurrency.NewMutex(s, "z-lock").Lock(ctx); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("lock outside alice's permissions: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	e := concurrency.NewElection(s, "k-election")
	if err := e.Campaign(ctx, "v"); err != nil {
		t.Fatalf("campaign inside alice's permissions: %v", err)
	}
}

// TestAuthLeaseExpiryRevokesKeys: the leader revokes an expired lease as
// root, as etcd does, so a user's leased keys go whatever the auth rules.
func TestAuthLeaseExpiryRevokesKeys(t *testing.T) {
	m := start(t, authConfig(t))
	enableAuth(t, client(t, m))
	alice := clientAs(t, m, "alice", "pw")
	ctx := ctxT(t)
	l, err := alice.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Put(ctx, "k-leased", "v", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, "the expired lease's key to go", func() bool {
		r, err := alice.Get(ctx, "k-leased")
		return err == nil && len(r.Kvs) == 0
	})
}

// TestAuthRevisionChangesRetriedByClient: while root changes roles (each
// change bumps the auth revision), a user's requests checked at the old
// revision come back "revision of auth store is old" and clientv3 retries
// them with a fresh token, as against etcd: every write succeeds.
func TestAuthRevisionChangesRetriedByClient(t *testing.T) {
	m := start(t, authConfig(t))
	enableAuth(t, client(t, m))
	root := clientAs(t, m, "root", "rootpw")
	alice := clientAs(t, m, "alice", "pw")
	ctx := ctxT(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var changes int
	wg.Add(1)
	go func() {
		defer wg.Done()
		// A bounded number of changes: a flood of them would keep the
		// client retrying (against etcd as well).
		for i := range 100 {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("x%d", i)
			if _, err := root.RoleGrantPermission(ctx, "rw", key, "", clientv3.PermissionType(clientv3.PermRead)); err != nil {
				t.Errorf("grant: %v", err)
				return
			}
			changes++
		}
	}()
	for i := range 200 {
		if _, err := alice.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Errorf("put %d while roles change: %v", i, err)
			break
		}
		if _, err := alice.Get(ctx, "k", clientv3.WithPrefix()); err != nil {
			t.Errorf("get %d while roles change: %v", i, err)
			break
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d role changes during the requests", changes)
	if changes == 0 {
		t.Fatal("no role changed during the requests")
	}
}

// TestAuthClientReauthenticates: when its token stops being valid (here
// every token is forgotten by turning auth off and on), clientv3 gets
// "invalid auth token", logs in again by itself and retries, as against
// etcd.
func TestAuthClientReauthenticates(t *testing.T) {
	m := start(t, authConfig(t))
	enableAuth(t, client(t, m))
	alice := clientAs(t, m, "alice", "pw")
	root := clientAs(t, m, "root", "rootpw")
	ctx := ctxT(t)
	if _, err := alice.Put(ctx, "k1", "v1"); err != nil {
		t.Fatal(err)
	}
	old, err := alice.Authenticate(ctx, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.AuthDisable(ctx); err != nil {
		t.Fatal(err)
	}
	// root's token went too: log in again to turn auth back on.
	if _, err := client(t, m).AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	raw := client(t, m)
	_, err = raw.Get(metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, old.Token), "k1")
	if !errors.Is(err, rpctypes.ErrInvalidAuthToken) {
		t.Fatalf("a forgotten token: %v, want %v", err, rpctypes.ErrInvalidAuthToken)
	}
	r, err := alice.Get(ctx, "k1")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v1" {
		t.Fatalf("alice's client after its token was forgotten: %v %v", r, err)
	}
	if _, err := root.Put(ctx, "z", "v"); err != nil {
		t.Fatalf("root's client after its token was forgotten: %v", err)
	}
}
