package embed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/storage"
)

func testConfig(t *testing.T, dir string) *Config {
	t.Helper()
	cfg := NewConfig()
	cfg.Name = "m1"
	cfg.DataDir = dir
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.UnsafeNoFsync = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

func start(t *testing.T, cfg *Config) *Member {
	t.Helper()
	m, err := Start(cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func client(t *testing.T, m *Member) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs(), DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartPutGetCloseRestart(t *testing.T) {
	dir := t.TempDir()
	m := start(t, testConfig(t, dir))
	urls := m.ClientURLs()
	if len(urls) != 1 || !strings.HasPrefix(urls[0], "http://127.0.0.1:") || strings.HasSuffix(urls[0], ":0") {
		t.Fatalf("client URLs %v: want the bound port", urls)
	}
	c := client(t, m)
	ctx := ctxT(t)
	put, err := c.Put(ctx, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	if put.Header.Revision != 2 || put.Header.MemberId != m.Server().MemberID() || put.Header.ClusterId != m.Server().ClusterID() {
		t.Errorf("put header %v", put.Header)
	}
	got, err := c.Get(ctx, "foo")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "bar" {
		t.Fatalf("get: %v %v", got, err)
	}
	st, err := c.Status(ctx, urls[0])
	if err != nil || st.Leader != m.Server().MemberID() || st.Version == "" {
		t.Fatalf("status: %v %v", st, err)
	}

	// HTTP on the same port.
	resp, err := http.Get(urls[0] + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"health":"true","reason":""}` {
		t.Fatalf("/health: %d %q", resp.StatusCode, body)
	}
	resp, err = http.Get(urls[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"etcd_server_has_leader 1", "grpc_server_handled_total", "process_start_time_seconds"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	id := m.Server().MemberID()
	c.Close()
	if err := m.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	m2 := start(t, testConfig(t, dir))
	c2 := client(t, m2)
	got, err = c2.Get(ctx, "foo")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "bar" || got.Header.Revision != 2 {
		t.Fatalf("get after restart: %v %v", got, err)
	}
	if m2.Server().MemberID() != id {
		t.Errorf("member id changed across restart: %x, then %x", id, m2.Server().MemberID())
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	start(t, testConfig(t, dir))
	_, err := Start(testConfig(t, dir))
	if !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("second member on %s: %v, want storage.ErrLocked", dir, err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
}

func TestPortInUse(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = m.ClientURLs()
	_, err := Start(cfg)
	if err == nil || !strings.Contains(err.Error(), "listen on client URL") {
		t.Fatalf("second member on %v: %v", cfg.ListenClientURLs, err)
	}
}

func TestSeveralClientURLs(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0", "http://127.0.0.1:0"}
	m := start(t, cfg)
	urls := m.ClientURLs()
	if len(urls) != 2 || urls[0] == urls[1] {
		t.Fatalf("client URLs %v", urls)
	}
	ctx := ctxT(t)
	a, err := clientv3.New(clientv3.Config{Endpoints: urls[:1], DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := clientv3.New(clientv3.Config{Endpoints: urls[1:], DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := a.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "k"); err != nil || len(got.Kvs) != 1 {
		t.Fatalf("get through the other URL: %v %v", got, err)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.ElectionMs = 400 }, "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"},
		{func(c *Config) { c.ElectionMs = 60000 }, "--election-timeout[60000ms] is too long, and should be set less than 50000ms"},
		{func(c *Config) { c.HeartbeatMs = 0 }, "--heartbeat-interval must be >0 (set to 0ms)"},
		{func(c *Config) { c.AdvertiseClientURLs = nil }, "--advertise-client-urls is required when --listen-client-urls is set explicitly"},
		{func(c *Config) { c.AutoCompactionMode = "hourly" }, `unknown auto-compaction-mode "hourly"`},
		{func(c *Config) { c.ListenClientURLs = []string{"https://127.0.0.1:0"} }, "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:0 with HTTPS scheme"},
		{func(c *Config) { c.ListenClientURLs = []string{"unix:///tmp/x"} }, "not supported"},
		{func(c *Config) { c.LogLevel = "loud" }, "unknown log level: loud"},
	}
	for _, tc := range cases {
		cfg := testConfig(t, t.TempDir())
		tc.edit(cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
		if _, err := Start(cfg); err == nil {
			t.Errorf("Start accepted a config Validate refuses (%q)", tc.want)
		}
	}
	if err := NewConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestNewConfigDefaults(t *testing.T) {
	c := NewConfig()
	if c.Name != "default" || c.DataDir != "default.cairn" || c.ListenClientURLs[0] != "http://localhost:2379" ||
		c.AdvertiseClientURLs[0] != "http://localhost:2379" || c.MaxRequestBytes != 1536*1024 || c.MaxTxnOps != 128 ||
		c.HeartbeatMs != 100 || c.ElectionMs != 1000 || c.InitialClusterToken != "etcd-cluster" || !c.PreVote {
		t.Errorf("defaults %+v", c)
	}
	if sc := c.serverConfig(nil, nil); sc.DisablePreVote {
		t.Errorf("pre-vote is on by default, but the server was told to disable it")
	}
	c.PreVote = false
	if sc := c.serverConfig(nil, nil); !sc.DisablePreVote {
		t.Errorf("--pre-vote=false did not reach the server")
	}
	c.DataDir = ""
	c.Name = "infra1"
	if c.dataDir() != "infra1.cairn" {
		t.Errorf("data dir of an unnamed directory: %s", c.dataDir())
	}
}

// TestCloseWithRequestsInFlight checks that Close returns while clients
// are busy and that they then see an error rather than hang. The writers use
// a plain gRPC stub: clientv3 would retry a refused connection until its
// context ended.
func TestCloseWithRequestsInFlight(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	conn, err := grpc.NewClient(strings.TrimPrefix(m.ClientURLs()[0], "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	ctx := ctxT(t)
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("warm"), Value: []byte("up")}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			var err error
			for j := 0; err == nil; j++ {
				_, err = kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "k%d-%d", i, j), Value: []byte("v")})
			}
			errs <- err
		}()
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		if err := <-errs; status.Code(err) != codes.Unavailable {
			t.Fatalf("a writer got %v after Close, want Unavailable", err)
		}
	}
}

// TestRangeStreamEndToEnd reads a range through clientv3's GetStream on a
// real member and compares it with Get.
func TestRangeStreamEndToEnd(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxRequestBytes = 4096 // small chunks
	m := start(t, cfg)
	c := client(t, m)
	ctx := ctxT(t)
	for i := range 300 {
		if _, err := c.Put(ctx, fmt.Sprintf("key%04d", i), strings.Repeat("x", 64)); err != nil {
			t.Fatal(err)
		}
	}
	want, err := c.Get(ctx, "key", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.GetStream(ctx, "key", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got, err := clientv3.GetStreamToGetResponse(ch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 300 || got.Count != want.Count || got.More || got.Header.Revision != want.Header.Revision {
		t.Fatalf("stream: %d kvs, count %d, more %v, rev %d; get: count %d, rev %d",
			len(got.Kvs), got.Count, got.More, got.Header.Revision, want.Count, want.Header.Revision)
	}
	for i := range got.Kvs {
		if string(got.Kvs[i].Key) != string(want.Kvs[i].Key) || got.Kvs[i].ModRevision != want.Kvs[i].ModRevision {
			t.Fatalf("kv %d: %v, want %v", i, got.Kvs[i], want.Kvs[i])
		}
	}
}

// TestMetricsURLs checks etcd's --listen-metrics-urls: the HTTP endpoints
// alone on a port of their own, as kubeadm's probes use them.
func TestMetricsURLs(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.ListenMetricsURLs = []string{"http://127.0.0.1:0"}
	m := start(t, cfg)
	urls := m.MetricsURLs()
	if len(urls) != 1 || urls[0] == m.ClientURLs()[0] {
		t.Fatalf("metrics URLs %v, client URLs %v", urls, m.ClientURLs())
	}
	// /readyz answers 503 until the member leads (a linearizable read
	// must succeed): wait for that first, as a probe's retries would.
	if _, err := client(t, m).Put(ctxT(t), "ready", "1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/health?exclude=NOSPACE&serializable=true", "/livez", "/readyz", "/metrics"} {
		resp, err := http.Get(urls[0] + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s on the metrics URL: %d", p, resp.StatusCode)
		}
	}
}

// TestClientHTTPURLs checks etcd's --listen-client-http-urls: HTTP on its
// own URLs, and the client URLs left to gRPC.
func TestClientHTTPURLs(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.ListenClientHTTPURLs = []string{"http://127.0.0.1:0"}
	m := start(t, cfg)
	if _, err := client(t, m).Put(ctxT(t), "k", "v"); err != nil {
		t.Fatalf("gRPC on the client URL: %v", err)
	}
	resp, err := http.Get(m.HTTPURLs()[0] + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/health on the HTTP URL: %d", resp.StatusCode)
	}
	// HTTP/1.1 on the client URL now reaches the gRPC server, which does
	// not speak it.
	if resp, err := http.Get(m.ClientURLs()[0] + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("/health still served on the gRPC-only client URL: %d", resp.StatusCode)
	}
}
