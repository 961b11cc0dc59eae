package embed

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"
)

// sanLookupTimeout bounds the DNS lookups of one peer certificate's SAN
// check.
const sanLookupTimeout = 5 * time.Second

// checkCertSAN is etcd's check of a member's client certificate on the peer
// listener: a certificate that names IP addresses or DNS names must name
// the address it connects from, directly or through DNS (a reverse lookup
// of the address matching a name, wildcards included, or a forward lookup
// of a name giving the address). A certificate naming neither passes.
func checkCertSAN(ctx context.Context, cert *x509.Certificate, remoteAddr string) error {
	if len(cert.IPAddresses) == 0 && len(cert.DNSNames) == 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return err
	}
	if len(cert.IPAddresses) > 0 {
		err := cert.VerifyHostname(host)
		if err == nil {
			return nil
		}
		if len(cert.DNSNames) == 0 {
			return err
		}
	}
	ok, err := hostInDNSNames(ctx, host, cert.DNSNames)
	if ok {
		return nil
	}
	detail := ""
	if err != nil {
		detail = " (" + err.Error() + ")"
	}
	return fmt.Errorf("tls: %q does not match any of DNSNames %q%s", host, cert.DNSNames, detail)
}

// hostInDNSNames reports whether the address host resolves to one of names
// or is what one of them resolves to.
func hostInDNSNames(ctx context.Context, host string, names []string) (bool, error) {
	var exact, suffixes []string
	for _, n := range names {
		if rest, ok := strings.CutPrefix(n, "*"); ok && strings.HasPrefix(rest, ".") {
			suffixes = append(suffixes, rest)
		} else {
			exact = append(exact, n)
		}
	}
	reverse, lastErr := net.DefaultResolver.LookupAddr(ctx, host)
	for _, r := range reverse {
		r = strings.TrimSuffix(r, ".")
		for _, s := range suffixes {
			if strings.HasSuffix(r, s) {
				return true, nil
			}
		}
		for _, n := range exact {
			if n == r {
				return true, nil
			}
		}
	}
	for _, n := range exact {
		addrs, err := net.DefaultResolver.LookupHost(ctx, n)
		if err != nil {
			lastErr = err
			continue
		}
		for _, a := range addrs {
			if a == host {
				return true, nil
			}
		}
	}
	return false, lastErr
}
