package embed

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdembed "go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/lockelect"
	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// identCerts are the certificates of the client-certificate identity
// tests, all from one CA: the member's server certificate (CN "member"),
// its --client-cert-file (CN "gwuser"), and clients named by their CN
// ("alice", "root") or without one (nocn).
type identCerts struct {
	ca                            *testCA
	member, gw, alice, root, nocn issued
}

func newIdentCerts(t *testing.T) identCerts {
	ca := newTestCA(t)
	return identCerts{
		ca:     ca,
		member: ca.issue("member", "member", "127.0.0.1"),
		gw:     ca.issue("gw", "gwuser"),
		alice:  ca.issue("alice", "alice"),
		root:   ca.issue("root", "root"),
		nocn:   ca.issue("nocn", ""),
	}
}

// identSide is one server of the comparison: its host:port, serving gRPC
// and the JSON gateway over TLS with --client-cert-auth.
type identSide struct {
	name  string
	addr  string
	certs identCerts
}

// startIdentPair starts etcd and a cairn member with the same client TLS
// settings (--cert-file member, --client-cert-file gw, --trusted-ca-file,
// --client-cert-auth) and the same users, and enables auth on both: root
// (password rootpw), and alice, member and gwuser (no password, so only
// their certificates name them) with read-write on [k, l), [m, n) and
// [g, h).
func startIdentPair(t *testing.T) (etcd, cairn identSide) {
	t.Helper()
	certs := newIdentCerts(t)
	e := oracle.Start(t, func(cfg *etcdembed.Config) {
		cfg.BcryptCost = 4
		for i := range cfg.ListenClientUrls {
			cfg.ListenClientUrls[i].Scheme = "https"
			cfg.AdvertiseClientUrls[i].Scheme = "https"
		}
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: certs.member.certFile, KeyFile: certs.member.keyFile,
			TrustedCAFile: certs.ca.file, ClientCertAuth: true,
			ClientCertFile: certs.gw.certFile, ClientKeyFile: certs.gw.keyFile,
		}
	})
	cfg := authConfig(t)
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{
		CertFile: certs.member.certFile, KeyFile: certs.member.keyFile,
		TrustedCAFile: certs.ca.file, ClientCertAuth: true,
		ClientCertFile: certs.gw.certFile, ClientKeyFile: certs.gw.keyFile,
	}
	m := start(t, cfg)
	etcd = identSide{name: "etcd", addr: e.Addr, certs: certs}
	cairn = identSide{name: "cairn", addr: hostPort(t, m.ClientURLs()[0]), certs: certs}
	for _, s := range []identSide{etcd, cairn} {
		s.setUpAuth(t)
	}
	return etcd, cairn
}

func (s identSide) tlsConfig(who issued) *tls.Config {
	return &tls.Config{RootCAs: s.certs.ca.pool, Certificates: []tls.Certificate{who.pair}}
}

func (s identSide) setUpAuth(t *testing.T) {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + s.addr}, TLS: s.tlsConfig(s.certs.root),
		DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	steps := []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
	}
	for _, u := range []struct{ name, from, to string }{{"alice", "k", "l"}, {"member", "m", "n"}, {"gwuser", "g", "h"}} {
		steps = append(steps,
			func() error {
				_, err := c.UserAddWithOptions(ctx, u.name, "", &clientv3.UserAddOptions{NoPassword: true})
				return err
			},
			func() error { _, err := c.RoleAdd(ctx, "rw-"+u.name); return err },
			func() error {
				_, err := c.RoleGrantPermission(ctx, "rw-"+u.name, u.from, u.to, clientv3.PermissionType(clientv3.PermReadWrite))
				return err
			},
			func() error { _, err := c.UserGrantRole(ctx, u.name, "rw-"+u.name); return err },
		)
	}
	steps = append(steps, func() error { _, err := c.AuthEnable(ctx); return err })
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("%s: auth setup step %d: %v", s.name, i, err)
		}
	}
}

