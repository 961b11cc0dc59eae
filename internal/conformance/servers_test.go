package conformance

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	etcdembed "go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// startTimeout bounds how long a member may take to start answering; it is
// a failure deadline, not a wait.
const startTimeout = 30 * time.Second

// side is one server under test, reachable through raw gRPC stubs.
type side struct {
	name string
	kv   pb.KVClient
}

// scope collects the stop functions of servers and connections so that a
// pair can be torn down before the test ends (the shrinker starts many).
type scope struct{ stops []func() }

func (s *scope) defer_(f func()) { s.stops = append(s.stops, f) }

// close runs the stop functions, last first; it is idempotent.
func (s *scope) close() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
}

// subjectKind is what the oracle is compared with, from
// CAIRN_CONFORMANCE_SUBJECT: "cairn" (the default, a full member through
// internal/embed), "direct" (cairn's API over its mvcc store, no raft), or
// "etcd" (a second etcd, which checks the harness itself: every difference
// it reports is a bug in the test).
func subjectKind(t testing.TB) string {
	switch s := os.Getenv("CAIRN_CONFORMANCE_SUBJECT"); s {
	case "", "cairn":
		return "cairn"
	case "direct", "etcd":
		return s
	default:
		t.Fatalf("CAIRN_CONFORMANCE_SUBJECT=%q: want cairn, direct or etcd", s)
		return ""
	}
}

// startPair returns the oracle (etcd) and the subject, each on a fresh
// data directory, and a function that stops both (also called when the
// test ends).
func startPair(t testing.TB) (oracle, subject side, stop func()) {
	t.Helper()
	sc := &scope{}
	t.Cleanup(sc.close)
	oracle = side{name: "etcd", kv: dialKV(t, sc, startEtcd(t, sc))}
	switch kind := subjectKind(t); kind {
	case "etcd":
		subject = side{name: "etcd-2", kv: dialKV(t, sc, startEtcd(t, sc))}
	case "direct":
		subject = side{name: "cairn-direct", kv: dialKV(t, sc, startDirect(t, sc))}
	default:
		subject = side{name: "cairn", kv: dialKV(t, sc, startCairn(t, sc))}
	}
	return oracle, subject, sc.close
}

// startEtcd starts a single-member embedded etcd on 127.0.0.1 and returns
// its client endpoint (host:port). sc stops it.
func startEtcd(t testing.TB, sc *scope) string {
	t.Helper()
	cfg := etcdembed.NewConfig()
	cfg.Name = "oracle"
	cfg.Dir = t.TempDir()
	cfg.ZapLoggerBuilder = etcdembed.NewZapLoggerBuilder(zap.NewNop())
	// The oracle's durability is not under test; fsync only slows it down.
	cfg.UnsafeNoFsync = true
	clientURL := mustURL(t, "http://127.0.0.1:0")
	peerURL := mustURL(t, fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := etcdembed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	sc.defer_(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("embedded etcd failed while starting: %v", err)
	case <-time.After(startTimeout):
		t.Fatalf("embedded etcd not ready after %v", startTimeout)
	}
	return e.Clients[0].Addr().String()
}

// dialKV connects a KV stub to addr without clientv3's interceptors, so
// that nothing retries or rewrites what the server answered. Message size
// limits are lifted on the client so that the server's own limits are the
// ones exercised.
func dialKV(t testing.TB, sc *scope, addr string) pb.KVClient {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(math.MaxInt32),
			grpc.MaxCallRecvMsgSize(math.MaxInt32),
		),
	)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	sc.defer_(func() { conn.Close() })
	kv := pb.NewKVClient(conn)
	// Wait until the member answers a read; a fresh member may still be
	// electing itself.
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("probe")}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			return kv
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer Range after %v: %v", addr, startTimeout, err)
		}
		<-tick.C
	}
}

func mustURL(t testing.TB, s string) url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return *u
}

// freePort returns a port that was free a moment ago. Only etcd's peer
// listener needs one: a single-member cluster never dials it, so losing the
// race for the port to another process cannot break the test silently — the
// listen would fail loudly.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
