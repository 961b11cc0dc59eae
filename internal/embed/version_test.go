package embed

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// versionSide is one server of the downgrade comparison: a client and the
// base URL of its HTTP endpoints.
type versionSide struct {
	name string
	c    *clientv3.Client
	http string
}

func startEtcdOracle(t *testing.T) versionSide {
	t.Helper()
	e := oracle.Start(t)
	return versionSide{name: "etcd", c: quietClient(t, "http://"+e.Addr), http: "http://" + e.Addr}
}

// quietClient is a client that does not log the refusals the test asks for.
func quietClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (vs versionSide) versions(t *testing.T) map[string]string {
	t.Helper()
	resp, err := http.Get(vs.http + "/version")
	if err != nil {
		t.Fatalf("%s: GET /version: %v", vs.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]string
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: /version %q: %v", vs.name, b, err)
	}
	return v
}

// versionMetrics returns the etcd_server_version and etcd_cluster_version
// samples of /metrics.
func (vs versionSide) versionMetrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(vs.http + "/metrics")
	if err != nil {
		t.Fatalf("%s: GET /metrics: %v", vs.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "etcd_server_version{") || strings.HasPrefix(l, "etcd_cluster_version{") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

// waitVersions waits until /version reports the cluster and storage
// versions given, failing clearly after a generous deadline (etcd's
// monitor looks every few seconds).
func (vs versionSide) waitVersions(t *testing.T, cluster, storage string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		v := vs.versions(t)
		if v["etcdcluster"] == cluster && v["storage"] == storage {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /version %v after 60s, want cluster %s storage %s", vs.name, v, cluster, storage)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDowngradeAgainstEtcd runs the same Maintenance.Downgrade sequence
// through clientv3 against embedded etcd and cairn and compares every
// answer (the cluster version in the response, or the error), the
// downgrade info Status reports, /version, and how the cluster version
// follows the downgrade job down and back up.
func TestDowngradeAgainstEtcd(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	sides := []versionSide{
		startEtcdOracle(t),
		{name: "cairn", c: quietClient(t, m.ClientURLs()[0]), http: m.ClientURLs()[0]},
	}
	type step struct {
		action clientv3.DowngradeAction
		target string
	}
	// Each phase's steps run once the cluster version is the phase's.
	phases := []struct {
		cluster, storage string
		steps            []step
	}{
		{"3.7.0", "3.7.0", []step{
			{clientv3.DowngradeValidate, "x.y"},
			{clientv3.DowngradeValidate, "3.5"},
			{clientv3.DowngradeValidate, "3.7"},
			{clientv3.DowngradeValidate, "3.8.1"},
			{clientv3.DowngradeValidate, "3.6"},
			{clientv3.DowngradeValidate, "3.6.2"},
			{clientv3.DowngradeEnable, "3.5.0"},
			{clientv3.DowngradeEnable, "bad"},
			{clientv3.DowngradeCancel, ""},
			{clientv3.DowngradeEnable, "3.6"},
		}},
		{"3.6.0", "3.6.0", []step{
			{clientv3.DowngradeValidate, "3.5"},
			{clientv3.DowngradeValidate, "3.6"},
			{clientv3.DowngradeEnable, "3.5"},
			{clientv3.DowngradeCancel, ""},
		}},
		{"3.7.0", "3.7.0", []step{
			{clientv3.DowngradeValidate, "3.6"},
			{clientv3.DowngradeCancel, ""},
		}},
	}
	results := make([][]string, len(sides))
	for i, vs := range sides {
		ctx := ctxT(t)
		for _, ph := range phases {
			vs.waitVersions(t, ph.cluster, ph.storage)
			v := vs.versions(t)
			sr, err := vs.c.Status(ctx, vs.c.Endpoints()[0])
			if err != nil {
				t.Fatalf("%s: status: %v", vs.name, err)
			}
			results[i] = append(results[i], fmt.Sprintf("/version cluster=%s storage=%s; status storage version %s; metrics %s",
				v["etcdcluster"], v["storage"], sr.StorageVersion, vs.versionMetrics(t)))
			for _, st := range ph.steps {
				resp, err := vs.c.Downgrade(ctx, st.action, st.target)
				var out string
				if err != nil {
					out = "error: " + err.Error()
				} else {
					out = "version " + resp.Version
				}
				sr, err := vs.c.Status(ctx, vs.c.Endpoints()[0])
				if err != nil {
					t.Fatalf("%s: status: %v", vs.name, err)
				}
				d := sr.DowngradeInfo
				results[i] = append(results[i], fmt.Sprintf("%v %q: %s; status downgrade enabled=%v target=%q, version %s",
					st.action, st.target, out, d.GetEnabled(), d.GetTargetVersion(), sr.Version))
			}
		}
	}
	for j := range max(len(results[0]), len(results[1])) {
		var e, c string
		if j < len(results[0]) {
			e = results[0][j]
		}
		if j < len(results[1]) {
			c = results[1][j]
		}
		if e != c {
			t.Errorf("step %d:\n etcd  %s\n cairn %s", j, e, c)
		}
	}
	if n := len(results[0]); n != 19 {
		t.Errorf("etcd's run has %d results, want 19 (3 phases, 16 steps)", n)
	}
	if t.Failed() {
		for _, r := range results[0] {
			t.Log("etcd: ", r)
		}
	}
}
