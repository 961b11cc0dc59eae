package embed

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit"
)

// startCluster starts n members founding one cluster over peer URLs of
// the given scheme; tune adjusts each member's configuration.
func startCluster(t *testing.T, n int, scheme string, tune func(*Config)) []*Member {
	t.Helper()
	peerURLs := make([]string, n)
	var initial []string
	for i := range n {
		peerURLs[i] = fmt.Sprintf("%s://127.0.0.1:%d", scheme, freeport.Port(t))
		initial = append(initial, fmt.Sprintf("m%d=%s", i+1, peerURLs[i]))
	}
	ms := make([]*Member, n)
	for i := range n {
		cfg := testConfig(t, t.TempDir())
		cfg.Name = fmt.Sprintf("m%d", i+1)
		cfg.ListenPeerURLs = []string{peerURLs[i]}
		cfg.InitialAdvertisePeerURLs = []string{peerURLs[i]}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "embed-test"
		cfg.HeartbeatMs, cfg.ElectionMs = 20, 200
		if tune != nil {
			tune(cfg)
		}
		ms[i] = start(t, cfg)
		if got := ms[i].PeerURLs(); !slices.Equal(got, []string{peerURLs[i]}) {
			t.Fatalf("member %d serves peers on %v, want %s", i+1, got, peerURLs[i])
		}
	}
	return ms
}

// checkCluster writes through the first member, reads it linearizably
// through the last, and checks the member list every member reports.
func checkCluster(t *testing.T, ms []*Member) {
	t.Helper()
	ctx := ctxT(t)
	first, last := client(t, ms[0]), client(t, ms[len(ms)-1])
	if _, err := first.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put through m1: %v", err)
	}
	resp, err := last.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("linearizable get through m%d: %v %v", len(ms), resp, err)
	}
	for i, m := range ms {
		list, err := client(t, m).MemberList(ctx)
		if err != nil {
			t.Fatalf("member list from m%d: %v", i+1, err)
		}
		if len(list.Members) != len(ms) {
			t.Fatalf("m%d lists %d members: %v", i+1, len(list.Members), list.Members)
		}
		for _, pm := range list.Members {
			j := slices.IndexFunc(ms, func(m *Member) bool { return m.Server().MemberID() == pm.ID })
			if j < 0 || !slices.Equal(pm.PeerURLs, ms[j].PeerURLs()) || pm.IsLearner {
				t.Errorf("m%d lists %+v", i+1, pm)
			}
		}
	}
}

func TestThreeMembers(t *testing.T) {
	ms := startCluster(t, 3, "http", nil)
	checkCluster(t, ms)
	// Every member knows the cluster; only the leader moves the
	// leadership, as in etcd.
	ctx := ctxT(t)
	lead := ms[0].Server().Leader()
	for _, m := range ms {
		if m.Server().MemberID() == lead {
			continue
		}
		_, err := client(t, m).MoveLeader(ctx, m.Server().MemberID())
		if !errors.Is(err, rpctypes.ErrNotLeader) {
			t.Errorf("MoveLeader through a follower: %v, want %v", err, rpctypes.ErrNotLeader)
		}
	}
}

