// Package oracle starts embedded etcd (go.etcd.io/etcd/server/v3/embed) for
// cairn's differential tests: etcd is the oracle, and a test sends it the
// requests it sends cairn and compares the answers.
//
// Every test that needs an etcd starts it here, so they all get the same
// setup: one member named "oracle" on 127.0.0.1, its client and peer URLs
// on ports from internal/freeport (never port 0, which etcd's gateway
// cannot dial and which races with outgoing connections), fsync off (the
// oracle's durability is not under test), a silent logger, and one ready
// wait (ReadyTimeout). Options set what differs between tests.
package oracle

import (
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cairn-db/cairn/internal/freeport"
)

// ReadyTimeout bounds how long a starting etcd may take to become ready;
// it is a failure deadline, not a wait.
const ReadyTimeout = 60 * time.Second

// Option changes the configuration of an etcd before it starts. Any
// func(*embed.Config) is one.
type Option func(*embed.Config)

// Dir puts the member's data in dir instead of a fresh temporary
// directory, so that a test can stop the member and start it again on the
// same data.
func Dir(dir string) Option {
	return func(cfg *embed.Config) { cfg.Dir = dir }
}

// FastElection sets a 10 ms tick and a 100 ms election timeout, so a
// restarted member leads again quickly. Leave it out where a test needs
// etcd's default timing (the minimum lease TTL derives from it).
func FastElection() Option {
	return func(cfg *embed.Config) { cfg.TickMs, cfg.ElectionMs = 10, 100 }
}

// Config returns the configuration Start uses: a single member "oracle" on
// free 127.0.0.1 ports, with fsync off and no logging, changed by opts in
// order. Its data directory is empty unless an option (Dir) sets it.
func Config(opts ...Option) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = "oracle"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	client, err := localURL()
	if err != nil {
		return nil, err
	}
	peer, err := localURL()
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	for _, opt := range opts {
		opt(cfg)
	}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	return cfg, nil
}

func localURL() (url.URL, error) {
	port, err := freeport.Get()
	if err != nil {
		return url.URL{}, err
	}
	return url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}, nil
}

// Run starts etcd with cfg and waits until it is ready to serve, or has
// failed, or ReadyTimeout has passed. On an error nothing is left running.
func Run(cfg *embed.Config) (*embed.Etcd, error) {
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-time.After(ReadyTimeout):
		e.Close()
		return nil, errors.New("embedded etcd not ready after " + ReadyTimeout.String())
	}
}

// Etcd is a running embedded etcd started by Start.
type Etcd struct {
	// Addr is the host:port clients reach the member on.
	Addr string

	e    *embed.Etcd
	once sync.Once
}

// Start starts a ready single-member etcd for t, in a temporary directory
// unless opts say otherwise (Dir), and stops it when t ends. It fails the
// test if etcd does not start.
func Start(t testing.TB, opts ...Option) *Etcd {
	t.Helper()
	cfg, err := Config(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	e, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &Etcd{Addr: e.Clients[0].Addr().String(), e: e}
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the member and waits for it to be gone. It is safe to call
// more than once; only the first call does anything.
func (s *Etcd) Stop() {
	s.once.Do(s.e.Close)
}

// Client returns a clientv3 client of the member, closed when t ends.
func (s *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Addr}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Conn returns a plain gRPC connection to the member, without clientv3's
// retrying interceptors, so that a test sees exactly what etcd answered.
// It is closed when t ends.
func (s *Etcd) Conn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// KV returns a KV stub over Conn.
func (s *Etcd) KV(t testing.TB) pb.KVClient {
	t.Helper()
	return pb.NewKVClient(s.Conn(t))
}
