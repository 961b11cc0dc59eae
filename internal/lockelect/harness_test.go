package lockelect

import (
	"context"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// waitLimit bounds every call and every wait for a result in these tests
// (waits for a condition use the test kit's WaitTimeout). It is a deadline
// that turns a hang into a clear failure, not a speed assertion.
const waitLimit = 30 * time.Second

// services are the two services as a client sees them: gRPC stubs, the
// base URL of the JSON gateway in front of them, and a client of the store
// they keep their keys in (for the scenario's own leases and reads).
type services struct {
	lock  v3lockpb.LockClient
	elect v3electionpb.ElectionClient
	http  string
	kv    *clientv3.Client
}

// fixture is one embedded etcd (KV, Watch, Lease, and its own Lock and
// Election services, the oracle) and our services on a separate gRPC server
// whose backing client talks to that etcd.
type fixture struct {
	etcdAddr string
	// kv is a plain client of the etcd, for the test's own KV and Lease
	// calls.
	kv *clientv3.Client
	// etcd reaches etcd's Lock and Election services, ours reaches ours.
	etcd, ours services
}

// newFixture starts an embedded etcd and our services on 127.0.0.1.
// etcd runs with 10 ms ticks and a 100 ms election timeout, so its minimum
// lease TTL is 1 s.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	addr := oracle.Start(t, oracle.FastElection()).Addr
	f := &fixture{etcdAddr: addr, kv: newClient(t, addr)}
	f.etcd = dialServices(t, addr)
	f.etcd.http = "http://" + addr
	f.etcd.kv = f.kv

	// The backing client plays the member's client to itself: an endpoint
	// that is only a name, and a dialer that makes the connection, as a
	// member dialing an in-process listener does (here the connection
	// happens to be TCP to the etcd).
	backing, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"in-process"},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		})},
		Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backing.Close() })
	gs := grpc.NewServer()
	Register(gs, backing)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(l)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-served
	})
	f.ours = dialServices(t, l.Addr().String())
	f.ours.http = serveGateway(t, l.Addr().String())
	f.ours.kv = f.kv
	return f
}

// serveGateway serves RegisterGateway's paths, with etcd's JSON settings,
// in front of the gRPC server at addr, and returns the base URL.
func serveGateway(t *testing.T, addr string) string {
	t.Helper()
	mux := gw.NewServeMux(gw.WithMarshalerOption(gw.MIMEWildcard, &gw.HTTPBodyMarshaler{
		Marshaler: &gw.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := RegisterGateway(context.Background(), mux, conn); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func newClient(t *testing.T, addr string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{addr},
		DialTimeout: waitLimit,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialServices returns plain gRPC stubs (no clientv3 retries) for the Lock
// and Election services at addr, as etcdctl-like clients use them.
func dialServices(t *testing.T, addr string) services {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return services{lock: v3lockpb.NewLockClient(conn), elect: v3electionpb.NewElectionClient(conn)}
}

// testCtx returns a context that ends with the test or after waitLimit.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// grant returns a new lease with ttl seconds.
func (f *fixture) grant(t *testing.T, ttl int64) int64 { return grantLease(t, f.kv, ttl) }

// revoke revokes lease id.
func (f *fixture) revoke(t *testing.T, id int64) { revokeLease(t, f.kv, id) }

// waitKeys polls until exactly n keys exist under prefix.
func (f *fixture) waitKeys(t *testing.T, prefix string, n int) {
	kit.WaitKeys(t, f.kv, prefix, int64(n))
}

func grantLease(t *testing.T, c *clientv3.Client, ttl int64) int64 {
	t.Helper()
	resp, err := c.Grant(testCtx(t), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return int64(resp.ID)
}

func revokeLease(t *testing.T, c *clientv3.Client, id int64) {
	t.Helper()
	if _, err := c.Revoke(testCtx(t), clientv3.LeaseID(id)); err != nil {
		t.Fatal(err)
	}
}

// result is the outcome of a call running in the background.
type result[T any] struct {
	resp T
	err  error
}

// async runs call in the background; the returned channel yields its
// outcome once.
func async[T any](call func() (T, error)) <-chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		resp, err := call()
		ch <- result[T]{resp, err}
	}()
	return ch
}

// await returns the outcome on ch, failing the test if none comes in time.
func await[T any](t *testing.T, ch <-chan result[T], what string) (T, error) {
	t.Helper()
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-time.After(waitLimit):
		t.Fatalf("%s did not return", what)
		panic("unreachable")
	}
}
