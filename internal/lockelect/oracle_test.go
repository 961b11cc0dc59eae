package lockelect

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/tests/kit"
)

// scenario is a sequence of Lock and Election calls that records, in order,
// what a client sees. It runs once against etcd's services and once against
// ours, under different key prefixes (the two may share one store).
type scenario func(t *testing.T, r *recorder)

// recorder runs one scenario against one pair of services and writes the
// answers with everything that differs between the two runs for reasons
// other than the services taken out: the key prefix, lease IDs (named by
// the scenario, or "$gen" for a lease the service granted itself) and the
// store revision the run started at. Headers are left out.
type recorder struct {
	svc  services
	ns   string
	base int64
	// leases names the leases the scenario granted.
	leases map[int64]string
	lines  []string
}

// compareWithEtcd runs s against etcd's services and ours, both on one
// embedded etcd, and fails on any difference in what a client sees.
func compareWithEtcd(t *testing.T, s scenario) {
	f := newFixture(t)
	compareServices(t, f.etcd, f.ours, s)
}

// compareServices runs s against want, then against got, and fails on any
// difference in what a client sees. Nothing else may write to the stores
// meanwhile: revisions are compared relative to each run's start.
func compareServices(t *testing.T, want, got services, s scenario) {
	run := func(svc services, ns string) []string {
		r := &recorder{svc: svc, ns: ns, leases: map[int64]string{}}
		resp, err := svc.kv.Get(testCtx(t), "any")
		if err != nil {
			t.Fatal(err)
		}
		r.base = resp.Header.Revision
		s(t, r)
		return r.lines
	}
	wantLines := run(want, "etcd-")
	gotLines := run(got, "ours-")
	if d := cmp.Diff(wantLines, gotLines); d != "" {
		t.Errorf("answers differ from etcd's (-etcd +ours):\n%s", d)
	}
	t.Logf("transcript:\n%s", strings.Join(gotLines, "\n"))
}

// name returns a lock or election name in the run's namespace.
func (r *recorder) name(n string) []byte { return []byte(r.ns + n) }

// grant returns a new lease with TTL 60 s, called sym in the transcript.
func (r *recorder) grant(t *testing.T, sym string) int64 {
	id := grantLease(t, r.svc.kv, 60)
	r.leases[id] = sym
	return id
}

// logf adds a line to the transcript.
func (r *recorder) logf(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

// key renders a key without the namespace, with a lease ID in the last
// path element replaced by its name.
func (r *recorder) key(k []byte) string {
	s := strings.TrimPrefix(string(k), r.ns)
	i := strings.LastIndex(s, "/")
	if i < 0 {
		return s
	}
	id, err := strconv.ParseInt(s[i+1:], 16, 64)
	if err != nil {
		return s
	}
	return s[:i+1] + r.lease(id)
}

// revoke revokes lease id.
func (r *recorder) revoke(t *testing.T, id int64) { revokeLease(t, r.svc.kv, id) }

// lease renders a lease ID.
func (r *recorder) lease(id int64) string {
	if id == 0 {
		return "0"
	}
	if sym, ok := r.leases[id]; ok {
		return sym
	}
	return "$gen"
}

// rev renders a revision relative to the run's start.
func (r *recorder) rev(rev int64) string {
	if rev == 0 {
		return "0"
	}
	return fmt.Sprintf("+%d", rev-r.base)
}

// kv renders a key-value pair.
func (r *recorder) kv(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%s=%q create=%s mod=%s ver=%d lease=%s",
		r.key(kv.Key), kv.Value, r.rev(kv.CreateRevision), r.rev(kv.ModRevision), kv.Version, r.lease(kv.Lease))
}

// err renders an error as a client matches it: status code and message.
func (r *recorder) err(err error) string {
	s := status.Convert(err)
	return fmt.Sprintf("error %s %q", s.Code(), s.Message())
}

// keys records the keys under prefix n in the run's namespace.
func (r *recorder) keys(t *testing.T, n string) {
	t.Helper()
	resp, err := r.svc.kv.Get(testCtx(t), string(r.name(n)), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var ks []string
	for _, kv := range resp.Kvs {
		ks = append(ks, r.kv(kv))
	}
	r.logf("keys %s: [%s]", n, strings.Join(ks, ", "))
}

// waitKeys polls until exactly n keys exist under prefix p in the run's
// namespace.
func (r *recorder) waitKeys(t *testing.T, p string, n int) {
	t.Helper()
	kit.WaitKeys(t, r.svc.kv, string(r.name(p)), int64(n))
}

// errText returns the message a client sees for err.
func errText(err error) string { return status.Convert(err).Message() }
