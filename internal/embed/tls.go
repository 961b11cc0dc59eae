package embed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
)

// TLSInfo is a TLS configuration: for clients, etcd's --cert-file,
// --key-file, --trusted-ca-file, --client-cert-auth and the other client
// security flags; for peers, their --peer-* counterparts.
//
// Certificates and keys are read again for every handshake (parsed again
// only when the files change), so replacing the files, even with a plain
// cp, rotates them without a restart. The trusted CA file is read once, at
// start, as in etcd; so is the CRL file checked to hold a list, but it is
// then read for every handshake too, as in etcd.
type TLSInfo struct {
	// CertFile and KeyFile are the server's certificate and key (PEM).
	CertFile string
	KeyFile  string
	// TrustedCAFile holds the CA certificates client certificates are
	// verified against. As in etcd, setting it requires every client to
	// present a certificate signed by one of them, as ClientCertAuth does.
	TrustedCAFile string
	// ClientCertAuth requires every client to present a certificate signed
	// by a trusted CA (the system's roots without TrustedCAFile).
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
	// presents when it connects as a client. For peers (etcd's
	// --peer-client-cert-file, --peer-client-key-file) that is when it
	// dials other members; empty means CertFile and KeyFile. For clients
	// (--client-cert-file, --client-key-file) they are checked at start as
	// etcd checks them, but a member never presents them. etcd presents
	// them when its JSON gateway dials its own client URL, which is all
	// they are for there: they let the gateway connect when CertFile is not
	// valid for client authentication, and, as a side effect, a gateway
	// request without a token or an Accept header runs as their CN. Here
	// the gateway and the Lock and Election services reach the member over
	// a private unix socket without TLS, so they need no certificate, and
	// no request runs as the member's (see refuseGatewayCN).
	ClientCertFile string
	ClientKeyFile  string
	// CRLFile is a certificate revocation list (PEM or DER): a connection
	// whose certificate chain holds a revoked serial number is refused at
	// the handshake (etcd's --client-crl-file, --peer-crl-file). Peers also
	// refuse a revoked certificate from the member they dial. It needs
	// client certificates (ClientCertAuth or TrustedCAFile).
	CRLFile string
	// AllowedCNs and AllowedHostnames accept only client certificates
	// whose common name is one of AllowedCNs, or which are valid for one
	// of AllowedHostnames (etcd's --peer-cert-allowed-cn,
	// --peer-cert-allowed-hostname, --client-cert-allowed-hostname). They
	// are mutually exclusive and need client certificates. For peers they
	// also apply to the certificates of the members this one dials, as in
	// etcd.
	AllowedCNs       []string
	AllowedHostnames []string
	// SkipClientSANVerify turns off the peer listener's check that a
	// member's client certificate, if it names IP addresses or hosts,
	// names the address it connects from (etcd's
	// --peer-skip-client-san-verification). Only peer TLS checks it.
	SkipClientSANVerify bool

	// selfSigned marks a generated certificate (auto TLS): the members
	// dialed with it are not verified, as in etcd, since nothing can.
	selfSigned bool
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

// validate checks t as etcd checks it, with etcd's messages where etcd
// has one; peer tells peer TLS from client TLS, to name the flags in
// cairn's own messages. Settings etcd accepts without acting
// on them (an allowed name or a CRL without client certificates to check)
// are refused.
func (t TLSInfo) validate(peer bool) error {
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
	if (t.ClientKeyFile == "") != (t.ClientCertFile == "") {
		return fmt.Errorf("ClientKeyFile and ClientCertFile must both be present or both absent: key: %v, cert: %v]", t.ClientKeyFile, t.ClientCertFile)
	}
	if len(t.AllowedCNs) > 0 && len(t.AllowedHostnames) > 0 {
		return fmt.Errorf("AllowedCNs and AllowedHostnames are mutually exclusive (cns=%q, hostnames=%q)", t.AllowedCNs, t.AllowedHostnames)
	}
	if t.requiresClientCert() {
		return nil
	}
	names := clientTLSFlags
	if peer {
		names = peerTLSFlags
	}
	switch {
	case len(t.AllowedCNs) > 0:
		return fmt.Errorf("%s needs %s or %s: without client certificates there is no name to check", names.allowedCN, names.certAuth, names.trustedCA)
	case len(t.AllowedHostnames) > 0:
		return fmt.Errorf("%s needs %s or %s: without client certificates there is no name to check", names.allowedHostname, names.certAuth, names.trustedCA)
	case t.CRLFile != "":
		return fmt.Errorf("%s needs %s or %s: without client certificates there is nothing to revoke", names.crl, names.certAuth, names.trustedCA)
	}
	return nil
}

// tlsFlags names the flags of one side's TLS settings in cairn's own
// messages.
type tlsFlags struct {
	certAuth, trustedCA, crl, allowedCN, allowedHostname string
}

var (
	clientTLSFlags = tlsFlags{"--client-cert-auth", "--trusted-ca-file", "--client-crl-file", "--client-cert-allowed-cn", "--client-cert-allowed-hostname"}
	peerTLSFlags   = tlsFlags{"--peer-client-cert-auth", "--peer-trusted-ca-file", "--peer-crl-file", "--peer-cert-allowed-cn", "--peer-cert-allowed-hostname"}
)

// requiresClientCert reports whether the listener asks every client for a
// certificate signed by a trusted CA: with ClientCertAuth or, as in etcd,
// with a TrustedCAFile alone.
func (t TLSInfo) requiresClientCert() bool { return t.ClientCertAuth || t.TrustedCAFile != "" }

// configured reports whether a certificate is given.
func (t TLSInfo) configured() bool { return t.CertFile != "" || t.KeyFile != "" }

// base returns the settings every configuration of t shares.
func (t TLSInfo) base() *tls.Config {
	minV, _ := tlsVersion(t.MinVersion)
	maxV, _ := tlsVersion(t.MaxVersion)
	cfg := &tls.Config{MinVersion: max(minV, tls.VersionTLS12), MaxVersion: maxV}
	for _, name := range t.CipherSuites {
		id, _ := cipherSuite(name)
		cfg.CipherSuites = append(cfg.CipherSuites, id)
	}
	return cfg
}

// caPool reads the trusted CA file; nil without one.
func (t TLSInfo) caPool() (*x509.CertPool, error) {
	if t.TrustedCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(t.TrustedCAFile)
	if err != nil {
		return nil, fmt.Errorf("embed: read trusted CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("embed: no certificate found in trusted CA file %s", t.TrustedCAFile)
	}
	return pool, nil
}

// certChecks are the checks of a peer's certificate beyond the chain's
// verification: revocation and the allowed names.
type certChecks struct {
	crl          *crlFile
	allowedCNs   []string
	allowedHosts []string
}

func (t TLSInfo) certChecks() (*certChecks, error) {
	c := &certChecks{allowedCNs: t.AllowedCNs, allowedHosts: t.AllowedHostnames}
	if t.CRLFile != "" {
		var err error
		if c.crl, err = newCRLFile(t.CRLFile); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// verify checks a handshake's peer certificates: none revoked, and, with
// allowed names, a verified chain whose leaf has one of them (etcd's
// error text).
func (c *certChecks) verify(cs tls.ConnectionState) error {
	if c.crl != nil && len(cs.PeerCertificates) > 0 {
		if err := c.crl.check(cs.PeerCertificates); err != nil {
			return err
		}
	}
	if len(c.allowedCNs) == 0 && len(c.allowedHosts) == 0 {
		return nil
	}
	for _, chain := range cs.VerifiedChains {
		if len(chain) > 0 && c.allowed(chain[0]) {
			return nil
		}
	}
	return errors.New("client certificate authentication failed")
}

func (c *certChecks) allowed(cert *x509.Certificate) bool {
	if slices.Contains(c.allowedCNs, cert.Subject.CommonName) {
		return true
	}
	for _, h := range c.allowedHosts {
		if cert.VerifyHostname(h) == nil {
			return true
		}
	}
	return false
}

// serverConfig builds the TLS configuration of https:// client and metrics
// listeners: the certificate re-read at each handshake, client
// certificates required and checked as t says. lg reports certificate
// reloads.
func (t TLSInfo) serverConfig(lg *slog.Logger) (*tls.Config, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("embed: client TLS needs both --cert-file and --key-file")
	}
	if err := t.validate(false); err != nil {
		return nil, err
	}
	cfg, _, err := t.listenerConfig(lg)
	if err != nil {
		return nil, fmt.Errorf("embed: client TLS: %w", err)
	}
	// gRPC clients insist on ALPN "h2"; HTTP/1.1 stays available for the
	// health and metrics endpoints.
	cfg.NextProtos = []string{"h2", "http/1.1"}
	if t.ClientCertFile != "" {
		// Checked as etcd checks it, though never presented (see
		// TLSInfo.ClientCertFile).
		if _, err := newKeyPairFile(t.ClientCertFile, t.ClientKeyFile, lg); err != nil {
			return nil, fmt.Errorf("embed: client TLS: %w", err)
		}
	}
	return cfg, nil
}

// listenerConfig builds what client and peer listeners share.
func (t TLSInfo) listenerConfig(lg *slog.Logger) (*tls.Config, *certChecks, error) {
	pair, err := newKeyPairFile(t.CertFile, t.KeyFile, lg)
	if err != nil {
		return nil, nil, err
	}
	pool, err := t.caPool()
	if err != nil {
		return nil, nil, err
	}
	checks, err := t.certChecks()
	if err != nil {
		return nil, nil, err
	}
	cfg := t.base()
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return pair.get() }
	cfg.ClientCAs = pool
	if t.requiresClientCert() {
		// Without a trusted CA file, client certificates are verified
		// against the system's roots, as in etcd.
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	cfg.VerifyConnection = checks.verify
	return cfg, checks, nil
}

// peerServerConfig builds the TLS configuration of https:// peer
// listeners: the client listeners' rules, with only HTTP/1.1 offered, as
// the peer transport speaks nothing else, and, unless SkipClientSANVerify,
// etcd's check that a client certificate naming addresses or hosts names
// the address the member connects from.
func (t TLSInfo) peerServerConfig(lg *slog.Logger) (*tls.Config, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("embed: peer TLS needs both --peer-cert-file and --peer-key-file")
	}
	if err := t.validate(true); err != nil {
		return nil, err
	}
	cfg, checks, err := t.listenerConfig(lg)
	if err != nil {
		return nil, fmt.Errorf("embed: peer TLS: %w", err)
	}
	cfg.NextProtos = []string{"http/1.1"}
	if t.SkipClientSANVerify {
		return cfg, nil
	}
	base := cfg.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		remote := hello.Conn.RemoteAddr().String()
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := checks.verify(cs); err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			ctx, cancel := context.WithTimeout(hello.Context(), sanLookupTimeout)
			defer cancel()
			return checkCertSAN(ctx, cs.PeerCertificates[0], remote)
		}
		return c, nil
	}
	return cfg, nil
}

