package embed

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testCA issues certificates and revocation lists for the TLS tests.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
	pool *x509.CertPool
	next int64 // the next serial number
}

// issued is one certificate, as files and as what a Go client presents.
type issued struct {
	certFile, keyFile string
	serial            *big.Int
	pair              tls.Certificate
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cairn test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key, pool: x509.NewCertPool(), next: 2}
	ca.pool.AddCert(cert)
	ca.file = ca.write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

func (ca *testCA) write(name string, data []byte) string {
	ca.t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// issue signs a certificate for cn, valid for servers and clients, naming
// hosts (IP addresses or DNS names), written as <name>.pem and
// <name>-key.pem.
func (ca *testCA) issue(name, cn string, hosts ...string) issued {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	serial := big.NewInt(ca.next)
	ca.next++
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return issued{
		certFile: ca.write(name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyFile:  ca.write(name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})),
		serial:   serial,
		pair:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
	}
}

// crl writes a revocation list revoking serials to path.
func (ca *testCA) crl(path string, number int64, serials ...*big.Int) {
	ca.t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	copyFile(ca.t, path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
}

// copyFile replaces path's content in place, as cp does (same inode,
// truncated then written).
func copyFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// handshake dials addr (host:port) over TLS with cfg and sends an HTTP
// request: it returns the server's leaf certificate if the server served
// it (whatever the status), or the error that ended the connection.
func handshake(t *testing.T, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// With TLS 1.3 a server refuses the client's certificate after the
	// client's side of the handshake is done: only the request tells.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("GET /health HTTP/1.1\r\nHost: cairn\r\n\r\n")); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	_, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		t.Fatalf("URL %s", rawURL)
	}
	return rest
}

// tlsClient connects a clientv3 client to m's client URLs with cfg.
func tlsClient(t *testing.T, m *Member, cfg *tls.Config) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs(), TLS: cfg, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientCRL: a client certificate in the CRL is refused at the
// handshake, the others are served; the CRL is read again when it changes,
// and a CRL that cannot be parsed refuses everyone.
func TestClientCRL(t *testing.T) {
	ca := newTestCA(t)
	srv := ca.issue("server", "server", "127.0.0.1")
	alice, bob := ca.issue("alice", "alice"), ca.issue("bob", "bob")
	crlPath := filepath.Join(ca.dir, "revoked.crl")
	ca.crl(crlPath, 1)
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{CertFile: srv.certFile, KeyFile: srv.keyFile, TrustedCAFile: ca.file, ClientCertAuth: true, CRLFile: crlPath}
	m := start(t, cfg)
	addr := hostPort(t, m.ClientURLs()[0])
	as := func(who issued) *tls.Config {
		return &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{who.pair}}
	}
	for _, who := range []issued{alice, bob} {
		if _, err := handshake(t, addr, as(who)); err != nil {
			t.Fatalf("before any revocation: %v", err)
		}
	}
	aliceClient := tlsClient(t, m, as(alice))
	ctx := ctxT(t)
	if _, err := aliceClient.Put(ctx, "k", "alice"); err != nil {
		t.Fatal(err)
	}

	ca.crl(crlPath, 2, alice.serial)
	if _, err := handshake(t, addr, as(alice)); err == nil {
		t.Error("a revoked certificate was served")
	}
	if _, err := handshake(t, addr, as(bob)); err != nil {
		t.Errorf("a certificate not revoked: %v", err)
	}
	bobClient := tlsClient(t, m, as(bob))
	if _, err := bobClient.Put(ctx, "k", "bob"); err != nil {
		t.Errorf("put with a certificate not revoked: %v", err)
	}
	revokedClient := tlsClient(t, m, as(alice))
	shortCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := revokedClient.Put(shortCtx, "k", "alice again"); err == nil {
		t.Error("a new client with a revoked certificate wrote")
	}

	copyFile(t, crlPath, []byte("not a CRL"))
	if _, err := handshake(t, addr, as(bob)); err == nil {
		t.Error("served with a CRL that does not parse")
	}

	// A CRL that does not parse at start refuses the start.
	cfg2 := testConfig(t, t.TempDir())
	cfg2.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg2.ClientTLS = cfg.ClientTLS
	if _, err := Start(cfg2); err == nil || !strings.Contains(err.Error(), "CRL") {
		t.Errorf("start with a broken CRL: %v", err)
	}
}

