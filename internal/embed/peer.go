package embed

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"
)

// peerListener is one peer URL being served: the other members' raft
// traffic (streams and snapshots) and the member list a joining member
// asks for, all from the server's PeerHandler.
type peerListener struct {
	url  string // as bound: the configured URL with the real port
	l    net.Listener
	http *http.Server
}

func listenPeer(raw string) (*peerListener, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid listen peer URL %q: %w", raw, err)
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("listen on peer URL %s: %w", raw, err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	bound := *u
	bound.Host = net.JoinHostPort(u.Hostname(), port)
	bound.Path = ""
	return &peerListener{url: bound.String(), l: l}, nil
}

// peerTLSConfigs holds the TLS configurations of the peer side.
type peerTLSConfigs struct {
	// listen is what https:// peer listeners serve with.
	listen *tls.Config
	// enforce is listen when every peer listener is https: the server's
	// peer handler then refuses plaintext raft traffic. With a mix of
	// http:// and https:// peer listeners it is nil.
	enforce *tls.Config
	// dial is what this member dials other members' https:// peer URLs
	// with; nil means the system's roots and no client certificate.
	dial *tls.Config
}

// peerTLS builds the peer side's TLS configurations for a member listening
// on listenURLs.
func (p TLSInfo) peerTLS(listenURLs []string, lg *slog.Logger) (peerTLSConfigs, error) {
	var out peerTLSConfigs
	if p.CertFile != "" || p.KeyFile != "" || p.TrustedCAFile != "" || p.ClientCertFile != "" || p.ClientKeyFile != "" {
		var err error
		if out.dial, err = p.peerClientConfig(lg); err != nil {
			return out, err
		}
	}
	https := 0
	for _, raw := range listenURLs {
		if mustScheme(raw) == "https" {
			https++
		}
	}
	if https == 0 {
		return out, nil
	}
	var err error
	if out.listen, err = p.peerServerConfig(lg); err != nil {
		return out, err
	}
	if https == len(listenURLs) {
		out.enforce = out.listen
	}
	return out, nil
}

// servePeers serves handler on every peer listener.
func (m *Member) servePeers(handler http.Handler, tlsCfg peerTLSConfigs) {
	for _, pl := range m.peers {
		pl.http = &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 30 * time.Second,
			ErrorLog:          log.New(discard{}, "", 0), // the transport logs what matters
		}
		if mustScheme(pl.url) == "https" {
			pl.http.TLSConfig = tlsCfg.listen.Clone()
			m.run(func() error { return ignoreClosed(pl.http.ServeTLS(pl.l, "", "")) })
			continue
		}
		m.run(func() error { return ignoreClosed(pl.http.Serve(pl.l)) })
	}
}

// stopPeers stops serving peers. Stop the server first: its transport ends
// the long-lived raft streams that Shutdown would otherwise wait for.
func (m *Member) stopPeers(ctx context.Context) {
	for _, pl := range m.peers {
		if pl.http == nil {
			pl.l.Close()
			continue
		}
		pl.http.Shutdown(ctx)
		pl.http.Close()
	}
}

// handOffLeadership moves the leadership to another voting member before a
// leader stops, as etcd does on a graceful stop: the others then need not
// wait out an election timeout to notice it is gone. A target that does not
// take over within two election timeouts is given up on; the stop goes on.
func (m *Member) handOffLeadership() {
	srv := m.srv
	self := srv.MemberID()
	if srv.Leader() != self {
		return
	}
	for _, mem := range srv.Members() {
		// A member that never published its name has never run.
		if mem.ID == self || mem.IsLearner || mem.Name == "" {
			continue
		}
		timeout := 2 * time.Duration(m.cfg.ElectionMs) * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := srv.MoveLeader(ctx, mem.ID)
		cancel()
		if err == nil {
			m.lg.Info("handed the leadership over before stopping", "leader", fmt.Sprintf("%x", mem.ID))
			return
		}
		m.lg.Warn("leadership hand-over before stopping failed", "transferee", fmt.Sprintf("%x", mem.ID), "error", err)
		if srv.Leader() != self {
			return
		}
	}
}

// PeerURLs returns the URLs other members' raft traffic is served on, with
// the ports actually bound.
func (m *Member) PeerURLs() []string {
	out := make([]string, len(m.peers))
	for i, pl := range m.peers {
		out[i] = pl.url
	}
	return out
}
