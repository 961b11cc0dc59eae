package embed

import (
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

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	caFile, certFile, keyFile     string
	clientCertFile, clientKeyFile string
	pool                          *x509.CertPool
	client                        tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "cairn"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srvDER, srvKey := issue(2, x509.ExtKeyUsageServerAuth)
	srvKeyDER, _ := x509.MarshalECPrivateKey(srvKey)
	cliDER, cliKey := issue(3, x509.ExtKeyUsageClientAuth)
	cliKeyDER, _ := x509.MarshalECPrivateKey(cliKey)
	pki := testPKI{
		caFile:         write("ca.pem", "CERTIFICATE", caDER),
		certFile:       write("server.pem", "CERTIFICATE", srvDER),
		keyFile:        write("server-key.pem", "EC PRIVATE KEY", srvKeyDER),
		clientCertFile: write("client.pem", "CERTIFICATE", cliDER),
		clientKeyFile:  write("client-key.pem", "EC PRIVATE KEY", cliKeyDER),
		pool:           x509.NewCertPool(),
	}
	pki.pool.AddCert(ca)
	pki.client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return pki
}

func TestClientTLS(t *testing.T) {
	pki := newTestPKI(t)
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{CertFile: pki.certFile, KeyFile: pki.keyFile, TrustedCAFile: pki.caFile, ClientCertAuth: true}
	m := start(t, cfg)
	url := m.ClientURLs()[0]
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("client URL %s", url)
	}

	withCert := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, TLS: withCert, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	if _, err := c.Put(ctx, "secret", "v"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	if got, err := c.Get(ctx, "secret"); err != nil || len(got.Kvs) != 1 {
		t.Fatalf("get over TLS: %v %v", got, err)
	}

	// The HTTP endpoints share the port, over HTTP/2 and HTTP/1.1 alike.
	for _, h2 := range []bool{true, false} {
		tr := &http.Transport{TLSClientConfig: withCert.Clone(), ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		resp, err := (&http.Client{Transport: tr}).Get(url + "/health")
		if err != nil {
			t.Fatalf("https /health (h2=%v): %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != `{"health":"true","reason":""}` || (resp.ProtoMajor == 2) != h2 {
			t.Fatalf("https /health (h2=%v): %s %d %q", h2, resp.Proto, resp.StatusCode, body)
		}
		tr.CloseIdleConnections()
	}

	// Client certificates are required.
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}
	if resp, err := noCert.Get(url + "/health"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate was served")
	}
}
