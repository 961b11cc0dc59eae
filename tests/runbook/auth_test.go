package runbook

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/proc"
)

// ctlStep is one etcdctl run of a runbook; its output is compared
// between cairn and etcd.
type ctlStep []string

// normalize keeps what an operator reads of etcdctl's output: the lines
// of its own, without clientv3's JSON log lines (timestamps, ports), with
// the trailing space trimmed.
func normalize(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "{\"level\"") {
			continue
		}
		keep = append(keep, strings.TrimRight(l, " \t\r"))
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}

// runSteps runs steps with ctl and returns, for each, "ok" or "error"
// and its normalized output.
func runSteps(t *testing.T, ctl etcdctl, steps []ctlStep) []string {
	t.Helper()
	var got []string
	for _, s := range steps {
		out, err := ctl.run(t, s...)
		status := "ok"
		if err != nil {
			status = "error"
		}
		got = append(got, fmt.Sprintf("etcdctl %s\n-> %s: %s", strings.Join(s, " "), status, normalize(out)))
	}
	return got
}

// compareRuns fails the test where cairn's output of a step differs from
// etcd's.
func compareRuns(t *testing.T, cairn, etcd []string) {
	t.Helper()
	for i := range etcd {
		t.Logf("etcd: %s", etcd[i])
		if cairn[i] != etcd[i] {
			t.Errorf("step %d differs\ncairn: %s\netcd:  %s", i, cairn[i], etcd[i])
		}
	}
}

// authRunbook is README's Auth section as an operator types it (the
// passwords given on the command line instead of at the prompt), with
// the range form of grant-permission and the refusals etcd answers.
var authRunbook = []ctlStep{
	{"user", "add", "root:rootpw"},
	{"role", "add", "root"},
	{"user", "grant-role", "root", "root"},
	{"role", "add", "app"},
	{"role", "grant-permission", "app", "readwrite", "/app/", "--prefix=true"},
	{"role", "grant-permission", "app", "read", "/r1", "/r5"},
	{"user", "add", "alice:secret"},
	{"user", "grant-role", "alice", "app"},
	{"auth", "enable"},

	{"--user", "alice:secret", "put", "/app/x", "1"},
	{"--user", "alice:secret", "get", "/app/x"},
	{"--user", "alice:secret", "put", "/other", "1"},
	{"put", "/app/x", "1"},
	{"--user", "alice:secret", "get", "/r2"},
	{"--user", "alice:secret", "get", "/r1", "/r5"},
	{"--user", "alice:secret", "get", "/r1", "/r6"},
	{"--user", "alice:secret", "put", "/r2", "1"},
	{"--user", "alice:wrong", "get", "/app/x"},
	{"--user", "alice:secret", "user", "list"},
	{"--user", "root:rootpw", "user", "list"},
	{"--user", "root:rootpw", "role", "list"},
	{"--user", "root:rootpw", "role", "get", "app"},
	{"--user", "root:rootpw", "user", "get", "alice"},
	{"--user", "root:rootpw", "get", "/other"},
	{"--user", "root:rootpw", "role", "revoke-permission", "app", "/r1", "/r5"},
	{"--user", "alice:secret", "get", "/r2"},
	{"--user", "root:rootpw", "auth", "status"},
	{"--user", "root:rootpw", "auth", "disable"},
	{"put", "/other", "2"},
}

