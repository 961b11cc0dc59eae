package embed

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSInfo is the client-side TLS configuration, etcd's --cert-file,
// --key-file, --trusted-ca-file and --client-cert-auth.
type TLSInfo struct {
	// CertFile and KeyFile are the server's certificate and key (PEM).
	CertFile string
	KeyFile  string
	// TrustedCAFile holds the CA certificates client certificates are
	// verified against.
	TrustedCAFile string
	// ClientCertAuth requires every client to present a certificate signed
	// by a trusted CA.
	ClientCertAuth bool
}

func (t TLSInfo) configured() bool { return t.CertFile != "" || t.KeyFile != "" }

// serverConfig builds the TLS configuration of https:// client listeners.
// The certificate is loaded once, at start.
func (t TLSInfo) serverConfig() (*tls.Config, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("embed: client TLS needs both --cert-file and --key-file")
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("embed: load client TLS certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// gRPC clients insist on ALPN "h2"; HTTP/1.1 stays available for
		// the health and metrics endpoints.
		NextProtos: []string{"h2", "http/1.1"},
	}
	if t.TrustedCAFile != "" {
		pem, err := os.ReadFile(t.TrustedCAFile)
		if err != nil {
			return nil, fmt.Errorf("embed: read trusted CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("embed: no certificate found in trusted CA file %s", t.TrustedCAFile)
		}
		cfg.ClientCAs = pool
	}
	if t.ClientCertAuth {
		// Without a trusted CA file, client certificates are verified
		// against the system's roots, as in etcd.
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
