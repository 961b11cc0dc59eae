package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/transport"
)

// PeerTransport carries raft messages to the other members; the server
// tells it who they are as the member list changes. *transport.Transport
// implements it; tests substitute a simulated network (Config.NewTransport).
type PeerTransport interface {
	raftnode.Transport
	// AddPeer, UpdatePeer and RemovePeer follow the member list.
	AddPeer(id uint64, urls []string)
	UpdatePeer(id uint64, urls []string)
	RemovePeer(id uint64)
	// ActiveSince is when the connection to peer id was established, the
	// zero time if there is none (etcd's health checks use it).
	ActiveSince(id uint64) time.Time
	// Removed is closed when a peer refused this member as removed.
	Removed() <-chan struct{}
	// Handler serves the peers' requests on the peer listener.
	Handler() http.Handler
	// Stop closes every connection and waits for the transport's
	// goroutines.
	Stop()
}

var _ PeerTransport = (*transport.Transport)(nil)

// raftPeer is the server as the transport sees it (transport.Raft, the
// snapshot source and sink). The transport exists before the raft node it
// feeds; what arrives in between is dropped (raft retransmits).
type raftPeer struct{ s *Server }

func (p raftPeer) Process(_ context.Context, m *raftpb.Message) error {
	if !p.s.nodeStarted.Load() {
		return errNotStarted
	}
	p.s.node.Step(m)
	return nil
}

var errNotStarted = errors.New("server: the raft node is not started yet")

func (p raftPeer) IsIDRemoved(id uint64) bool {
	return p.s.members.isRemoved(id)
}

func (p raftPeer) ReportUnreachable(id uint64) {
	if p.s.nodeStarted.Load() {
		p.s.node.ReportUnreachable(id)
	}
}

func (p raftPeer) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	if p.s.nodeStarted.Load() {
		p.s.node.ReportSnapshot(id, status)
	}
}

func (p raftPeer) OpenSnapshot(index uint64) (io.ReadCloser, int64, error) {
	if !p.s.nodeStarted.Load() {
		return nil, 0, errNotStarted
	}
	return p.s.node.OpenSnapshot(index)
}

func (p raftPeer) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	if !p.s.nodeStarted.Load() {
		return errNotStarted
	}
	return p.s.node.ReceiveSnapshot(m, r)
}

// newTransport builds the peer transport from the configuration.
func (s *Server) newTransport() PeerTransport {
	tc := transport.Config{
		LocalID:        s.memberID,
		ClusterID:      s.clusterID,
		Raft:           raftPeer{s},
		SnapshotSource: raftPeer{s},
		SnapshotSink:   raftPeer{s},
		TLS:            s.cfg.PeerTLS,
		ServerTLS:      s.cfg.PeerServerTLS,
		Logger:         s.lg.With("component", "transport"),
		Metrics:        s.cfg.Metrics,
	}
	if s.cfg.NewTransport != nil {
		return s.cfg.NewTransport(tc)
	}
	return transport.New(tc)
}

// syncPeers makes the transport's peers the members of the applied member
// list (and, until this member appears in that list, its seed members).
// Only the apply loop and startup call it.
func (s *Server) syncPeers() {
	s.peers.sync(s.members.peerURLs(s.memberID, s.seed.Members))
}

// peerSet is the member's end of the peer network: the transport, the
// peers it was told about, and how long it has been connected to each.
type peerSet struct {
	self uint64
	tr   PeerTransport

	mu   sync.Mutex
	urls map[uint64][]string // the transport's peers
}

func newPeerSet(self uint64, tr PeerTransport) *peerSet {
	return &peerSet{self: self, tr: tr, urls: map[uint64][]string{}}
}

// sync makes want (member ID to peer URLs, self excluded) the transport's
// peers.
func (p *peerSet) sync(want map[uint64][]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, urls := range want {
		cur, ok := p.urls[id]
		switch {
		case !ok:
			p.tr.AddPeer(id, urls)
		case !slices.Equal(cur, urls):
			p.tr.UpdatePeer(id, urls)
		default:
			continue
		}
		p.urls[id] = urls
	}
	for id := range p.urls {
		if _, ok := want[id]; !ok {
			p.tr.RemovePeer(id)
			delete(p.urls, id)
		}
	}
}

// isConnectedSince reports whether the connection to peer id has lasted
// since before t.
func (p *peerSet) isConnectedSince(id uint64, t time.Time) bool {
	at := p.tr.ActiveSince(id)
	return !at.IsZero() && at.Before(t)
}

// connectedSince counts the members of ids this member has been connected
// to since before t, itself included.
func (p *peerSet) connectedSince(t time.Time, ids []uint64) int {
	n := 0
	for _, id := range ids {
		if id == p.self || p.isConnectedSince(id, t) {
			n++
		}
	}
	return n
}

