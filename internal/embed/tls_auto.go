package embed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// DefaultSelfSignedCertValidity is how many years a generated certificate
// is valid for (etcd's --self-signed-cert-validity).
const DefaultSelfSignedCertValidity = 1

// Where auto TLS keeps its certificates, as etcd: <data-dir>/fixtures/client
// and <data-dir>/fixtures/peer, each holding cert.pem and key.pem.
const (
	fixturesDir     = "fixtures"
	autoCertName    = "cert.pem"
	autoKeyName     = "key.pem"
	autoClientDir   = "client"
	autoPeerDir     = "peer"
	autoCertOrgName = "cairn"
)

// autoTLS returns info with a generated certificate when auto is set and
// info names none (an explicit certificate wins, as in etcd). The
// certificate is generated once into dir and reused at later starts. Every
// other setting of info (client certificate auth, CA, CRL, allowed names)
// stays in force: etcd drops them with auto TLS, which would open what they
// close.
func autoTLS(lg *slog.Logger, info TLSInfo, auto bool, dir string, urls []string, validityYears uint, kind string) (TLSInfo, error) {
	if !auto {
		return info, nil
	}
	if info.configured() {
		lg.Warn("ignoring " + kind + " auto TLS since certs given")
		return info, nil
	}
	hosts := make([]string, 0, len(urls))
	for _, raw := range urls {
		if u, err := url.Parse(raw); err == nil {
			hosts = append(hosts, u.Host)
		}
	}
	certFile, keyFile, err := selfCert(lg, dir, hosts, validityYears)
	if err != nil {
		return info, fmt.Errorf("embed: %s auto TLS: %w", kind, err)
	}
	if info.requiresClientCert() {
		lg.Warn(kind+" auto TLS with client certificate checks: unlike etcd, cairn keeps the checks", "dir", dir)
	}
	info.CertFile, info.KeyFile = certFile, keyFile
	if info.ClientCertFile == "" {
		info.ClientCertFile, info.ClientKeyFile = certFile, keyFile
	}
	info.selfSigned = true
	return info, nil
}

// selfCert returns the certificate and key files in dir, generating them
// when they do not both exist: a self-signed ECDSA certificate valid for
// validityYears years for the hosts (host:port, as in listen URLs) as IP
// addresses or DNS names, usable by servers and clients. The files are
// written 0600 (the directory 0700) and renamed into place, so a crash
// leaves either no certificate or a whole one.
func selfCert(lg *slog.Logger, dir string, hosts []string, validityYears uint) (certFile, keyFile string, err error) {
	if validityYears == 0 {
		return "", "", errors.New("selfSignedCertValidity is invalid,it should be greater than 0")
	}
	if err := privateDir(lg, dir); err != nil {
		return "", "", err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, autoCertName), filepath.Join(dir, autoKeyName)
	_, cerr := os.Stat(certFile)
	_, kerr := os.Stat(keyFile)
	if cerr == nil && kerr == nil {
		return certFile, keyFile, nil
	}

	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{autoCertOrgName}},
		NotBefore:             now,
		NotAfter:              now.Add(time.Duration(validityYears) * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		host, _, err := net.SplitHostPort(h)
		if err != nil {
			host = h
		}
		if ip := net.ParseIP(host); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if host != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, host)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	// The key first: a certificate without its key is not reused.
	if err := writePrivateFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})); err != nil {
		return "", "", err
	}
	if err := writePrivateFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return "", "", err
	}
	lg.Warn("automatically generated certificates", "certificate-validity-bound-not-after", tmpl.NotAfter, "cert-file", certFile, "key-file", keyFile)
	return certFile, keyFile, nil
}

// writePrivateFile writes data to path with mode 0600 through a synced
// temporary file renamed into place.
func writePrivateFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