// conn is a plain gRPC connection presenting who's certificate, without
// clientv3's retries, so the test sees exactly what the server answered.
func (s identSide) conn(t *testing.T, who issued) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(s.tlsConfig(who))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rootToken logs root in over gRPC.
func (s identSide) rootToken(t *testing.T) string {
	t.Helper()
	resp, err := pb.NewAuthClient(s.conn(t, s.certs.nocn)).Authenticate(ctxT(t), &pb.AuthenticateRequest{Name: "root", Password: "rootpw"})
	if err != nil {
		t.Fatalf("%s: authenticate root: %v", s.name, err)
	}
	return resp.Token
}

// identOutcome renders an answer without what differs between two servers
// (headers, lease IDs, the random part of keys), or an error by its gRPC
// code and message.
func identOutcome(resp any, err error) string {
	if err != nil {
		st := status.Convert(err)
		return fmt.Sprintf("error %s %q", st.Code(), st.Message())
	}
	prefix := func(key []byte) string {
		k := string(key)
		return k[:strings.LastIndexByte(k, '/')+1]
	}
	switch r := resp.(type) {
	case *v3lockpb.LockResponse:
		return "locked " + prefix(r.Key)
	case *v3electionpb.CampaignResponse:
		return "leading " + prefix(r.Leader.Key)
	case *v3electionpb.LeaderResponse:
		return "leader value " + string(r.Kv.Value)
	}
	return "ok"
}

// runIdentGRPC runs the Lock and Election calls of a client that
// authenticates by its certificate alone, and the calls that must not be
// honoured, on one side, and returns their outcomes in order.
func runIdentGRPC(t *testing.T, s identSide) []string {
	t.Helper()
	ctx := ctxT(t)
	var out []string
	record := func(what string, resp any, err error) {
		out = append(out, what+": "+identOutcome(resp, err))
	}
	alice := s.conn(t, s.certs.alice)
	lock, elect := v3lockpb.NewLockClient(alice), v3electionpb.NewElectionClient(alice)

	lk, err := lock.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("k-lock")})
	record("alice Lock k-lock", lk, err)
	resp, err := lock.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("z-lock")})
	record("alice Lock z-lock", resp, err)
	if lk != nil {
		resp, err := lock.Unlock(ctx, &v3lockpb.UnlockRequest{Key: lk.Key})
		record("alice Unlock k-lock", resp, err)
	}
	uresp, err := lock.Unlock(ctx, &v3lockpb.UnlockRequest{Key: []byte("z-lock/1")})
	record("alice Unlock z-lock/1", uresp, err)

	lease, err := pb.NewLeaseClient(alice).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60})
	if err != nil {
		t.Fatalf("%s: lease grant as alice: %v", s.name, err)
	}
	camp, err := elect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("k-el"), Lease: lease.ID, Value: []byte("v1")})
	record("alice Campaign k-el", camp, err)
	cresp, err := elect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("z-el"), Lease: lease.ID, Value: []byte("v1")})
	record("alice Campaign z-el", cresp, err)
	if camp != nil {
		presp, err := elect.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: camp.Leader, Value: []byte("v2")})
		record("alice Proclaim k-el", presp, err)
	}
	lresp, err := elect.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("k-el")})
	record("alice Leader k-el", lresp, err)
	lresp, err = elect.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("z-el")})
	record("alice Leader z-el", lresp, err)
	octx, cancel := context.WithCancel(ctx)
	obs, err := elect.Observe(octx, &v3electionpb.LeaderRequest{Name: []byte("k-el")})
	if err == nil {
		var first *v3electionpb.LeaderResponse
		first, err = obs.Recv()
		record("alice Observe k-el", first, err)
	} else {
		record("alice Observe k-el", nil, err)
	}
	cancel()
	if camp != nil {
		rresp, err := elect.Resign(ctx, &v3electionpb.ResignRequest{Leader: camp.Leader})
		record("alice Resign k-el", rresp, err)
	}

	// A token takes precedence over the certificate: root's, with
	// alice's certificate, may lock where alice may not.
	asRootCtx := metadata.AppendToOutgoingContext(ctx, "token", s.rootToken(t))
	resp, err = lock.Lock(asRootCtx, &v3lockpb.LockRequest{Name: []byte("z-root")})
	record("alice's certificate, root's token, Lock z-root", resp, err)

	// A certificate without a CN names nobody, and a name a client puts in
	// the metadata the member uses on its private socket names nobody
	// either.
	nocn := v3lockpb.NewLockClient(s.conn(t, s.certs.nocn))
	resp, err = nocn.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("k-nocn")})
	record("no CN Lock k-nocn", resp, err)
	forged := metadata.AppendToOutgoingContext(ctx, lockelect.CallerCNKey, "root")
	resp, err = nocn.Lock(forged, &v3lockpb.LockRequest{Name: []byte("z-forged")})
	record("no CN, forged CN metadata, Lock z-forged", resp, err)
	resp, err = lock.Lock(forged, &v3lockpb.LockRequest{Name: []byte("z-forged")})
	record("alice, forged CN metadata, Lock z-forged", resp, err)
	put, err := pb.NewKVClient(s.conn(t, s.certs.nocn)).Put(forged, &pb.PutRequest{Key: []byte("z-forged"), Value: []byte("v")})
	record("no CN, forged CN metadata, Put z-forged", put, err)
	return out
}

