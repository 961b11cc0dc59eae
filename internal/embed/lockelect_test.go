package embed

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/tests/kit"
)

// requireLeases fails the test at once, saying why, when the member does
// not grant a lease: locks and elections are keys attached to leases and
// cannot work without them.
func requireLeases(t *testing.T, c *clientv3.Client) {
	t.Helper()
	resp, err := c.Grant(ctxT(t), 60)
	if err != nil {
		t.Fatalf("the member grants no lease, so no lock or election can be taken: Grant: %v", err)
	}
	if _, err := c.Revoke(ctxT(t), resp.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
}

func newSession(t *testing.T, c *clientv3.Client, opts ...concurrency.SessionOption) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(c, opts...)
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// lockWait bounds a wait for a lock or leadership the test expects to come;
// reaching it fails the test, it is not a speed assertion.
const lockWait = 30 * time.Second

// TestLockMutex takes a lock with clientv3's concurrency.Mutex: a second
// session cannot take it while the first holds it, waits, and gets it once
// the first unlocks.
func TestLockMutex(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	requireLeases(t, c)
	ctx := ctxT(t)

	s1, s2 := newSession(t, c), newSession(t, c)
	m1, m2 := concurrency.NewMutex(s1, "/lock/a"), concurrency.NewMutex(s2, "/lock/a")
	if err := m1.Lock(ctx); err != nil {
		t.Fatalf("first lock: %v", err)
	}
	if err := m2.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("try-lock while held: %v, want %v", err, concurrency.ErrLocked)
	}
	got := make(chan error, 1)
	go func() { got <- m2.Lock(ctx) }()
	select {
	case err := <-got:
		t.Fatalf("second lock returned while the first holds it: %v", err)
	default:
	}
	if err := m1.Unlock(ctx); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second lock: %v", err)
		}
	case <-time.After(lockWait):
		t.Fatal("second lock not granted after the first unlocked")
	}
	if m2.Header().Revision <= m1.Header().Revision {
		t.Errorf("second grant at revision %d, first at %d", m2.Header().Revision, m1.Header().Revision)
	}
	if err := m2.Unlock(ctx); err != nil {
		t.Fatalf("second unlock: %v", err)
	}
}

// TestLockRPC drives the member's Lock service with the raw gRPC client,
// as etcdctl lock does: a grant, a second caller that waits for Unlock, and
// a lock whose session lease is revoked while held, which releases it.
func TestLockRPC(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	requireLeases(t, c)
	ctx := ctxT(t)
	lc := v3lockpb.NewLockClient(c.ActiveConnection())

	l1, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	first, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("rpc"), Lease: int64(l1.ID)})
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	wantKey := "rpc/" + strconv.FormatInt(int64(l1.ID), 16)
	if string(first.Key) != wantKey {
		t.Fatalf("lock key %q, want %q", first.Key, wantKey)
	}
	got, err := c.Get(ctx, wantKey)
	if err != nil || len(got.Kvs) != 1 || got.Kvs[0].Lease != int64(l1.ID) {
		t.Fatalf("the lock key in the store: %v %v", got, err)
	}

	// A second caller with its own lease waits until Unlock.
	l2, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan *v3lockpb.LockResponse, 1)
	secondErr := make(chan error, 1)
	go func() {
		r, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("rpc"), Lease: int64(l2.ID)})
		if err != nil {
			secondErr <- err
			return
		}
		second <- r
	}()
	kit.WaitKeys(t, c, "rpc/", 2)
	if _, err := lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: first.Key}); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	var r2 *v3lockpb.LockResponse
	select {
	case r2 = <-second:
	case err := <-secondErr:
		t.Fatalf("second lock: %v", err)
	case <-time.After(lockWait):
		t.Fatal("second lock not granted after unlock")
	}
	if r2.Header.Revision <= first.Header.Revision {
		t.Errorf("second grant at revision %d, first at %d", r2.Header.Revision, first.Header.Revision)
	}

	// Revoking the holder's lease deletes its key: a third caller gets
	// the lock without anybody calling Unlock.
	third := make(chan error, 1)
	go func() {
		_, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("rpc")}) // lease 0: the server grants one
		third <- err
	}()
	kit.WaitKeys(t, c, "rpc/", 2)
	if _, err := c.Revoke(ctx, l2.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	select {
	case err := <-third:
		if err != nil {
			t.Fatalf("lock after the holder's lease was revoked: %v", err)
		}
	case <-time.After(lockWait):
		t.Fatal("the lock was not released by revoking its holder's lease")
	}

	// Unlock of a key that is not there succeeds, as in etcd.
	if _, err := lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: []byte("rpc/gone")}); err != nil {
		t.Errorf("unlock of a missing key: %v", err)
	}
}

