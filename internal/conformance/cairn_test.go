package conformance

import "testing"

// startCairn starts a cairn member and returns its client endpoint.
func startCairn(t testing.TB, sc *scope) string {
	t.Helper()
	t.Fatal("cairn's internal/embed is not built yet; run with CAIRN_CONFORMANCE_SUBJECT=direct or etcd")
	return ""
}
