package api

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/internal/server"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestHTTPOnGRPCPort checks that the HTTP endpoints answer on the very port
// gRPC is served on, while gRPC keeps working there.
func TestHTTPOnGRPCPort(t *testing.T) {
	f := newFakeBackend()
	s := serve(t, f, Options{})
	base := "http://" + s.addr

	code, body := httpGet(t, base+"/health")
	if code != 200 || body != `{"health":"true","reason":""}` {
		t.Errorf("/health: %d %q", code, body)
	}
	code, body = httpGet(t, base+"/version")
	var v map[string]string
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || v["etcdserver"] != EtcdVersion || v["etcdcluster"] != "3.7.0" {
		t.Errorf("/version: %d %q", code, body)
	}
	if !strings.HasPrefix(EtcdVersion, "3.7.") {
		t.Errorf("EtcdVersion %q: cairn speaks etcd 3.7's API", EtcdVersion)
	}

	// gRPC on the same port, then metrics that counted it.
	if _, err := s.client.Put(ctxT(t), "k", "v"); err != nil {
		t.Fatal(err)
	}
	code, body = httpGet(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, `grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1`) {
		t.Errorf("/metrics: %d, no count of the Put in:\n%s", code, body)
	}
	if !strings.Contains(body, "etcd_server_health_success 1") {
		t.Errorf("/metrics does not count the /health answer")
	}

	for _, p := range []string{"/livez", "/readyz", "/readyz/linearizable_read"} {
		if code, body := httpGet(t, base+p); code != 200 || body != "ok\n" {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	code, body = httpGet(t, base+"/readyz?verbose")
	want := "[+]data_corruption ok\n[+]linearizable_read ok\n[+]non_learner ok\n[+]serializable_read ok\nok\n"
	if code != 200 || body != want {
		t.Errorf("/readyz?verbose: %d %q, want %q", code, body, want)
	}

	resp, err := http.Post(base+"/health", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /health: %d", resp.StatusCode)
	}
}

func TestHealthFailures(t *testing.T) {
	f := newFakeBackend()
	s := serve(t, alarmingBackend{f}, Options{})
	base := "http://" + s.addr

	f.setStatus(func(st *server.Status) { st.Leader = 0 })
	if code, body := httpGet(t, base+"/health"); code != 503 || body != `{"health":"false","reason":"RAFT NO LEADER"}`+"\n" {
		t.Errorf("no leader: %d %q", code, body)
	}
	if code, _ := httpGet(t, base+"/health?serializable=true"); code != 200 {
		t.Errorf("no leader, serializable: %d, want 200", code)
	}
	f.setStatus(func(st *server.Status) { st.Leader = 9 })

	f.setErr(errors.New("etcdserver: server stopped"))
	if code, body := httpGet(t, base+"/health"); code != 503 || body != `{"health":"false","reason":"RANGE ERROR:etcdserver: server stopped"}`+"\n" {
		t.Errorf("stopped: %d %q", code, body)
	}
	code, body := httpGet(t, base+"/livez")
	if code != 503 || body != "[-]serializable_read failed: etcdserver: server stopped\n\n" {
		t.Errorf("/livez stopped: %d %q", code, body)
	}
	f.setErr(nil)

	f.mu.Lock()
	f.alarms = []*pb.AlarmMember{{MemberID: 9, Alarm: pb.AlarmType_NOSPACE}}
	f.mu.Unlock()
	if code, body := httpGet(t, base+"/health"); code != 503 || !strings.Contains(body, `"reason":"ALARM NOSPACE"`) {
		t.Errorf("nospace: %d %q", code, body)
	}
	if code, _ := httpGet(t, base+"/health?exclude=NOSPACE"); code != 200 {
		t.Errorf("nospace excluded: %d", code)
	}
	if code, _ := httpGet(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz with NOSPACE (only CORRUPT fails it): %d", code)
	}
	f.mu.Lock()
	f.alarms = []*pb.AlarmMember{{MemberID: 9, Alarm: pb.AlarmType_CORRUPT}}
	f.mu.Unlock()
	if code, body := httpGet(t, base+"/readyz"); code != 503 || !strings.Contains(body, "[-]data_corruption failed: alarm activated: CORRUPT") {
		t.Errorf("/readyz corrupt: %d %q", code, body)
	}
	if code, _ := httpGet(t, base+"/readyz?exclude=data_corruption"); code != 200 {
		t.Errorf("/readyz corrupt excluded: %d", code)
	}
}

// TestConnMuxRoutesByPreface checks the sniffing alone: a raw HTTP/1.1
// request gets an HTTP answer, and a connection that sends a partial
// preface and then closes is dropped without reaching either side.
func TestConnMuxRoutesByPreface(t *testing.T) {
	s := serve(t, newFakeBackend(), Options{})
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 200 OK") || !strings.Contains(string(b), `"etcdserver"`) {
		t.Fatalf("raw HTTP/1.1: %q", b)
	}

	c2, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c2, "PRI * HT")
	c2.Close()
	// The server is still serving both.
	if code, _ := httpGet(t, "http://"+s.addr+"/health"); code != 200 {
		t.Fatalf("after a broken preface: %d", code)
	}
	if _, err := s.client.Get(ctxT(t), "k"); err != nil {
		t.Fatal(err)
	}
}

func TestConnMuxClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewConnMux(l)
	done := make(chan error, 1)
	go func() { done <- m.Serve() }()
	// A connection that never sends anything is dropped by Close.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := m.GRPC().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("gRPC listener after Close: %v", err)
	}
	if _, err := m.HTTP().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("HTTP listener after Close: %v", err)
	}
}

func TestMaintenance(t *testing.T) {
	f := newFakeBackend()
	f.setStatus(func(st *server.Status) { st.DBSizeQuota = 1 << 20 })
	s := serve(t, f, Options{})
	ctx := ctxT(t)
	st, err := s.client.Status(ctx, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != EtcdVersion || st.Leader != 9 || st.RaftTerm != 2 || st.RaftIndex != 11 || st.RaftAppliedIndex != 10 ||
		st.DbSize != 4096 || st.DbSizeInUse != 2048 || st.DbSizeQuota != 1<<20 || st.IsLearner || len(st.Errors) != 0 {
		t.Errorf("status %v", st)
	}
	if st.Header.ClusterId != 7 || st.Header.MemberId != 9 || st.Header.Revision != 1 || st.Header.RaftTerm != 2 {
		t.Errorf("status header %v", st.Header)
	}
	f.setStatus(func(st *server.Status) { st.Leader = 0 })
	st, err = s.client.Status(ctx, s.addr)
	if err != nil || len(st.Errors) != 1 || st.Errors[0] != "etcdserver: no leader" {
		t.Errorf("status without leader: %v %v", st, err)
	}

	if _, err := s.client.Defragment(ctx, s.addr); err != nil {
		t.Errorf("defragment: %v", err)
	}
	alarms, err := s.client.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) != 0 {
		t.Errorf("alarm list: %v %v", alarms, err)
	}
	if _, err := s.client.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: 9, Alarm: pb.AlarmType_NOSPACE}); status.Code(err) != codes.Unimplemented {
		t.Errorf("alarm disarm without alarms support: %v", err)
	}
	for name, call := range map[string]func() error{
		"HashKV":     func() error { _, err := s.client.HashKV(ctx, s.addr, 0); return err },
		"MoveLeader": func() error { _, err := s.client.MoveLeader(ctx, 1); return err },
		"Snapshot": func() error {
			rc, err := s.client.Snapshot(ctx)
			if err == nil {
				_, err = io.ReadAll(rc)
			}
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.Unimplemented && !strings.Contains(err.Error(), "Unimplemented") {
			t.Errorf("%s: %v, want Unimplemented", name, err)
		}
	}
}

func TestMaintenanceAlarms(t *testing.T) {
	f := newFakeBackend()
	s := serve(t, alarmingBackend{f}, Options{})
	ctx := ctxT(t)
	f.mu.Lock()
	f.alarms = []*pb.AlarmMember{{MemberID: 9, Alarm: pb.AlarmType_NOSPACE}}
	f.mu.Unlock()
	alarms, err := s.client.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) != 1 || alarms.Alarms[0].Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarm list: %v %v", alarms, err)
	}
	st, err := s.client.Status(ctx, s.addr)
	if err != nil || len(st.Errors) != 1 || !strings.Contains(st.Errors[0], "NOSPACE") {
		t.Fatalf("status errors with NOSPACE: %v %v", st, err)
	}
	if _, err := s.client.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: 9, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if alarms, err := s.client.AlarmList(ctx); err != nil || len(alarms.Alarms) != 0 {
		t.Fatalf("after disarm: %v %v", alarms, err)
	}
}

// TestGateway checks etcd's JSON gateway: a put and a range as JSON over
// HTTP on the gRPC port, with etcd's JSON shapes (base64 bytes, int64 as
// strings, proto field names) and etcd's errors.
func TestGateway(t *testing.T) {
	f := newFakeBackend()
	s := serve(t, f, Options{})
	base := "http://" + s.addr
	post := func(path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("/v3/kv/put", `{"key":"Zm9v","value":"YmFy"}`); code != 200 || !strings.Contains(body, `"revision":"2"`) {
		t.Fatalf("put: %d %s", code, body)
	}
	code, body := post("/v3/kv/range", `{"key":"Zm9v"}`)
	if code != 200 || !strings.Contains(body, `"key":"Zm9v"`) || !strings.Contains(body, `"value":"YmFy"`) || !strings.Contains(body, `"mod_revision":"2"`) {
		t.Fatalf("range: %d %s", code, body)
	}
	code, body = post("/v3/kv/put", `{"value":"YmFy"}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "etcdserver: key is not provided") {
		t.Fatalf("put without a key: %d %s", code, body)
	}
	if code, body := post("/v3/maintenance/status", `{}`); code != 200 || !strings.Contains(body, `"version":"`+EtcdVersion+`"`) {
		t.Fatalf("status: %d %s", code, body)
	}
}