// TestAuthRunbook (issue 12) runs README's auth flow with etcdctl against
// a cairn member and an etcd member: every step's output, allowed and
// refused alike, must be etcd's. The cairn member runs with --audit-log,
// which must hold the refused put and the auth changes.
func TestAuthRunbook(t *testing.T) {
	dir := t.TempDir()
	auditLog := filepath.Join(dir, "audit.log")
	c := startServer(t, proc.Cairn, "c1", filepath.Join(dir, "c1.cairn"), "", "", "--bcrypt-cost", "4", "--audit-log", auditLog)
	// Both at the lowest bcrypt cost: at etcd's default, one password
	// check in a race-built member can outlast etcdctl's dial timeout.
	e := startServer(t, proc.Etcd, "e1", filepath.Join(dir, "e1.etcd"), "", "", "--bcrypt-cost", "4")
	c.waitServing(t)
	e.waitServing(t)

	got := runSteps(t, newEtcdctl(t, c.clientURL), authRunbook)
	want := runSteps(t, newEtcdctl(t, e.clientURL), authRunbook)
	compareRuns(t, got, want)
	// The runbook itself must have shown what it is for.
	for _, w := range []string{"-> error: Error: etcdserver: permission denied", "-> error: Error: etcdserver: user name is empty"} {
		if !strings.Contains(strings.Join(want, "\n"), w) {
			t.Fatalf("etcd never answered %q: the runbook does not test it", w)
		}
	}

	// cairn's audit log: written as the requests come, so poll for it.
	err := kit.Poll(kit.WaitTimeout, func() error {
		raw, err := os.ReadFile(auditLog)
		if err != nil {
			return err
		}
		s := string(raw)
		for _, w := range []string{
			`"kind":"refused","method":"Put","user":"alice","key":"/other","reason":"etcdserver: permission denied"`,
			`"kind":"auth_change","method":"RoleGrantPermission","user":"","name":"app","perm":"READWRITE","key":"/app/","range_end":"/app0"`,
			`"kind":"auth_change","method":"AuthDisable","user":"root"`,
		} {
			if !strings.Contains(s, w) {
				return fmt.Errorf("audit log lacks %s:\n%s", w, s)
			}
		}
		return nil
	})
	if err != nil {
		failf(t, []*server{c}, "%v", err)
	}
}

// versions are a member's version fields: /version's, and endpoint
// status's storage version.
type versions struct {
	Server, Cluster, Storage string // GET /version
	StatusStorage            string // etcdctl endpoint status -w json
}

