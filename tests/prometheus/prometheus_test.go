//go:build prometheus

package prometheus

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v2"

	"github.com/cairn-db/cairn/internal/freeport"
)

// Deadlines for conditions that fail the test when not met; generous, as
// two cores run three members, Prometheus, the load and the test.
const (
	readyTimeout = 60 * time.Second
	fireTimeout  = 3 * time.Minute
	poll         = 500 * time.Millisecond
)

// rulesFile is the operators' rules file, relative to this package.
const rulesFile = "../../docs/alerts.yml"

// notProvoked are the alerts whose condition the test cannot bring about
// (a slow disk, a large fragmented database); all others must fire.
var notProvoked = []string{"CairnSlowWALFsync", "CairnSlowBackendCommit", "CairnDatabaseHighFragmentation"}

// member is one cairn process.
type member struct {
	name, dir, clientURL, peerURL string
	logPath                       string
	cmd                           *exec.Cmd
	exited                        chan struct{}
}

func (m *member) stopped() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

func TestAlertRules(t *testing.T) {
	promBin := prometheusBinary(t)
	bin := buildCairn(t)

	// The quota: an empty member's size on this machine (its write-ahead
	// log preallocation included) plus room for a few seconds of writes.
	quota := emptySize(t, bin) + 24<<20
	t.Logf("quota %d bytes", quota)

	ms := startCluster(t, bin, 3, quota)
	cli := newClient(t, ms...)
	waitLeader(t, ms)
	logSizes(t, "started", ms)

	prom := startPrometheus(t, promBin, ms)
	fired := watchAlerts(t, prom)
	// All three members scraped, so that the counters' starting values
	// are in before anything is provoked.
	waitFor(t, "Prometheus scrapes all three members", readyTimeout, func() bool {
		v, ok := queryScalar(t, prom, `count(up{job="cairn"} == 1)`)
		return ok && v == 3
	})

	loadCtx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	for w := range 4 {
		load.Go(func() { runLoad(loadCtx, cli, w) })
	}
	defer func() { stopLoad(); load.Wait() }()

	// 1. Leader changes, and a follower stopped for two seconds: the
	// keepalives to it come back late.
	for i := range 5 {
		moveLeader(t, cli, ms, i)
	}
	follower := followerOf(t, ms)
	t.Logf("stopping %s for 2s", follower.name)
	if err := follower.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the stop itself is the condition
	if err := follower.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, ms)

	// 2. Fill the database to its quota: the NOSPACE alarm is raised and
	// puts fail with ResourceExhausted.
	logSizes(t, "before the fill", ms)
	fill(t, cli)

	// 3. Two members killed: the survivor has no leader; its reads time
	// out and its proposals fail.
	stopLoad()
	load.Wait()
	survivor := ms[0]
	for _, m := range ms[1:] {
		t.Logf("killing %s", m.name)
		m.cmd.Process.Kill()
		<-m.exited
	}
	survivorCli := newClient(t, survivor)
	stuckCtx, stopStuck := context.WithCancel(context.Background())
	var stuck sync.WaitGroup
	for range 16 {
		stuck.Go(func() { runStuck(stuckCtx, survivorCli) })
	}
	defer func() { stopStuck(); stuck.Wait() }()

	var want []string
	for _, r := range loadRules(t) {
		if !slices.Contains(notProvoked, r.Alert) {
			want = append(want, r.Alert)
		}
	}
	waitFor(t, "the provoked alerts to fire", fireTimeout, func() bool {
		missing := fired.missing(want)
		if len(missing) > 0 {
			t.Logf("not fired yet: %v", missing)
		}
		return len(missing) == 0
	})
	stopStuck()
	stuck.Wait()

	// Every expression returns data, less its threshold.
	for _, r := range loadRules(t) {
		for _, probe := range probes(r.Expr) {
			n := querySeries(t, prom, probe)
			if n == 0 {
				t.Errorf("%s: %q returns no data", r.Alert, probe)
			}
		}
	}
	if !slices.Contains(fired.names(), "CairnMembersDown") {
		t.Error("CairnMembersDown never fired")
	}
	t.Logf("alerts that fired: %v", fired.names())
}