// TestPeerAllowedCN: three members whose peer certificates carry their
// names as CNs form a cluster when only those CNs are allowed; a
// certificate from the same CA with another CN, or naming an address it
// does not connect from, is refused at the peer port, unless the SAN check
// is turned off.
func TestPeerAllowedCN(t *testing.T) {
	ca := newTestCA(t)
	ms := startCluster(t, 3, "https", func(c *Config) {
		cert := ca.issue(c.Name, c.Name, "127.0.0.1")
		c.PeerTLS = TLSInfo{CertFile: cert.certFile, KeyFile: cert.keyFile, TrustedCAFile: ca.file, ClientCertAuth: true,
			AllowedCNs: []string{"m1", "m2", "m3"}}
	})
	checkCluster(t, ms)

	addr := hostPort(t, ms[0].PeerURLs()[0])
	as := func(who issued) *tls.Config {
		return &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{who.pair}}
	}
	if _, err := handshake(t, addr, as(ca.issue("m2-again", "m2", "127.0.0.1"))); err != nil {
		t.Errorf("an allowed CN: %v", err)
	}
	if _, err := handshake(t, addr, as(ca.issue("intruder", "intruder", "127.0.0.1"))); err == nil {
		t.Error("a CN not allowed was served")
	}
	elsewhere := ca.issue("m2-elsewhere", "m2", "10.9.9.9")
	if _, err := handshake(t, addr, as(elsewhere)); err == nil {
		t.Error("a certificate for 10.9.9.9 was served to 127.0.0.1")
	}

	cfg := testConfig(t, t.TempDir())
	cert := ca.issue("solo", "m1", "127.0.0.1")
	cfg.ListenPeerURLs = []string{"https://127.0.0.1:0"}
	cfg.PeerTLS = TLSInfo{CertFile: cert.certFile, KeyFile: cert.keyFile, TrustedCAFile: ca.file, ClientCertAuth: true,
		AllowedCNs: []string{"m2"}, SkipClientSANVerify: true}
	solo := start(t, cfg)
	if _, err := handshake(t, hostPort(t, solo.PeerURLs()[0]), as(elsewhere)); err != nil {
		t.Errorf("with the SAN check off: %v", err)
	}
}

// TestClientAllowedHostname: with an allowed host name only client
// certificates valid for it are served.
func TestClientAllowedHostname(t *testing.T) {
	ca := newTestCA(t)
	srv := ca.issue("server", "server", "127.0.0.1")
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{CertFile: srv.certFile, KeyFile: srv.keyFile, TrustedCAFile: ca.file, ClientCertAuth: true,
		AllowedHostnames: []string{"app.example"}}
	m := start(t, cfg)
	addr := hostPort(t, m.ClientURLs()[0])
	as := func(who issued) *tls.Config {
		return &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{who.pair}}
	}
	app := ca.issue("app", "app", "app.example")
	if _, err := handshake(t, addr, as(app)); err != nil {
		t.Errorf("an allowed host name: %v", err)
	}
	if _, err := tlsClient(t, m, as(app)).Put(ctxT(t), "k", "v"); err != nil {
		t.Errorf("put with an allowed host name: %v", err)
	}
	if _, err := handshake(t, addr, as(ca.issue("other", "app.example", "other.example"))); err == nil {
		t.Error("a certificate for another host was served")
	}
}