// TestClientCertCNLockElectionMatchesEtcd: with --client-cert-auth and
// auth enabled, a client that authenticates by its certificate's CN alone
// locks and campaigns with its own permissions, as in etcd, although
// cairn's Lock and Election services call the member over its private
// socket; a token takes precedence; no client can name a user through the
// metadata that socket trusts.
func TestClientCertCNLockElectionMatchesEtcd(t *testing.T) {
	etcd, cairn := startIdentPair(t)
	want, got := runIdentGRPC(t, etcd), runIdentGRPC(t, cairn)
	if len(want) != len(got) {
		t.Fatalf("etcd made %d calls, cairn %d:\netcd:  %q\ncairn: %q", len(want), len(got), want, got)
	}
	for i := range want {
		if want[i] != got[i] {
			t.Errorf("etcd:  %s\ncairn: %s", want[i], got[i])
		} else {
			t.Logf("both:  %s", want[i])
		}
	}
	// The oracle's answers are the expected ones, so the comparison
	// compares something.
	for _, line := range []string{
		`alice Lock k-lock: locked k-lock/`,
		`alice Lock z-lock: error Unknown "etcdserver: permission denied"`,
		`alice Campaign k-el: leading k-el/`,
		`alice Leader k-el: leader value v2`,
		`alice's certificate, root's token, Lock z-root: locked z-root/`,
		// A verified certificate without a CN names the user "", whom
		// etcd does not find: permission denied, not "user name is empty".
		`no CN Lock k-nocn: error Unknown "etcdserver: permission denied"`,
		`no CN, forged CN metadata, Lock z-forged: error Unknown "etcdserver: permission denied"`,
		`no CN, forged CN metadata, Put z-forged: error PermissionDenied "etcdserver: permission denied"`,
		`alice, forged CN metadata, Lock z-forged: error Unknown "etcdserver: permission denied"`,
	} {
		if !strings.Contains(strings.Join(want, "\n"), line) {
			t.Errorf("etcd did not answer %s", line)
		}
	}
}

// gatewayIdentCase is one JSON gateway request of the comparison.
type gatewayIdentCase struct {
	client string // "alice" (a certificate with a CN) or "nocn"
	header string // "" (none), "accept", "token" (root's), "forged"
	path   string
	body   string
}

// gatewayIdentCases are the requests: every path under both certificates
// and every kind of header. Lock names carry the case's index, so no
// request waits for a lock an earlier one holds.
func gatewayIdentCases() []gatewayIdentCase {
	var cases []gatewayIdentCase
	for _, client := range []string{"alice", "nocn"} {
		for _, header := range []string{"", "accept", "token", "forged"} {
			for _, p := range []struct{ path, body string }{
				{"/v3/kv/range", `{"key":"` + b64("k1") + `"}`},
				{"/v3/kv/range", `{"key":"` + b64("g1") + `"}`},
				{"/v3/kv/range", `{"key":"` + b64("z1") + `"}`},
				{"/v3/lock/lock", `{"name":"` + b64("k-gw-%d") + `"}`},
				{"/v3/lock/lock", `{"name":"` + b64("g-gw-%d") + `"}`},
				{"/v3/election/leader", `{"name":"` + b64("g-el") + `"}`},
				{"/v3/maintenance/status", `{}`},
				{"/version", ``},
			} {
				cases = append(cases, gatewayIdentCase{client: client, header: header, path: p.path, body: p.body})
			}
		}
	}
	return cases
}