// TestLockRevokedSession revokes the lease of a concurrency.Session that
// holds a lock: the lock is released, its key is gone, and a waiting
// session gets it.
func TestLockRevokedSession(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	requireLeases(t, c)
	ctx := ctxT(t)

	s1, s2 := newSession(t, c), newSession(t, c)
	m1, m2 := concurrency.NewMutex(s1, "/lock/revoke"), concurrency.NewMutex(s2, "/lock/revoke")
	if err := m1.Lock(ctx); err != nil {
		t.Fatalf("first lock: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- m2.Lock(ctx) }()
	kit.WaitKeys(t, c, "/lock/revoke/", 2)
	if _, err := c.Revoke(ctx, s1.Lease()); err != nil {
		t.Fatalf("revoke the holder's lease: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("lock after the holder's lease was revoked: %v", err)
		}
	case <-time.After(lockWait):
		t.Fatal("the lock was not released by revoking its holder's lease")
	}
	// The lock key of the revoked session is gone.
	resp, err := c.Get(ctx, m1.Key())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the revoked holder's key: %v %v", resp, err)
	}
}

// TestLockElection campaigns, proclaims, observes, and resigns with
// concurrency.Election against the member's Election service (through
// clientv3, which uses KV and Watch) and reads the leader through the
// Election RPCs themselves.
func TestLockElection(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	requireLeases(t, c)
	ctx := ctxT(t)
	ec := v3electionpb.NewElectionClient(c.ActiveConnection())

	if _, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("elect")}); err == nil || status.Convert(err).Message() != "election: no leader" {
		t.Fatalf("leader of an empty election: %v, want election: no leader", err)
	}

	obsCtx, stopObserve := context.WithCancel(ctx)
	defer stopObserve()
	observed, err := ec.Observe(obsCtx, &v3electionpb.LeaderRequest{Name: []byte("elect")})
	if err != nil {
		t.Fatalf("observe: %v", err)
	}

	// Campaign over the RPC with a lease of our own.
	lease, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	won, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("elect"), Lease: int64(lease.ID), Value: []byte("a")})
	if err != nil {
		t.Fatalf("campaign: %v", err)
	}
	expectObserved(t, observed, "a")
	if _, err := ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: won.Leader, Value: []byte("b")}); err != nil {
		t.Fatalf("proclaim: %v", err)
	}
	expectObserved(t, observed, "b")
	lead, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("elect")})
	if err != nil || string(lead.Kv.Value) != "b" || lead.Kv.Lease != int64(lease.ID) {
		t.Fatalf("leader: %v %v", lead, err)
	}

	// A clientv3 election on the same name waits for the resignation.
	s := newSession(t, c)
	e := concurrency.NewElection(s, "elect")
	campaigned := make(chan error, 1)
	go func() { campaigned <- e.Campaign(ctx, "c") }()
	kit.WaitKeys(t, c, "elect/", 2)
	if _, err := ec.Resign(ctx, &v3electionpb.ResignRequest{Leader: won.Leader}); err != nil {
		t.Fatalf("resign: %v", err)
	}
	select {
	case err := <-campaigned:
		if err != nil {
			t.Fatalf("second campaign: %v", err)
		}
	case <-time.After(lockWait):
		t.Fatal("second campaign not won after the leader resigned")
	}
	expectObserved(t, observed, "c")
	if err := e.Proclaim(ctx, "d"); err != nil {
		t.Fatalf("clientv3 proclaim: %v", err)
	}
	expectObserved(t, observed, "d")
	lr, err := e.Leader(ctx)
	if err != nil || string(lr.Kvs[0].Value) != "d" {
		t.Fatalf("clientv3 leader: %v %v", lr, err)
	}

	// The old leader key no longer leads: Proclaim refuses with etcd's
	// error, Resign succeeds anyway.
	if _, err := ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: won.Leader, Value: []byte("x")}); err == nil || status.Convert(err).Message() != "election: not leader" {
		t.Fatalf("proclaim by a former leader: %v, want election: not leader", err)
	}
	if err := e.Resign(ctx); err != nil {
		t.Fatalf("clientv3 resign: %v", err)
	}
	if _, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("elect")}); err == nil || status.Convert(err).Message() != "election: no leader" {
		t.Fatalf("leader after every resignation: %v, want election: no leader", err)
	}
}

