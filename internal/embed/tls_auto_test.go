package embed

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestAutoTLSCluster: three members with --auto-tls and --peer-auto-tls on
// https:// client and peer URLs generate their certificates into
// <data-dir>/fixtures, form a cluster over TLS, serve clients that skip
// verification (etcdctl --insecure-skip-tls-verify), and reuse the
// certificates when they restart.
func TestAutoTLSCluster(t *testing.T) {
	ms := startCluster(t, 3, "https", func(c *Config) {
		c.ListenClientURLs = []string{"https://127.0.0.1:0"}
		c.ClientAutoTLS, c.PeerAutoTLS = true, true
		c.SelfSignedCertValidity = 2
	})
	insecure := &tls.Config{InsecureSkipVerify: true}
	ctx := ctxT(t)
	if _, err := tlsClient(t, ms[0], insecure).Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put over auto TLS: %v", err)
	}
	if resp, err := tlsClient(t, ms[2], insecure).Get(ctx, "k"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("linearizable get through m3: %v %v", resp, err)
	}
	if list, err := tlsClient(t, ms[1], insecure).MemberList(ctx); err != nil || len(list.Members) != 3 {
		t.Fatalf("member list: %v %v", list, err)
	}

	for i, m := range ms {
		for _, kind := range []string{autoClientDir, autoPeerDir} {
			dir := filepath.Join(m.cfg.dataDir(), fixturesDir, kind)
			checkMode(t, dir, 0o700)
			checkMode(t, filepath.Join(dir, autoKeyName), 0o600)
			checkMode(t, filepath.Join(dir, autoCertName), 0o600)
			cert := parseCertFile(t, filepath.Join(dir, autoCertName))
			if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
				t.Errorf("m%d %s certificate for %v %v", i+1, kind, cert.IPAddresses, cert.DNSNames)
			}
			if years := time.Until(cert.NotAfter).Hours() / 24 / 365; years < 1.99 || years > 2.01 {
				t.Errorf("m%d %s certificate valid until %v: want 2 years", i+1, kind, cert.NotAfter)
			}
		}
		// The client URL serves the generated certificate.
		leaf, err := handshake(t, hostPort(t, m.ClientURLs()[0]), insecure)
		if err != nil {
			t.Fatal(err)
		}
		if want := parseCertFile(t, filepath.Join(m.cfg.dataDir(), fixturesDir, autoClientDir, autoCertName)); !leaf.Equal(want) {
			t.Errorf("m%d serves another certificate than its generated one", i+1)
		}
	}

	// A restart reuses the certificates.
	peerCert := filepath.Join(ms[2].cfg.dataDir(), fixturesDir, autoPeerDir, autoCertName)
	before := readFile(t, peerCert)
	ms[2].Close()
	ms[2] = start(t, ms[2].cfg)
	if !bytes.Equal(before, readFile(t, peerCert)) {
		t.Error("the peer certificate was generated again at restart")
	}
	if resp, err := tlsClient(t, ms[2], insecure).Get(ctx, "k"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get through the restarted member: %v %v", resp, err)
	}
}

// TestAutoTLSExplicitCertificateWins: with certificate files given, auto
// TLS generates nothing and the given certificate is served, as in etcd.
func TestAutoTLSExplicitCertificateWins(t *testing.T) {
	ca := newTestCA(t)
	srv := ca.issue("server", "server", "127.0.0.1")
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
	cfg.ClientTLS = TLSInfo{CertFile: srv.certFile, KeyFile: srv.keyFile}
	cfg.ClientAutoTLS = true
	m := start(t, cfg)
	leaf, err := handshake(t, hostPort(t, m.ClientURLs()[0]), &tls.Config{RootCAs: ca.pool})
	if err != nil || leaf.SerialNumber.Cmp(srv.serial) != 0 {
		t.Errorf("served %v, %v; want the given certificate", leaf, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, fixturesDir)); !os.IsNotExist(err) {
		t.Errorf("fixtures generated although a certificate was given: %v", err)
	}
}

// TestDataDirPermissions: a data directory that exists with looser modes
// is made private at start (the directory 0700, nothing in it open to the
// group or others), and what the member writes is private too, whatever
// the umask.
func TestDataDirPermissions(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(filepath.Join(dir, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "old", "notes"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := start(t, testConfig(t, dir))
	c := client(t, m)
	for i := range 100 {
		if _, err := c.Put(ctxT(t), "k", string(rune('a'+i%26))); err != nil {
			t.Fatal(err)
		}
	}
	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, "old"), 0o700)
	checkMode(t, filepath.Join(dir, "old", "notes"), 0o600)
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if (d.IsDir() || d.Type().IsRegular()) && info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", path, info.Mode())
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("only %d entries in the data directory", n)
	}

	// A fresh data directory is created 0700.
	fresh := filepath.Join(t.TempDir(), "a", "fresh")
	start(t, testConfig(t, fresh))
	checkMode(t, fresh, 0o700)
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), want)
	}
}

func parseCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(readFile(t, path))
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