func readVersions(t *testing.T, s *server) versions {
	t.Helper()
	resp, err := http.Get(s.clientURL + "/version")
	if err != nil {
		t.Fatalf("GET %s/version: %v", s.clientURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Server  string `json:"etcdserver"`
		Cluster string `json:"etcdcluster"`
		Storage string `json:"storage"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("GET /version: %v\n%s", err, body)
	}
	var st []struct {
		Status struct {
			StorageVersion string `json:"storageVersion"`
		} `json:"Status"`
	}
	newEtcdctl(t, s.clientURL).json(t, &st, "endpoint", "status")
	if len(st) != 1 {
		t.Fatalf("endpoint status: %d entries", len(st))
	}
	return versions{Server: v.Server, Cluster: v.Cluster, Storage: v.Storage, StatusStorage: st[0].Status.StorageVersion}
}

// waitCluster waits until s's /version reports cluster version want.
func waitCluster(t *testing.T, s *server, want string) versions {
	t.Helper()
	var v versions
	err := kit.Poll(kit.WaitTimeout, func() error {
		v = readVersions(t, s)
		if v.Cluster != want {
			return fmt.Errorf("%s: cluster version %q, want %q", s.name, v.Cluster, want)
		}
		return nil
	})
	if err != nil {
		failf(t, []*server{s}, "%v (versions %+v)", err, v)
	}
	return v
}

// TestDowngradeRunbook (issue 13) runs etcdctl downgrade validate, enable
// and cancel against a cairn member and an etcd member, and compares what
// etcdctl prints (refusals included: a target that is not one minor
// version down, an enable or validate while a downgrade is on; and a
// cancel with none in progress, which etcd accepts), and the version
// fields (/version's and endpoint status's storage version) before,
// during and after.
func TestDowngradeRunbook(t *testing.T) {
	dir := t.TempDir()
	c := startServer(t, proc.Cairn, "c1", filepath.Join(dir, "c1.cairn"), "", "")
	// Both at the lowest bcrypt cost: at etcd's default, one password
	// check in a race-built member can outlast etcdctl's dial timeout.
	e := startServer(t, proc.Etcd, "e1", filepath.Join(dir, "e1.etcd"), "", "", "--bcrypt-cost", "4")
	c.waitServing(t)
	e.waitServing(t)
	cctl, ectl := newEtcdctl(t, c.clientURL), newEtcdctl(t, e.clientURL)

	// A new etcd member reports the storage version 3.5.0 until its
	// monitor raises it to the cluster version, a moment after the start
	// (longer on a loaded machine): the versions before are the settled
	// ones, or the cancel at the end would seem to change them.
	var before versions
	if err := kit.Poll(kit.WaitTimeout, func() error {
		before = readVersions(t, e)
		if before.Storage != before.Cluster || before.StatusStorage != before.Cluster {
			return fmt.Errorf("e1: storage versions %+v not yet at the cluster version", before)
		}
		return nil
	}); err != nil {
		failf(t, []*server{e}, "%v", err)
	}
	minor := before.Cluster[:strings.LastIndexByte(before.Cluster, '.')] // "3.7"
	var major, mi int
	if _, err := fmt.Sscanf(minor, "%d.%d", &major, &mi); err != nil {
		t.Fatalf("etcd's cluster version %q: %v", before.Cluster, err)
	}
	target := fmt.Sprintf("%d.%d", major, mi-1)
	if got := readVersions(t, c); got.Server != before.Server || got.Cluster != before.Cluster || got.Storage != before.Storage || got.StatusStorage != before.StatusStorage {
		t.Errorf("versions before: cairn %+v, etcd %+v", got, before)
	}

	steps := []ctlStep{
		{"downgrade", "validate", fmt.Sprintf("%d.%d", major, mi-2)},
		{"downgrade", "cancel"},
		{"downgrade", "validate", target},
	}
	compareRuns(t, runSteps(t, cctl, steps), runSteps(t, ectl, steps))

	enable := []ctlStep{{"downgrade", "enable", target}}
	compareRuns(t, runSteps(t, cctl, enable), runSteps(t, ectl, enable))
	// The cluster version goes down to the target once enabled; the
	// storage version follows it.
	wantDuring := waitCluster(t, e, target+".0")
	gotDuring := waitCluster(t, c, target+".0")
	waitStorage := func(s *server, want string) versions {
		var v versions
		err := kit.Poll(kit.WaitTimeout, func() error {
			v = readVersions(t, s)
			if v.Storage != want || v.StatusStorage != want {
				return fmt.Errorf("%s: storage versions %+v, want %q", s.name, v, want)
			}
			return nil
		})
		if err != nil {
			failf(t, []*server{s}, "%v", err)
		}
		return v
	}
	// etcd's storage version follows the cluster version a moment later:
	// wait for the target, not for what it was when the cluster version
	// changed.
	wantDuring = waitStorage(e, target+".0")
	gotDuring = waitStorage(c, target+".0")
	if gotDuring.Cluster != wantDuring.Cluster || gotDuring.StatusStorage != wantDuring.StatusStorage {
		t.Errorf("versions during the downgrade: cairn %+v, etcd %+v", gotDuring, wantDuring)
	}
	again := []ctlStep{{"downgrade", "enable", target}, {"downgrade", "validate", target}}
	compareRuns(t, runSteps(t, cctl, again), runSteps(t, ectl, again))

	cancel := []ctlStep{{"downgrade", "cancel"}}
	compareRuns(t, runSteps(t, cctl, cancel), runSteps(t, ectl, cancel))
	wantAfter := waitCluster(t, e, before.Cluster)
	gotAfter := waitCluster(t, c, before.Cluster)
	wantAfter = waitStorage(e, before.Storage)
	gotAfter = waitStorage(c, before.Storage)
	t.Logf("versions before %+v, during %+v, after %+v (etcd's)", before, wantDuring, wantAfter)
	if gotAfter.Cluster != wantAfter.Cluster || gotAfter.StatusStorage != wantAfter.StatusStorage {
		t.Errorf("versions after the cancel: cairn %+v, etcd %+v", gotAfter, wantAfter)
	}
	compareRuns(t, runSteps(t, cctl, cancel), runSteps(t, ectl, cancel))
}