func expectObserved(t *testing.T, o v3electionpb.Election_ObserveClient, value string) {
	t.Helper()
	r, err := o.Recv()
	if err != nil {
		t.Fatalf("observe, waiting for %q: %v", value, err)
	}
	if string(r.Kv.Value) != value {
		t.Fatalf("observed %q, want %q", r.Kv.Value, value)
	}
}

// TestLockServed checks, without leases, that a member serves the Lock and
// Election services over gRPC and etcd's JSON gateway, plain and over TLS
// with client-certificate auth (the member's self-client needs neither),
// backed by its own KV: errors that only a read of the store can give come
// back with etcd's text.
func TestLockServed(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		m := start(t, testConfig(t, t.TempDir()))
		checkServed(t, m, client(t, m), http.DefaultClient)
	})
	t.Run("tls", func(t *testing.T) {
		pki := newTestPKI(t)
		cfg := testConfig(t, t.TempDir())
		cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
		cfg.ClientTLS = TLSInfo{CertFile: pki.certFile, KeyFile: pki.keyFile, TrustedCAFile: pki.caFile, ClientCertAuth: true}
		m := start(t, cfg)
		withCert := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}
		c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs(), TLS: withCert, DialTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		tr := &http.Transport{TLSClientConfig: withCert.Clone()}
		t.Cleanup(tr.CloseIdleConnections)
		checkServed(t, m, c, &http.Client{Transport: tr})
	})
	t.Run("no-gateway", func(t *testing.T) {
		cfg := testConfig(t, t.TempDir())
		cfg.EnableGRPCGateway = false
		m := start(t, cfg)
		ec := v3electionpb.NewElectionClient(client(t, m).ActiveConnection())
		if _, err := ec.Leader(ctxT(t), &v3electionpb.LeaderRequest{Name: []byte("nobody")}); status.Convert(err).Message() != "election: no leader" {
			t.Fatalf("leader of an empty election: %v, want election: no leader", err)
		}
		postJSON(t, http.DefaultClient, m.ClientURLs()[0]+"/v3/election/leader", `{"name":"`+b64("nobody")+`"}`, http.StatusNotFound, nil)
	})
}