// peerClientConfig builds the configuration a member dials other members'
// https:// peer URLs with: their certificates are verified against
// TrustedCAFile (the system's roots without one; not at all with a
// generated certificate, as in etcd) and checked against the CRL and the
// allowed names, and this member presents ClientCertFile (or CertFile),
// re-read at each handshake, so that peers requiring client certificates
// accept it.
func (t TLSInfo) peerClientConfig(lg *slog.Logger) (*tls.Config, error) {
	if err := t.validate(true); err != nil {
		return nil, err
	}
	cfg := t.base()
	certFile, keyFile := t.ClientCertFile, t.ClientKeyFile
	if certFile == "" && keyFile == "" {
		certFile, keyFile = t.CertFile, t.KeyFile
	}
	if certFile != "" || keyFile != "" {
		pair, err := newKeyPairFile(certFile, keyFile, lg)
		if err != nil {
			return nil, fmt.Errorf("embed: peer client TLS: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pair.get() }
	}
	pool, err := t.caPool()
	if err != nil {
		return nil, fmt.Errorf("embed: peer %w", err)
	}
	cfg.RootCAs = pool
	if t.selfSigned {
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	checks, err := t.certChecks()
	if err != nil {
		return nil, err
	}
	cfg.VerifyConnection = checks.verify
	return cfg, nil
}