// TestLeaderHandsOverOnClose closes the leader: it hands the leadership to
// another member first, as etcd does on a graceful stop, and the others go
// on serving.
func TestLeaderHandsOverOnClose(t *testing.T) {
	var logs lockedBuffer
	ms := startCluster(t, 3, "http", func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	checkCluster(t, ms)
	var lead *Member
	var rest []*Member
	for _, m := range ms {
		if m.Server().MemberID() == m.Server().Leader() {
			lead = m
		} else {
			rest = append(rest, m)
		}
	}
	if lead == nil {
		t.Fatal("no member leads after a linearizable read")
	}
	old := lead.Server().MemberID()
	if err := lead.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "handed the leadership over before stopping") {
		t.Errorf("the leader stopped without handing over; log:\n%s", logs.String())
	}
	ctx := ctxT(t)
	if _, err := client(t, rest[0]).Put(ctx, "after", "v"); err != nil {
		t.Fatalf("put after the leader left: %v", err)
	}
	if l := rest[0].Server().Leader(); l == old || l == 0 {
		t.Errorf("leader after the old one closed: %x", l)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestPeerTLS runs the peer traffic over TLS with client certificates
// required: the members only form a cluster if each verifies the others
// and presents its own certificate.
func TestPeerTLS(t *testing.T) {
	pki := newTestPKI(t)
	ms := startCluster(t, 3, "https", func(c *Config) {
		c.PeerTLS = TLSInfo{
			CertFile: pki.certFile, KeyFile: pki.keyFile, TrustedCAFile: pki.caFile, ClientCertAuth: true,
			ClientCertFile: pki.clientCertFile, ClientKeyFile: pki.clientKeyFile,
		}
	})
	checkCluster(t, ms)

	// The peer port speaks TLS only, and wants a client certificate.
	peer := ms[0].PeerURLs()[0]
	resp, err := http.Get(strings.Replace(peer, "https://", "http://", 1) + "/members")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plaintext request to the TLS peer port: %s", resp.Status)
		}
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}
	if resp, err := noCert.Get(peer + "/members"); err == nil {
		resp.Body.Close()
		t.Errorf("a peer without a client certificate was served: %s", resp.Status)
	}
}

func TestPeerTLSConfigErrors(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.ListenPeerURLs = []string{"https://127.0.0.1:0"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--peer-cert-file, --peer-key-file") {
		t.Errorf("https peer URL without a certificate: %v", err)
	}
	cfg.PeerTLS = TLSInfo{CertFile: "/no/such/cert.pem", KeyFile: "/no/such/key.pem"}
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "/no/such/cert.pem") {
		t.Errorf("start with a missing peer certificate: %v", err)
	}
}

// TestMemberRemoveSelf removes, through clientv3, the very member the
// client is connected to, a follower and then the leader: each answers
// with the new member list (not "server stopped") and then stops, and
// the others go on.
func TestMemberRemoveSelf(t *testing.T) {
	ms := startCluster(t, 3, "http", nil)
	checkCluster(t, ms)
	ctx := ctxT(t)
	removeSelf := func(m *Member, want int) {
		t.Helper()
		c := client(t, m)
		id := m.Server().MemberID()
		var resp *clientv3.MemberRemoveResponse
		var err error
		// Strict reconfiguration refuses while the peers' connections are
		// young (etcdserver: unhealthy cluster) or a member has not
		// published its attributes yet (not enough started members).
		kit.WaitFor(t, "the removal to be accepted", func() bool {
			resp, err = c.MemberRemove(ctx, id)
			return !errors.Is(err, rpctypes.ErrUnhealthy) && !errors.Is(err, rpctypes.ErrMemberNotEnoughStarted)
		})
		if err != nil {
			t.Fatalf("removing m%x through itself: %v", id, err)
		}
		if len(resp.Members) != want || slices.ContainsFunc(resp.Members, func(pm *pb.Member) bool { return pm.ID == id }) {
			t.Fatalf("members after removing %x: %v", id, resp.Members)
		}
		select {
		case <-m.Err():
		case <-ctx.Done():
			t.Fatalf("member %x still running after its removal", id)
		}
	}
	var follower, leader, rest []*Member
	lead := ms[0].Server().Leader()
	for _, m := range ms {
		if m.Server().MemberID() == lead {
			leader = append(leader, m)
		} else {
			follower = append(follower, m)
		}
	}
	if len(leader) != 1 {
		t.Fatalf("no leader among %d members", len(ms))
	}
	removeSelf(follower[0], 2)
	rest = []*Member{leader[0], follower[1]}
	checkCluster(t, rest)
	removeSelf(leader[0], 1)
	// A put proposed while the leader left would be lost with it (and
	// time out, as in etcd): wait for the last member to lead.
	last := follower[1].Server()
	kit.WaitFor(t, "the last member to lead", func() bool { return last.Leader() == last.MemberID() })
	checkCluster(t, follower[1:])
}