func (c gatewayIdentCase) String() string {
	return fmt.Sprintf("%s, header %q, %s %s", c.client, c.header, c.path, c.body)
}

// runIdentGateway sends the cases to one side's JSON gateway over HTTPS
// and returns their outcomes: the status and the error's code and message
// (or the text of a plain-text answer), "ok" for a success.
func runIdentGateway(t *testing.T, s identSide, cases []gatewayIdentCase) []string {
	t.Helper()
	token := s.rootToken(t)
	clients := map[string]*http.Client{}
	for name, who := range map[string]issued{"alice": s.certs.alice, "nocn": s.certs.nocn} {
		tr := &http.Transport{TLSClientConfig: s.tlsConfig(who)}
		t.Cleanup(tr.CloseIdleConnections)
		clients[name] = &http.Client{Transport: tr}
	}
	var out []string
	for i, c := range cases {
		body := c.body
		if strings.Contains(c.path, "lock") {
			body = fmt.Sprintf(`{"name":"%s"}`, b64(fmt.Sprintf(string(mustUnb64(t, c.body)), i)))
		}
		method := http.MethodPost
		if body == "" {
			method = http.MethodGet
		}
		req, err := http.NewRequestWithContext(ctxT(t), method, "https://"+s.addr+c.path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		switch c.header {
		case "accept":
			req.Header.Set("Accept", "application/json")
		case "token":
			req.Header.Set("Authorization", token)
		case "forged":
			req.Header.Set("Accept", "application/json")
			req.Header.Set("Grpc-Metadata-"+lockelect.CallerCNKey, "root")
		}
		resp, err := clients[c.client].Do(req)
		if err != nil {
			t.Fatalf("%s: %s: %v", s.name, c, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var jsonErr struct {
			Code    *int   `json:"code"`
			Message string `json:"message"`
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			out = append(out, "200 ok")
		case json.Unmarshal(b, &jsonErr) == nil && jsonErr.Code != nil:
			out = append(out, fmt.Sprintf("%d code %d %q", resp.StatusCode, *jsonErr.Code, jsonErr.Message))
		default:
			out = append(out, fmt.Sprintf("%d %q", resp.StatusCode, strings.TrimSpace(string(b))))
		}
	}
	return out
}

// mustUnb64 reverses b64 on the quoted JSON string inside a lock body.
func mustUnb64(t *testing.T, body string) []byte {
	t.Helper()
	var v struct {
		Name []byte `json:"name"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v.Name
}

// TestClientCertGatewayMatchesEtcd: with --client-cert-auth and auth
// enabled, the JSON gateway answers as etcd's does: a request whose
// certificate has a CN is refused with etcd's 400, whatever its token; a
// certificate without a CN runs as the token's user, or as nobody. The one
// difference is etcd's hole: a request without a token and without an
// Accept header runs in etcd as the CN of --client-cert-file ("gwuser",
// who may use [g, h)), in cairn as nobody.
func TestClientCertGatewayMatchesEtcd(t *testing.T) {
	etcd, cairn := startIdentPair(t)
	cases := gatewayIdentCases()
	want, got := runIdentGateway(t, etcd, cases), runIdentGateway(t, cairn, cases)
	const (
		refused   = `400 "` + gatewayCNRefused + `"`
		userEmpty = `400 code 3 "etcdserver: user name is empty"`
		denied    = `403 code 7 "etcdserver: permission denied"`
	)
	// Where etcd lends its gateway's certificate (CN gwuser) to the
	// request, cairn answers as etcd does with an Accept header.
	differs := map[string]struct{ etcd, cairn string }{
		`nocn, header "", /v3/kv/range {"key":"` + b64("k1") + `"}`:           {denied, userEmpty},
		`nocn, header "", /v3/kv/range {"key":"` + b64("g1") + `"}`:           {"200 ok", userEmpty},
		`nocn, header "", /v3/kv/range {"key":"` + b64("z1") + `"}`:           {denied, userEmpty},
		`nocn, header "", /v3/lock/lock {"name":"` + b64("k-gw-%d") + `"}`:    {`500 code 2 "etcdserver: permission denied"`, `500 code 2 "etcdserver: user name is empty"`},
		`nocn, header "", /v3/lock/lock {"name":"` + b64("g-gw-%d") + `"}`:    {"200 ok", `500 code 2 "etcdserver: user name is empty"`},
		`nocn, header "", /v3/election/leader {"name":"` + b64("g-el") + `"}`: {`500 code 2 "election: no leader"`, `500 code 2 "etcdserver: user name is empty"`},
		`nocn, header "", /v3/maintenance/status {}`:                          {"200 ok", userEmpty},
	}
	for i, c := range cases {
		d, known := differs[c.String()]
		switch {
		case known && (want[i] != d.etcd || got[i] != d.cairn):
			t.Errorf("%s:\netcd:  %s (expected %s)\ncairn: %s (expected %s)", c, want[i], d.etcd, got[i], d.cairn)
		case !known && want[i] != got[i]:
			t.Errorf("%s:\netcd:  %s\ncairn: %s", c, want[i], got[i])
		case !known && c.client == "alice" && c.path != "/version" && want[i] != refused:
			t.Errorf("%s: etcd answered %s, want its refusal of a CN", c, want[i])
		default:
			t.Logf("%s: etcd %s, cairn %s", c, want[i], got[i])
		}
	}
}

// TestGatewayNeedsNoClientCertFile: with --client-cert-auth and a
// --cert-file valid for servers only, etcd's JSON gateway cannot reach its
// own member (it presents --cert-file, which the member refuses as a
// client certificate) unless --client-cert-file gives it one; cairn's
// gateway reaches the member over its private socket, so it serves the
// same request without one. This is why cairn never presents
// --client-cert-file.
func TestGatewayNeedsNoClientCertFile(t *testing.T) {
	pki := newTestPKI(t) // server.pem: ServerAuth only; client.pem: ClientAuth only
	rangeOn := func(addr string) string {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}}}
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, "https://"+addr+"/v3/kv/range", strings.NewReader(`{"key":"`+b64("k")+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		hc.CloseIdleConnections()
		return resp.Status
	}
	startEtcd := func(clientCertFile, clientKeyFile string) string {
		e := oracle.Start(t, func(cfg *etcdembed.Config) {
			for i := range cfg.ListenClientUrls {
				cfg.ListenClientUrls[i].Scheme = "https"
				cfg.AdvertiseClientUrls[i].Scheme = "https"
			}
			cfg.ClientTLSInfo = transport.TLSInfo{CertFile: pki.certFile, KeyFile: pki.keyFile, TrustedCAFile: pki.caFile,
				ClientCertAuth: true, ClientCertFile: clientCertFile, ClientKeyFile: clientKeyFile}
		})
		return e.Addr
	}
	if got := rangeOn(startEtcd("", "")); got != "503 Service Unavailable" {
		t.Errorf("etcd without --client-cert-file: %s, want its gateway unable to connect (503)", got)
	}
	if got := rangeOn(startEtcd(pki.clientCertFile, pki.clientKeyFile)); got != "200 OK" {
		t.Errorf("etcd with --client-cert-file: %s, want 200", got)
	}
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{CertFile: pki.certFile, KeyFile: pki.keyFile, TrustedCAFile: pki.caFile, ClientCertAuth: true}
	m := start(t, cfg)
	// A linearizable read racing the member's first election fails with
	// "leader changed", as etcd's does: wait for the leader first.
	kit.WaitFor(t, "a leader", func() bool { return m.Server().Leader() != 0 })
	if got := rangeOn(hostPort(t, m.ClientURLs()[0])); got != "200 OK" {
		t.Errorf("cairn without --client-cert-file: %s, want 200", got)
	}
}
