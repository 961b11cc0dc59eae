package servecmd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRefusedFlags: a security-relevant etcd flag cairn does not implement
// refuses to start when it asks for the setting, whether it comes from the
// command line, the environment or a configuration file; its default (as
// etcd's sample configuration file writes it) or an empty value is fine.
func TestRefusedFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--host-whitelist", "example.com"},
		{"--discovery-srv", "example.com"},
		{"--discovery-srv-name", "prod"},
		{"--discovery-endpoints", "http://10.0.0.1:2379"},
		{"--discovery-token", "tok"},
	} {
		_, _, err := parse(t, args)
		name := strings.TrimPrefix(args[0], "--")
		if err == nil || !strings.Contains(err.Error(), "--"+name+"="+args[1]+" is not supported") {
			t.Errorf("%v: %v", args, err)
		}
	}
	if _, _, err := parse(t, nil, "CAIRN_HOST_WHITELIST=example.com"); err == nil || !strings.Contains(err.Error(), "--host-whitelist=example.com is not supported") {
		t.Errorf("refused flag from the environment: %v", err)
	}
	for _, args := range [][]string{{"--host-whitelist", "*"}, {"--host-whitelist="}, {"--discovery-srv="}} {
		if _, warnings, err := parse(t, args); err != nil || len(warnings) != 0 {
			t.Errorf("%v: %v %v", args, warnings, err)
		}
	}

	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, _, err := parse(t, []string{"--config-file", write("refused.yaml", "host-whitelist: example.com\n")}); err == nil ||
		!strings.Contains(err.Error(), "--host-whitelist=example.com is not supported") {
		t.Errorf("refused flag from a configuration file: %v", err)
	}
	if _, _, err := parse(t, []string{"--config-file", write("sample.yaml", "host-whitelist: '*'\ndiscovery-srv:\ndiscovery-token: ''\n")}); err != nil {
		t.Errorf("etcd's sample defaults: %v", err)
	}

	// The real command stops before it touches the data directory.
	data := filepath.Join(dir, "data")
	cmd, _ := newServeCommandFlags()
	cmd.SetArgs([]string{"--data-dir", data, "--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:0", "--discovery-srv", "example.com"})
	cmd.SetErr(new(strings.Builder))
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "discovery is not implemented") {
		t.Errorf("serve with --discovery-srv: %v", err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("data directory after a refused start: %v", err)
	}
}

// TestSecurityFlagsThatWouldDoNothing: a CRL or allowed name without client
// certificates to check would be accepted and ignored by etcd; cairn
// refuses it.
func TestSecurityFlagsThatWouldDoNothing(t *testing.T) {
	tls := []string{"--cert-file", "c.pem", "--key-file", "k.pem", "--peer-cert-file", "p.pem", "--peer-key-file", "pk.pem"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--peer-cert-allowed-cn", "m1"}, "--peer-cert-allowed-cn needs --peer-client-cert-auth or --peer-trusted-ca-file"},
		{[]string{"--peer-cert-allowed-hostname", "m1.example"}, "--peer-cert-allowed-hostname needs --peer-client-cert-auth or --peer-trusted-ca-file"},
		{[]string{"--peer-crl-file", "p.crl"}, "--peer-crl-file needs --peer-client-cert-auth or --peer-trusted-ca-file"},
		{[]string{"--client-cert-allowed-hostname", "c.example"}, "--client-cert-allowed-hostname needs --client-cert-auth or --trusted-ca-file"},
		{[]string{"--client-crl-file", "c.crl"}, "--client-crl-file needs --client-cert-auth or --trusted-ca-file"},
		{[]string{"--client-cert-auth", "--client-cert-file", "cc.pem"}, "ClientKeyFile and ClientCertFile must both be present or both absent"},
		{[]string{"--peer-client-cert-auth", "--peer-cert-allowed-cn", "m1", "--peer-cert-allowed-hostname", "m1.example"}, "AllowedCNs and AllowedHostnames are mutually exclusive"},
		{[]string{"--auto-tls", "--self-signed-cert-validity", "0"}, "selfSignedCertValidity is invalid"},
		{[]string{"--peer-cert-file=", "--peer-key-file=", "--peer-auto-tls", "--peer-client-cert-auth"}, "--peer-auto-tls with --peer-client-cert-auth or --peer-trusted-ca-file needs --peer-client-cert-file"},
	} {
		_, _, err := parse(t, append(slices.Clone(tls), c.args...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	// With client certificates required they are taken.
	cfg, _, err := parse(t, append(slices.Clone(tls), "--peer-client-cert-auth", "--peer-cert-allowed-cn", "m1", "--peer-crl-file", "p.crl",
		"--trusted-ca-file", "ca.pem", "--client-cert-allowed-hostname", "c.example", "--client-crl-file", "c.crl"))
	if err != nil || !slices.Equal(cfg.PeerTLS.AllowedCNs, []string{"m1"}) || cfg.ClientTLS.CRLFile != "c.crl" {
		t.Errorf("with client certificates: %v", err)
	}
}

// TestConfigFileSecuritySections: etcd's security sections reach every TLS
// setting, the client section's allowed-cn included (etcd has no flag for
// it).
func TestConfigFileSecuritySections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etcd.yaml")
	body := `client-transport-security:
  cert-file: /c.pem
  key-file: /k.pem
  client-cert-file: /cc.pem
  client-key-file: /cck.pem
  trusted-ca-file: /ca.pem
  allowed-cn: [alice, bob]
  auto-tls: true
peer-transport-security:
  cert-file: /p.pem
  key-file: /pk.pem
  client-cert-auth: true
  allowed-hostname: [m1.example]
  skip-client-san-verification: true
  auto-tls: true
self-signed-cert-validity: 2
peer-crl-file: /p.crl
`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parse(t, []string{"--config-file", path})
	if err != nil {
		t.Fatal(err)
	}
	c, p := cfg.ClientTLS, cfg.PeerTLS
	if c.ClientCertFile != "/cc.pem" || c.ClientKeyFile != "/cck.pem" || !slices.Equal(c.AllowedCNs, []string{"alice", "bob"}) || !cfg.ClientAutoTLS ||
		!slices.Equal(p.AllowedHostnames, []string{"m1.example"}) || !p.SkipClientSANVerify || !cfg.PeerAutoTLS ||
		cfg.SelfSignedCertValidity != 2 || p.CRLFile != "/p.crl" {
		t.Errorf("security sections: %+v", cfg)
	}
}
