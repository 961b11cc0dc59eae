package embed

import (
	"net/http"
	"strings"
)

// gatewayCNRefused is etcd's answer, with status 400, to a JSON gateway
// request whose client certificate carries a common name while
// client-certificate auth and auth are on.
const gatewayCNRefused = "CommonName of client sending a request against gateway will be ignored and not used as expected"

// refuseGatewayCN wraps h, the handler of the client URLs' HTTP requests,
// for a member with --client-cert-auth and the JSON gateway: while auth is
// enabled (authEnabled), a request for a gateway path (/v3/...) that
// presented a verified certificate with a common name is refused with 400
// and etcd's text, as etcd refuses it. The gateway cannot pass the
// caller's certificate on, so the CN would not be the user; refusing says
// so rather than run the request as someone else.
//
// A certificate without a CN goes through, and the request then runs as
// the user its token names, or as nobody ("user name is empty"). etcd
// differs there: its gateway calls the member over TLS presenting
// --client-cert-file (or --cert-file), so a request without a token and
// without an Accept header runs as that certificate's CN (gRPC-gateway
// forwards Accept as grpcgateway-accept, the one sign etcd looks for
// before it ignores the CN). That lends the member's own identity to any
// client with a certificate from the trusted CA, the hole of
// CVE-2018-16886; cairn's gateway reaches the member over its private
// socket and never presents a certificate, so no request runs as the
// member's certificate.
func refuseGatewayCN(h http.Handler, authEnabled func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && strings.HasPrefix(r.URL.Path, "/v3/") && authEnabled() {
			for _, chain := range r.TLS.VerifiedChains {
				if len(chain) > 0 && chain[0].Subject.CommonName != "" {
					http.Error(w, gatewayCNRefused, http.StatusBadRequest)
					return
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}