// TestCertificateRotation: new certificate files copied over the old ones
// (cp: the certificate first, then the key) are served from the next
// handshake on, with no restart; until the key follows, the old pair is
// kept; connected clients keep working throughout.
func TestCertificateRotation(t *testing.T) {
	ca := newTestCA(t)
	one, two := ca.issue("one", "one", "127.0.0.1"), ca.issue("two", "two", "127.0.0.1")
	alice := ca.issue("alice", "alice")
	live := t.TempDir()
	certPath, keyPath := filepath.Join(live, "server.pem"), filepath.Join(live, "server-key.pem")
	copyFile(t, certPath, readFile(t, one.certFile))
	copyFile(t, keyPath, readFile(t, one.keyFile))

	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{CertFile: certPath, KeyFile: keyPath, TrustedCAFile: ca.file, ClientCertAuth: true}
	m := start(t, cfg)
	addr := hostPort(t, m.ClientURLs()[0])
	clientCfg := &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{alice.pair}}
	served := func() *big.Int {
		t.Helper()
		leaf, err := handshake(t, addr, clientCfg)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return leaf.SerialNumber
	}
	c := tlsClient(t, m, clientCfg)
	ctx := ctxT(t)
	if _, err := c.Put(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	if got := served(); got.Cmp(one.serial) != 0 {
		t.Fatalf("serves serial %v, want %v", got, one.serial)
	}

	copyFile(t, certPath, readFile(t, two.certFile))
	if got := served(); got.Cmp(one.serial) != 0 {
		t.Errorf("with the new certificate and the old key: serves serial %v, want the old pair's %v", got, one.serial)
	}
	if _, err := c.Put(ctx, "k", "2"); err != nil {
		t.Errorf("put mid-rotation: %v", err)
	}
	copyFile(t, keyPath, readFile(t, two.keyFile))
	if got := served(); got.Cmp(two.serial) != 0 {
		t.Errorf("after the rotation: serves serial %v, want %v", got, two.serial)
	}
	if _, err := c.Put(ctx, "k", "3"); err != nil {
		t.Errorf("put after the rotation, connected before: %v", err)
	}
	if resp, err := tlsClient(t, m, clientCfg).Get(ctx, "k"); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "3" {
		t.Errorf("a new client after the rotation: %v %v", resp, err)
	}
}

// TestPeerClientCertificateRotation: the certificate a member presents when
// it dials other members is read again for each handshake too.
func TestPeerClientCertificateRotation(t *testing.T) {
	ca := newTestCA(t)
	srv := ca.issue("server", "server", "127.0.0.1")
	one, two := ca.issue("one", "one", "127.0.0.1"), ca.issue("two", "two", "127.0.0.1")
	live := t.TempDir()
	certPath, keyPath := filepath.Join(live, "peer-client.pem"), filepath.Join(live, "peer-client-key.pem")
	copyFile(t, certPath, readFile(t, one.certFile))
	copyFile(t, keyPath, readFile(t, one.keyFile))

	// A peer that reports the serial number of the certificate it got.
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srv.pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.TLS.PeerCertificates[0].SerialNumber.String()))
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })

	info := TLSInfo{CertFile: srv.certFile, KeyFile: srv.keyFile, TrustedCAFile: ca.file, ClientCertFile: certPath, ClientKeyFile: keyPath}
	cfg, err := info.peerClientConfig(testConfig(t, t.TempDir()).Logger)
	if err != nil {
		t.Fatal(err)
	}
	presented := func() string {
		t.Helper()
		// A connection a request, as each new peer stream dials anew.
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.Clone(), DisableKeepAlives: true}}
		resp, err := c.Get("https://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		if _, err := io.Copy(b, resp.Body); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	if got := presented(); got != one.serial.String() {
		t.Fatalf("presents serial %s, want %s", got, one.serial)
	}
	copyFile(t, certPath, readFile(t, two.certFile))
	copyFile(t, keyPath, readFile(t, two.keyFile))
	if got := presented(); got != two.serial.String() {
		t.Errorf("after the rotation: presents serial %s, want %s", got, two.serial)
	}
}