func checkServed(t *testing.T, m *Member, c *clientv3.Client, hc *http.Client) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := c.Put(ctx, "gw/other", "v"); err != nil {
		t.Fatal(err)
	}
	ec := v3electionpb.NewElectionClient(c.ActiveConnection())
	lc := v3lockpb.NewLockClient(c.ActiveConnection())
	if _, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("nobody")}); status.Convert(err).Message() != "election: no leader" {
		t.Fatalf("leader of an empty election: %v, want election: no leader", err)
	}
	lead, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("gw")})
	if err != nil || string(lead.Kv.Key) != "gw/other" {
		t.Fatalf("leader read from the store: %v %v", lead, err)
	}
	if _, err := ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Value: []byte("x")}); status.Convert(err).Message() != `"leader" field must be provided` {
		t.Fatalf("proclaim without a leader key: %v", err)
	}
	// Unlock deletes whatever key it is given and never fails for a
	// missing one.
	if _, err := lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: []byte("gw/gone")}); err != nil {
		t.Fatalf("unlock of a missing key: %v", err)
	}

	url := m.ClientURLs()[0]
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	postJSON(t, hc, url+"/v3/election/leader", `{"name":"`+b64("nobody")+`"}`, http.StatusInternalServerError, &e)
	if e.Message != "election: no leader" || e.Code != int(codes.Unknown) {
		t.Fatalf("gateway leader of an empty election: %+v", e)
	}
	var lr struct {
		KV struct {
			Key []byte `json:"key"`
		} `json:"kv"`
	}
	postJSON(t, hc, url+"/v3/election/leader", `{"name":"`+b64("gw")+`"}`, http.StatusOK, &lr)
	if string(lr.KV.Key) != "gw/other" {
		t.Fatalf("gateway leader: %+v", lr)
	}
	postJSON(t, hc, url+"/v3/lock/unlock", `{"key":"`+b64("gw/other")+`"}`, http.StatusOK, nil)
	if resp, err := c.Get(ctx, "gw/other"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the key after a gateway unlock: %v %v", resp, err)
	}
	// The KV gateway is still served beside them.
	postJSON(t, hc, url+"/v3/kv/range", `{"key":"`+b64("k")+`"}`, http.StatusOK, nil)
}

// TestLockGateway takes and releases a lock through etcd's JSON gateway.
func TestLockGateway(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	c := client(t, m)
	requireLeases(t, c)
	url := m.ClientURLs()[0]

	var lock struct {
		Key []byte `json:"key"`
	}
	postJSON(t, http.DefaultClient, url+"/v3/lock/lock", `{"name":"`+b64("gw")+`"}`, http.StatusOK, &lock)
	if !bytes.HasPrefix(lock.Key, []byte("gw/")) {
		t.Fatalf("lock key %q", lock.Key)
	}
	if resp, err := c.Get(ctxT(t), string(lock.Key)); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the lock key after lock: %v %v", resp, err)
	}
	postJSON(t, http.DefaultClient, url+"/v3/lock/unlock", `{"key":"`+b64(string(lock.Key))+`"}`, http.StatusOK, nil)
	if resp, err := c.Get(ctxT(t), string(lock.Key)); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the lock key after unlock: %v %v", resp, err)
	}
}

func b64(s string) string {
	b, _ := json.Marshal([]byte(s))
	return string(b[1 : len(b)-1])
}

func postJSON(t *testing.T, hc *http.Client, url, body string, wantStatus int, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, url, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != wantStatus {
		t.Fatalf("POST %s: %d %s, want status %d", url, resp.StatusCode, b, wantStatus)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("POST %s: answer %s: %v", url, b, err)
		}
	}
}

// TestLockTLS serves only https:// with client-certificate auth: the
// member's self-client does not go through TLS, so locks and the gateway
// still work.
func TestLockTLS(t *testing.T) {
	pki := newTestPKI(t)
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{CertFile: pki.certFile, KeyFile: pki.keyFile, TrustedCAFile: pki.caFile, ClientCertAuth: true}
	m := start(t, cfg)
	withCert := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}
	c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs(), TLS: withCert, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	requireLeases(t, c)
	ctx := ctxT(t)

	mu := concurrency.NewMutex(newSession(t, c), "/lock/tls")
	if err := mu.Lock(ctx); err != nil {
		t.Fatalf("mutex lock over TLS: %v", err)
	}
	lc := v3lockpb.NewLockClient(c.ActiveConnection())
	waiting, cancel := context.WithCancel(ctx)
	got := make(chan error, 1)
	go func() {
		_, err := lc.Lock(waiting, &v3lockpb.LockRequest{Name: []byte("/lock/tls")})
		got <- err
	}()
	kit.WaitKeys(t, c, "/lock/tls/", 2)
	if err := mu.Unlock(ctx); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Lock RPC over TLS: %v", err)
		}
	case <-time.After(lockWait):
		t.Fatal("Lock RPC over TLS not granted after the mutex unlocked")
	}
	cancel()
}
