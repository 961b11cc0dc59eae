package embed

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSInfo is a TLS configuration: for clients, etcd's --cert-file,
// --key-file, --trusted-ca-file and --client-cert-auth; for peers, their
// --peer-* counterparts.
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
	// MinVersion and MaxVersion bound the TLS version: "TLS1.2" or
	// "TLS1.3"; an empty MinVersion means TLS1.2, an empty MaxVersion lets
	// Go choose (etcd's --tls-min-version, --tls-max-version).
	MinVersion string
	MaxVersion string
	// CipherSuites restricts the TLS 1.2 cipher suites, by their Go names
	// (etcd's --cipher-suites); empty lets Go choose.
	CipherSuites []string
	// ClientCertFile and ClientKeyFile are the certificate a member
	// presents when it dials other members (etcd's
	// --peer-client-cert-file, --peer-client-key-file); empty means
	// CertFile and KeyFile. Only peer TLS uses them.
	ClientCertFile string
	ClientKeyFile  string
}

// tlsVersion reads etcd's TLS version names.
func tlsVersion(v string) (uint16, error) {
	switch v {
	case "":
		return 0, nil
	case "TLS1.2":
		return tls.VersionTLS12, nil
	case "TLS1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unexpected TLS version %q (must be one of: TLS1.2, TLS1.3)", v)
}

// cipherSuite finds a cipher suite by its Go name, or by the older names
// etcd also accepts for the ChaCha20 suites.
func cipherSuite(name string) (uint16, bool) {
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if c.Name == name {
			return c.ID, true
		}
	}
	switch name {
	case "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305":
		return tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, true
	case "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305":
		return tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true
	}
	return 0, false
}

// validate checks the version and cipher settings as etcd does.
func (t TLSInfo) validate() error {
	minV, err := tlsVersion(t.MinVersion)
	if err != nil {
		return err
	}
	maxV, err := tlsVersion(t.MaxVersion)
	if err != nil {
		return err
	}
	if maxV != 0 && minV > maxV {
		return fmt.Errorf("min version (%s) is greater than max version (%s)", t.MinVersion, t.MaxVersion)
	}
	if minV == tls.VersionTLS13 && len(t.CipherSuites) > 0 {
		return errors.New("cipher suites cannot be configured when only TLS1.3 is enabled")
	}
	for _, name := range t.CipherSuites {
		if _, ok := cipherSuite(name); !ok {
			return fmt.Errorf("unexpected TLS cipher suite %q", name)
		}
	}
	return nil
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
	if err := t.validate(); err != nil {
		return nil, err
	}
	minV, _ := tlsVersion(t.MinVersion)
	maxV, _ := tlsVersion(t.MaxVersion)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   max(minV, tls.VersionTLS12),
		MaxVersion:   maxV,
		// gRPC clients insist on ALPN "h2"; HTTP/1.1 stays available for
		// the health and metrics endpoints.
		NextProtos: []string{"h2", "http/1.1"},
	}
	for _, name := range t.CipherSuites {
		id, _ := cipherSuite(name)
		cfg.CipherSuites = append(cfg.CipherSuites, id)
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

// peerServerConfig builds the TLS configuration of https:// peer
// listeners: the client TLS rules, with only HTTP/1.1 offered, as the
// peer transport speaks nothing else.
func (t TLSInfo) peerServerConfig() (*tls.Config, error) {
	cfg, err := t.serverConfig()
	if err != nil {
		return nil, err
	}
	cfg.NextProtos = []string{"http/1.1"}
	return cfg, nil
}

// peerClientConfig builds the configuration a member dials other members'
// https:// peer URLs with: their certificates are verified against
// TrustedCAFile (the system's roots without one), and this member presents
// ClientCertFile (or CertFile) so that peers requiring client certificates
// accept it.
func (t TLSInfo) peerClientConfig() (*tls.Config, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	minV, _ := tlsVersion(t.MinVersion)
	maxV, _ := tlsVersion(t.MaxVersion)
	cfg := &tls.Config{MinVersion: max(minV, tls.VersionTLS12), MaxVersion: maxV}
	for _, name := range t.CipherSuites {
		id, _ := cipherSuite(name)
		cfg.CipherSuites = append(cfg.CipherSuites, id)
	}
	certFile, keyFile := t.ClientCertFile, t.ClientKeyFile
	if certFile == "" && keyFile == "" {
		certFile, keyFile = t.CertFile, t.KeyFile
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("embed: load peer client TLS certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if t.TrustedCAFile != "" {
		pem, err := os.ReadFile(t.TrustedCAFile)
		if err != nil {
			return nil, fmt.Errorf("embed: read peer trusted CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("embed: no certificate found in peer trusted CA file %s", t.TrustedCAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
