package embed

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// keyPairFile is a certificate and key read from their files for every
// handshake, so that new files (a rotation by a plain cp) are served from
// the next handshake on, without a restart, as etcd re-reads them in
// GetCertificate. The files are parsed again only when their bytes change.
//
// Unlike etcd, a pair that does not load (the new certificate copied, its
// key not yet; a half-written file) does not fail the handshake while an
// earlier pair loaded: that one is kept, and the failure logged once per
// content, until the files hold a matching pair again.
type keyPairFile struct {
	certFile, keyFile string
	lg                *slog.Logger

	mu struct {
		sync.Mutex
		certPEM, keyPEM []byte
		cert            *tls.Certificate
		// badCert, badKey and badErr are the contents last reported as
		// not loading and why, so a broken pair is logged once, not at
		// every handshake.
		badCert, badKey []byte
		badErr          string
	}
}

// newKeyPairFile loads the pair once, so a missing or broken pair fails at
// start rather than at the first handshake.
func newKeyPairFile(certFile, keyFile string, lg *slog.Logger) (*keyPairFile, error) {
	k := &keyPairFile{certFile: certFile, keyFile: keyFile, lg: lg}
	if _, err := k.get(); err != nil {
		return nil, err
	}
	return k, nil
}

// get returns the pair the files hold now, or the last one that loaded. It
// is safe for concurrent use.
func (k *keyPairFile) get() (*tls.Certificate, error) {
	certPEM, cerr := os.ReadFile(k.certFile)
	keyPEM, kerr := os.ReadFile(k.keyFile)
	k.mu.Lock()
	defer k.mu.Unlock()
	if cerr == nil && kerr == nil && k.mu.cert != nil && bytes.Equal(certPEM, k.mu.certPEM) && bytes.Equal(keyPEM, k.mu.keyPEM) {
		return k.mu.cert, nil
	}
	err := errors.Join(cerr, kerr)
	if err == nil {
		var cert tls.Certificate
		if cert, err = tls.X509KeyPair(certPEM, keyPEM); err == nil {
			if k.mu.cert != nil {
				k.lg.Info("loaded a new TLS certificate", "cert-file", k.certFile, "key-file", k.keyFile)
			}
			k.mu.certPEM, k.mu.keyPEM, k.mu.cert = certPEM, keyPEM, &cert
			k.mu.badCert, k.mu.badKey, k.mu.badErr = nil, nil, ""
			return &cert, nil
		}
	}
	err = fmt.Errorf("load TLS certificate %s and key %s: %w", k.certFile, k.keyFile, err)
	if k.mu.cert == nil {
		return nil, err
	}
	if err.Error() != k.mu.badErr || !bytes.Equal(certPEM, k.mu.badCert) || !bytes.Equal(keyPEM, k.mu.badKey) {
		k.lg.Warn("keeping the previous TLS certificate: the files do not hold a valid pair", "error", err)
		k.mu.badCert, k.mu.badKey, k.mu.badErr = certPEM, keyPEM, err.Error()
	}
	return k.mu.cert, nil
}

// crlFile is a certificate revocation list read for every handshake, as
// etcd reads --client-crl-file and --peer-crl-file, and parsed again only
// when its bytes change. A CRL that cannot be read or parsed refuses every
// certificate: revocation must not fail open.
type crlFile struct {
	path string

	mu struct {
		sync.Mutex
		raw     []byte
		revoked map[string]bool // serial numbers, as big-endian bytes
	}
}

// newCRLFile reads and parses the list once, so a broken list fails at
// start.
func newCRLFile(path string) (*crlFile, error) {
	c := &crlFile{path: path}
	if _, err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *crlFile) load() (map[string]bool, error) {
	raw, err := os.ReadFile(c.path)
	if err != nil {
		return nil, fmt.Errorf("read CRL file: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.revoked != nil && bytes.Equal(raw, c.mu.raw) {
		return c.mu.revoked, nil
	}
	der := raw
	if block, _ := pem.Decode(raw); block != nil && block.Type == "X509 CRL" {
		der = block.Bytes // etcd reads DER only; PEM is what openssl writes by default
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parse CRL file %s: %w", c.path, err)
	}
	revoked := make(map[string]bool, len(list.RevokedCertificateEntries))
	for _, e := range list.RevokedCertificateEntries {
		revoked[string(e.SerialNumber.Bytes())] = true
	}
	c.mu.raw, c.mu.revoked = raw, revoked
	return revoked, nil
}

// check refuses a chain holding a revoked certificate, with etcd's error.
func (c *crlFile) check(certs []*x509.Certificate) error {
	revoked, err := c.load()
	if err != nil {
		return err
	}
	for _, cert := range certs {
		if revoked[string(cert.SerialNumber.Bytes())] {
			return fmt.Errorf("transport: certificate serial %x revoked", cert.SerialNumber.Bytes())
		}
	}
	return nil
}