// rule is an alert rule of the rules file.
type rule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var out []rule
	for _, g := range doc.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no rules", rulesFile)
	}
	return out
}

// instantRules writes the rules file with every rule's "for" set to 0s,
// so that an alert fires as soon as its condition holds.
func instantRules(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range doc["groups"].([]any) {
		for _, r := range g.(map[any]any)["rules"].([]any) {
			r.(map[any]any)["for"] = "0s"
			n++
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	andRE       = regexp.MustCompile(`\s+and\s+`)
	thresholdRE = regexp.MustCompile(`(?s)^(.*?)\s*(>|<|==|>=|<=|!=)\s*([0-9.e+]+|[a-zA-Z_:]+(\{[^}]*\})?)\s*$`)
)

// probes returns an alert expression's parts ("a and b" has two) without
// their thresholds: what must return data whether or not the alert fires.
func probes(expr string) []string {
	var out []string
	for _, part := range andRE.Split(strings.TrimSpace(expr), -1) {
		if m := thresholdRE.FindStringSubmatch(part); m != nil {
			part = m[1]
		}
		out = append(out, strings.TrimSpace(part))
	}
	return out
}

// TestProbes checks the threshold stripping on the shapes the rules use.
func TestProbes(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`up{job=~".*(cairn|etcd).*"} == 0`, []string{`up{job=~".*(cairn|etcd).*"}`}},
		{"a / b\n  > 0.8", []string{"a / b"}},
		{`predict_linear(x[4h], 4 * 3600) > q{job=~"j"}`, []string{`predict_linear(x[4h], 4 * 3600)`}},
		{"a / b < 0.5\n  and c > 104857600", []string{"a / b", "c"}},
	} {
		if got := probes(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("probes(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}

// firedSet records every alert seen firing.
type firedSet struct {
	mu  sync.Mutex
	set map[string]bool
}

func (f *firedSet) add(name string) {
	f.mu.Lock()
	f.set[name] = true
	f.mu.Unlock()
}

func (f *firedSet) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.set {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (f *firedSet) missing(want []string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, n := range want {
		if !f.set[n] {
			out = append(out, n)
		}
	}
	return out
}

// watchAlerts polls Prometheus's alerts until the test ends, recording
// each one that fires: some conditions (a slow round trip) hold only for
// a while.
func watchAlerts(t *testing.T, prom string) *firedSet {
	f := &firedSet{set: make(map[string]bool)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var resp struct {
				Data struct {
					Alerts []struct {
						Labels map[string]string `json:"labels"`
						State  string            `json:"state"`
					} `json:"alerts"`
				} `json:"data"`
			}
			if err := getJSON(prom+"/api/v1/alerts", &resp); err == nil {
				for _, a := range resp.Data.Alerts {
					if a.State == "firing" {
						f.add(a.Labels["alertname"])
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(poll):
			}
		}
	}()
	return f
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s: %s", u, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// queryResult is an instant query's vector result.
type queryResult struct {
	Status string `json:"status"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func query(t *testing.T, prom, q string) queryResult {
	t.Helper()
	var r queryResult
	if err := getJSON(prom+"/api/v1/query?query="+url.QueryEscape(q), &r); err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	if r.Status != "success" {
		t.Fatalf("query %q: status %q", q, r.Status)
	}
	return r
}

// querySeries returns how many series q returns now.
func querySeries(t *testing.T, prom, q string) int {
	t.Helper()
	return len(query(t, prom, q).Data.Result)
}

// queryScalar returns the value of q's only series, if it has one.
func queryScalar(t *testing.T, prom, q string) (float64, bool) {
	t.Helper()
	r := query(t, prom, q)
	if len(r.Data.Result) != 1 || len(r.Data.Result[0].Value) != 2 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", timeout, what)
		}
		time.Sleep(poll)
	}
}

// prometheusBinary finds prometheus: CAIRN_PROMETHEUS, or on the PATH.
func prometheusBinary(t *testing.T) string {
	if p := os.Getenv("CAIRN_PROMETHEUS"); p != "" {
		return p
	}
	p, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and no prometheus binary: install Debian's prometheus package")
		}
		t.Skip("no prometheus binary (apt-get install -y prometheus, or set CAIRN_PROMETHEUS)")
	}
	return p
}

// buildCairn builds cmd/cairn into a temporary directory.
func buildCairn(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cairn")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/cairn-db/cairn/cmd/cairn")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startMember starts a cairn process with args; it is killed when the test
// ends, and its log printed if the test failed.
// peerURL "" picks a free port.
func startMember(t *testing.T, bin, name, peerURL string, args ...string) *member {
	t.Helper()
	if peerURL == "" {
		peerURL = "http://" + freeport.Addr(t)
	}
	dir := t.TempDir()
	m := &member{
		name: name, dir: filepath.Join(dir, "data"),
		clientURL: "http://" + freeport.Addr(t), peerURL: peerURL,
		logPath: filepath.Join(dir, "log"), exited: make(chan struct{}),
	}
	logf, err := os.Create(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{
		"--name", name, "--data-dir", m.dir,
		"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--metrics", "extensive",
	}, args...)
	m.cmd = exec.Command(bin, all...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.cmd.Wait(); logf.Close(); close(m.exited) }()
	t.Cleanup(func() {
		if !m.stopped() {
			m.cmd.Process.Signal(syscall.SIGCONT)
			m.cmd.Process.Kill()
			<-m.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(m.logPath)
			t.Logf("log of %s:\n%s", m.name, tail(b, 60))
		}
	})
	return m
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// emptySize starts a member alone and returns the database size it
// reports once it serves.
func emptySize(t *testing.T, bin string) int64 {
	t.Helper()
	m := startMember(t, bin, "probe", "")
	var size float64
	waitFor(t, "the probe member's metrics", readyTimeout, func() bool {
		v, ok := scrapeValue(m.clientURL, "etcd_mvcc_db_total_size_in_bytes")
		size = v
		return ok && v > 0
	})
	m.cmd.Process.Kill()
	<-m.exited
	return int64(size)
}

// logSizes logs each member's database size.
func logSizes(t *testing.T, when string, ms []*member) {
	t.Helper()
	var sizes []string
	for _, m := range ms {
		v, _ := scrapeValue(m.clientURL, "etcd_mvcc_db_total_size_in_bytes")
		sizes = append(sizes, fmt.Sprintf("%s %.0f", m.name, v))
	}
	t.Logf("database sizes, %s: %s", when, strings.Join(sizes, ", "))
}

// scrapeValue reads one unlabelled sample from url's /metrics.
func scrapeValue(u, name string) (float64, bool) {
	resp, err := http.Get(u + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// startCluster starts n members as a new cluster with the given quota.
func startCluster(t *testing.T, bin string, n int, quota int64) []*member {
	t.Helper()
	ms := make([]*member, n)
	names := make([]string, n)
	peers := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("m%d", i+1)
		peers[i] = "http://" + freeport.Addr(t)
	}
	var initial []string
	for i := range n {
		initial = append(initial, names[i]+"="+peers[i])
	}
	for i := range n {
		m := startMember(t, bin, names[i], peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "prometheus-tier", "--quota-backend-bytes", strconv.FormatInt(quota, 10))
		ms[i] = m
	}
	return ms
}

func newClient(t *testing.T, ms ...*member) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.clientURL)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// status returns the status of each running member, by member.
func status(ms []*member) map[*member]*clientv3.StatusResponse {
	out := make(map[*member]*clientv3.StatusResponse)
	for _, m := range ms {
		if m.stopped() {
			continue
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{m.clientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.Status(ctx, m.clientURL)
		cancel()
		c.Close()
		if err == nil {
			out[m] = st
		}
	}
	return out
}

// waitLeader waits until every running member names the same leader, and
// returns it.
func waitLeader(t *testing.T, ms []*member) (leader *member, id uint64) {
	t.Helper()
	waitFor(t, "the members to agree on a leader", readyTimeout, func() bool {
		sts := status(ms)
		leader, id = nil, 0
		for m, st := range sts {
			if st.Leader == 0 || (id != 0 && st.Leader != id) {
				return false
			}
			id = st.Leader
			if st.Header.MemberId == st.Leader {
				leader = m
			}
		}
		return len(sts) == len(ms) && leader != nil
	})
	return leader, id
}

func followerOf(t *testing.T, ms []*member) *member {
	t.Helper()
	leader, _ := waitLeader(t, ms)
	for _, m := range ms {
		if m != leader {
			return m
		}
	}
	t.Fatal("no follower")
	return nil
}

// moveLeader moves the leadership to another member and waits for it.
func moveLeader(t *testing.T, cli *clientv3.Client, ms []*member, i int) {
	t.Helper()
	leader, _ := waitLeader(t, ms)
	sts := status(ms)
	var others []*member
	for _, m := range ms {
		if m != leader {
			others = append(others, m)
		}
	}
	target := others[i%len(others)]
	targetID := sts[target].Header.MemberId
	c := newClient(t, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.MoveLeader(ctx, targetID); err != nil {
		t.Fatalf("move leader from %s to %s: %v", leader.name, target.name, err)
	}
	waitFor(t, "the new leader", readyTimeout, func() bool {
		now, _ := waitLeader(t, ms)
		return now == target
	})
	t.Logf("leader moved from %s to %s", leader.name, target.name)
}

// runLoad puts and reads small keys until ctx ends; errors (NOSPACE once
// the quota is full) are expected and ignored.
func runLoad(ctx context.Context, cli *clientv3.Client, w int) {
	for i := 0; ctx.Err() == nil; i++ {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		key := fmt.Sprintf("load/%d/%d", w, i%100)
		cli.Put(rctx, key, strconv.Itoa(i))
		cli.Get(rctx, key)
		cancel()
	}
}

// fill writes large values until the quota refuses them, then a few more.
func fill(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	value := strings.Repeat("x", 256<<10)
	deadline := time.Now().Add(fireTimeout)
	refused := 0
	for i := 0; refused < 50; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the quota refused no put in %v (%d puts)", fireTimeout, i)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Put(ctx, fmt.Sprintf("fill/%d", i%1000), value)
		cancel()
		switch {
		case errors.Is(err, rpctypes.ErrNoSpace):
			if refused == 0 {
				t.Logf("NOSPACE after %d puts of 256 KiB", i)
			}
			refused++
		case err != nil:
			t.Logf("fill put: %v", err)
		}
	}
}

// runStuck sends the leaderless survivor linearizable reads and deletes,
// each given a second, until ctx ends.
func runStuck(ctx context.Context, cli *clientv3.Client) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		cli.Get(rctx, "load/0/0")
		cancel()
		rctx, cancel = context.WithTimeout(ctx, time.Second)
		cli.Delete(rctx, "fill/0")
		cancel()
	}
}

// startPrometheus starts Prometheus scraping ms every second and
// evaluating the rules (each "for" cut to zero) every second; it returns
// its URL.
func startPrometheus(t *testing.T, bin string, ms []*member) string {
	t.Helper()
	dir := t.TempDir()
	rules := instantRules(t, dir)
	var targets []string
	for _, m := range ms {
		targets = append(targets, fmt.Sprintf("%q", strings.TrimPrefix(m.clientURL, "http://")))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: cairn
    static_configs:
      - targets: [%s]
`, rules, strings.Join(targets, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeport.Addr(t)
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file", cfgPath, "--storage.tsdb.path", filepath.Join(dir, "tsdb"),
		"--web.listen-address", addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", tail(b, 40))
		}
	})
	u := "http://" + addr
	waitFor(t, "Prometheus to be ready", readyTimeout, func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited:\n%s", tail(b, 40))
		default:
		}
		resp, err := http.Get(u + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return u
}