// Paths of the peer endpoints besides the transport's.
const (
	peerMembersPath = "/members"
	peerPromotePath = "/members/promote/"
)

// PeerHandler returns the handler to serve on the member's peer listener
// (--listen-peer-urls): the raft transport under transport.PathPrefix,
// GET /members (the cluster ID and member list, which a member joining
// with InitialClusterState "existing" asks for), POST
// /members/promote/<id> (a learner promotion forwarded to the leader) and
// POST /leases/renew and /leases/ttl (keep-alives and TimeToLive forwarded
// to the leader, see lease_peer.go), GET /version (this member's
// versions, which the leader asks for, see version_peer.go) and POST
// /members/hashkv (a peer's corruption check, see corrupt.go).
func (s *Server) PeerHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(transport.PathPrefix+"/", s.peers.tr.Handler())
	mux.HandleFunc("GET "+peerMembersPath, s.serveMembers)
	mux.HandleFunc("GET "+peerVersionPath, s.versions.serveVersion)
	mux.HandleFunc("POST "+peerPromotePath+"{id}", s.reconfig.servePromote)
	mux.HandleFunc("POST "+peerLeaseRenewPath, s.leases.serveRenew)
	mux.HandleFunc("POST "+peerLeaseTTLPath, s.leases.serveTTL)
	mux.HandleFunc("POST "+peerHashKVPath, s.serveHashKV)
	return mux
}

func (s *Server) serveMembers(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(membership.ClusterInfo{ClusterID: s.clusterID, Members: s.Members()})
}

// promoteErrors are the errors a forwarded promotion answers with, which
// the forwarding member turns back into the same sentinel.
var promoteErrors = []error{
	ErrLearnerNotReady, ErrNotLeader, ErrNotEnoughStartedMembers, ErrStopped, ErrTimeout,
	membership.ErrIDNotFound, membership.ErrMemberNotLearner, membership.ErrIDRemoved,
}

func (rc *reconfig) servePromote(w http.ResponseWriter, r *http.Request) {
	s := rc.s
	id, err := strconv.ParseUint(r.PathValue("id"), 16, 64)
	if err != nil {
		http.Error(w, "bad member ID", http.StatusBadRequest)
		return
	}
	if err := s.life.enter(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer s.life.leave()
	members, err := rc.promoteHere(r.Context(), id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusPreconditionFailed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(members)
}

// peerClient returns the client for the member's own requests to peers:
// PeerRoundTripper if set, else HTTP with PeerTLS, a connection a request.
func peerClient(cfg Config) *http.Client {
	rt := cfg.PeerRoundTripper
	if rt == nil {
		tlsCfg := cfg.PeerTLS
		if tlsCfg == nil {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		rt = &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}
	}
	return &http.Client{Transport: rt}
}

// fetchCluster asks the peers at urls, in turn, over c, for the cluster ID
// and the member list.
func fetchCluster(ctx context.Context, c *http.Client, urls []string) (membership.ClusterInfo, error) {
	var errs []error
	for _, u := range urls {
		ci, err := func() (membership.ClusterInfo, error) {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(u, "/")+peerMembersPath, nil)
			if err != nil {
				return membership.ClusterInfo{}, err
			}
			resp, err := c.Do(req)
			if err != nil {
				return membership.ClusterInfo{}, err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
			if err != nil {
				return membership.ClusterInfo{}, err
			}
			if resp.StatusCode != http.StatusOK {
				return membership.ClusterInfo{}, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
			}
			return membership.DecodeClusterInfo(body)
		}()
		if err == nil {
			return ci, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return membership.ClusterInfo{}, fmt.Errorf("server: could not get the member list from any peer: %w", errors.Join(errs...))
}

// promoteRemote forwards a learner promotion to the member at urls.
func (rc *reconfig) promoteRemote(ctx context.Context, urls []string, id uint64) ([]membership.Member, error) {
	s := rc.s
	c := peerClient(s.cfg)
	var last error
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost,
			strings.TrimSuffix(u, "/")+peerPromotePath+strconv.FormatUint(id, 16), nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			last = err
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		if err != nil {
			last = err
			continue
		}
		if resp.StatusCode == http.StatusOK {
			var ms []membership.Member
			if err := json.Unmarshal(body, &ms); err != nil {
				return nil, fmt.Errorf("server: decode forwarded promotion answer: %w", err)
			}
			return ms, nil
		}
		text := strings.TrimSpace(string(body))
		for _, e := range promoteErrors {
			if text == e.Error() {
				return nil, e
			}
		}
		last = fmt.Errorf("%s: %s", resp.Status, text)
	}
	return nil, fmt.Errorf("server: forward promotion to the leader: %w", last)
}
