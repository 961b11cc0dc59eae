package conformance

import (
	"context"
	"math"
	"os"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// startTimeout bounds how long a member may take to start answering; it is
// a failure deadline, not a wait.
const startTimeout = 30 * time.Second

// side is one server under test, reachable through raw gRPC stubs.
type side struct {
	name string
	kv   pb.KVClient
	// restart stops the server and starts it again on the same data
	// directory, pointing kv at the new one.
	restart func()
}

// starter starts a server on dir (new or used before) and returns its
// client endpoint (host:port) and a function that stops it.
type starter func(t testing.TB, dir string) (addr string, stop func())

// newSide starts a server with start on a fresh data directory; sc stops
// it.
func newSide(t testing.TB, sc *scope, name string, start starter) *side {
	t.Helper()
	dir := t.TempDir()
	s := &side{name: name}
	var stopServer, closeConn func()
	up := func() {
		addr, stop := start(t, dir)
		stopServer = stop
		s.kv, closeConn = dialKV(t, addr)
	}
	down := func() {
		if closeConn != nil {
			closeConn()
			closeConn = nil
		}
		if stopServer != nil {
			stopServer()
			stopServer = nil
		}
	}
	up()
	sc.defer_(down)
	// Also before the data directory's removal, which t.TempDir registered
	// after the scope's cleanup: a member stopping flushes into it.
	t.Cleanup(down)
	s.restart = func() {
		t.Helper()
		down()
		up()
	}
	return s
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

// startSubject starts the side the oracle is compared with.
func startSubject(t testing.TB, sc *scope) *side {
	t.Helper()
	switch subjectKind(t) {
	case "etcd":
		return newSide(t, sc, "etcd-2", startEtcd)
	case "direct":
		return newSide(t, sc, "cairn-direct", startDirect)
	default:
		return newSide(t, sc, "cairn", startCairn)
	}
}

// startPair returns the oracle (etcd) and the subject, each on a fresh
// data directory, and a function that stops both (also called when the
// test ends).
func startPair(t testing.TB) (oracle, subject *side, stop func()) {
	t.Helper()
	sc := &scope{}
	t.Cleanup(sc.close)
	oracle = newSide(t, sc, "etcd", startEtcd)
	subject = startSubject(t, sc)
	return oracle, subject, sc.close
}

// step sends o to both sides and returns their outcomes. A restart op
// restarts both and then reads every key from each, so that what survived
// the restart is compared.
func step(oracle, subject *side, o op) (want, got outcome) {
	if o.Restart {
		oracle.restart()
		subject.restart()
		o = op{Range: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}}
	}
	return do(oracle.kv, o), do(subject.kv, o)
}

// startEtcd starts a single-member embedded etcd (the kit's oracle) on dir
// and returns its client endpoint (host:port) and a function that stops it.
// A restarted member waits an election timeout before it leads again; short
// ticks keep the restart ops quick.
func startEtcd(t testing.TB, dir string) (string, func()) {
	t.Helper()
	e := oracle.Start(t, oracle.Dir(dir), oracle.FastElection())
	return e.Addr, e.Stop
}

// dialKV connects a KV stub to addr without clientv3's interceptors, so
// that nothing retries or rewrites what the server answered. Message size
// limits are lifted on the client so that the server's own limits are the
// ones exercised.
func dialKV(t testing.TB, addr string) (pb.KVClient, func()) {
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
	closeConn := func() { conn.Close() }
	kv := pb.NewKVClient(conn)
	// Wait until the member answers a read; a fresh member may still be
	// electing itself.
	err = kit.Poll(startTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("probe")}, grpc.WaitForReady(true))
		return err
	})
	if err != nil {
		closeConn()
		t.Fatalf("%s does not answer Range: %v", addr, err)
	}
	return kv, closeConn
}
