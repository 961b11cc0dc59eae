package embed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/cairn-db/cairn/internal/api"
	"github.com/cairn-db/cairn/internal/server"
)

// Member is a running cairn member: its server and the client listeners
// serving it. Close stops it. All methods are safe for concurrent use.
type Member struct {
	cfg         *Config
	lg          *slog.Logger
	srv         *server.Server
	clientURLs  []string
	listeners   []*clientListener
	metricsURLs []string
	httpURLs    []string
	// httpOnly are the metrics and client HTTP listeners: grpc and mux
	// are nil.
	httpOnly []*clientListener
	peers    []*peerListener
	self     *self // the Lock and Election services' client of the member

	errc      chan error
	wg        sync.WaitGroup // serving goroutines
	closeOnce sync.Once
	closeErr  error
	closing   chan struct{}
}

// clientListener is one client URL being served.
type clientListener struct {
	url  string // as bound: the configured URL with the real port
	l    net.Listener
	grpc *grpc.Server
	http *http.Server
	mux  *api.ConnMux // nil on TLS listeners
}

// Start validates cfg, binds every client URL, opens the member's server on
// cfg's data directory and serves clients on each URL, gRPC and HTTP on the
// same port. Nothing is left running if it fails. A data directory held by
// another process fails with an error that wraps storage.ErrLocked.
func Start(cfg *Config) (*Member, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		var err error
		if lg, err = NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat); err != nil {
			return nil, err
		}
	}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg.MustRegister(fdGauges()...)
	}
	m := &Member{cfg: cfg, lg: lg, errc: make(chan error, 1), closing: make(chan struct{})}
	// Bind first, as etcd does: a port in use fails before the data
	// directory is touched.
	if err := m.listenClients(); err != nil {
		m.closeListeners()
		return nil, err
	}
	for _, raw := range cfg.ListenPeerURLs {
		pl, err := listenPeer(raw)
		if err != nil {
			m.closeListeners()
			return nil, err
		}
		m.peers = append(m.peers, pl)
	}
	tlsCfg, peerTLS, err := m.setupTLS()
	if err != nil {
		m.closeListeners()
		return nil, err
	}

	scfg := cfg.serverConfig(lg, reg)
	scfg.PeerTLS, scfg.PeerServerTLS = peerTLS.dial, peerTLS.enforce
	cfg.Recovery.apply(&scfg)
	srv, err := server.New(scfg)
	if err != nil {
		m.closeListeners()
		return nil, fmt.Errorf("embed: start member %q in %s: %w", cfg.Name, cfg.dataDir(), err)
	}
	m.srv = srv

	opts := cfg.apiOptions(lg, reg)
	opts.Stopping = m.closing
	opts.ElectionTimeout = time.Duration(cfg.ElectionMs) * time.Millisecond
	handler := api.NewHTTPHandler(srv, opts, api.HTTPOptions{EnablePprof: cfg.EnablePprof, EnableGateway: cfg.EnableGRPCGateway})
	if handler, err = m.startSelf(handler); err != nil {
		srv.Stop()
		m.closeListeners()
		return nil, err
	}
	if cfg.ClientTLS.ClientCertAuth && cfg.EnableGRPCGateway {
		handler = refuseGatewayCN(handler, srv.AuthEnabled)
	}
	grpcOnly := len(cfg.ListenClientHTTPURLs) > 0
	m.servePeers(srv.PeerHandler(), peerTLS)
	for _, cl := range m.listeners {
		m.serve(cl, opts, handler, tlsCfg, grpcOnly)
	}
	m.serveSelf(m.listeners[0].grpc)
	for _, cl := range m.httpOnly {
		m.serveHTTP(cl, handler, tlsCfg)
	}
	m.wg.Add(1)
	go m.watchServer()
	if len(m.peers) > 0 {
		lg.Info("serving peer traffic", "name", cfg.Name, "peer-urls", m.PeerURLs())
	}
	lg.Info("serving client requests", "name", cfg.Name, "client-urls", m.clientURLs, "data-dir", cfg.dataDir())
	return m, nil
}

// setupTLS makes the data directory private and builds the client and peer
// TLS configurations, generating certificates into it for auto TLS. The
// client configuration is nil without client TLS.
func (m *Member) setupTLS() (*tls.Config, peerTLSConfigs, error) {
	cfg, lg := m.cfg, m.lg
	dir := cfg.dataDir()
	if err := prepareDataDir(lg, dir); err != nil {
		return nil, peerTLSConfigs{}, err
	}
	clientInfo, err := autoTLS(lg, cfg.ClientTLS, cfg.ClientAutoTLS, filepath.Join(dir, fixturesDir, autoClientDir),
		append(slices.Clone(cfg.ListenClientURLs), cfg.ListenClientHTTPURLs...), cfg.SelfSignedCertValidity, "client")
	if err != nil {
		return nil, peerTLSConfigs{}, err
	}
	peerInfo, err := autoTLS(lg, cfg.PeerTLS, cfg.PeerAutoTLS, filepath.Join(dir, fixturesDir, autoPeerDir),
		cfg.ListenPeerURLs, cfg.SelfSignedCertValidity, "peer")
	if err != nil {
		return nil, peerTLSConfigs{}, err
	}
	var tlsCfg *tls.Config
	if clientInfo.configured() {
		if tlsCfg, err = clientInfo.serverConfig(lg); err != nil {
			return nil, peerTLSConfigs{}, err
		}
	}
	peerTLS, err := peerInfo.peerTLS(cfg.ListenPeerURLs, lg)
	if err != nil {
		return nil, peerTLSConfigs{}, err
	}
	return tlsCfg, peerTLS, nil
}

// listenClients binds the client, client HTTP and metrics URLs, in that
// order, recording each listener and the URL it is bound to. On an error
// the listeners bound so far are left for closeListeners.
func (m *Member) listenClients() error {
	for _, group := range []struct {
		raws []string
		ls   *[]*clientListener
		urls *[]string
	}{
		{m.cfg.ListenClientURLs, &m.listeners, &m.clientURLs},
		{m.cfg.ListenClientHTTPURLs, &m.httpOnly, &m.httpURLs},
		{m.cfg.ListenMetricsURLs, &m.httpOnly, &m.metricsURLs},
	} {
		for _, raw := range group.raws {
			cl, err := listen(raw)
			if err != nil {
				return err
			}
			*group.ls = append(*group.ls, cl)
			*group.urls = append(*group.urls, cl.url)
		}
	}
	return nil
}

func listen(raw string) (*clientListener, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid listen client URL %q: %w", raw, err)
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("listen on client URL %s: %w", raw, err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	bound := *u
	bound.Host = net.JoinHostPort(u.Hostname(), port)
	bound.Path = ""
	return &clientListener{url: bound.String(), l: l}, nil
}

// serve starts serving one client listener: plain text split by
// api.ConnMux, TLS through one http.Server that hands gRPC requests to the
// gRPC server. With grpcOnly (client HTTP URLs of their own) the HTTP
// endpoints are left out.
func (m *Member) serve(cl *clientListener, opts api.Options, handler http.Handler, tlsCfg *tls.Config, grpcOnly bool) {
	if grpcOnly {
		handler = http.NotFoundHandler()
	}
	cl.grpc = api.NewGRPCServer(m.srv, opts)
	api.RegisterCluster(cl.grpc, m.srv)
	api.RegisterLease(cl.grpc, m.srv)
	api.RegisterWatch(cl.grpc, m.srv, api.WatchOptions{MaxRequestBytes: m.cfg.MaxRequestBytes, Logger: m.lg})
	m.registerSelf(cl.grpc)
	cl.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Minute,
		ErrorLog:          log.New(discard{}, "", 0), // clients' mistakes are not the member's
	}
	isTLS := tlsCfg != nil && mustScheme(cl.url) == "https"
	if isTLS {
		cl.http.Handler = api.GRPCOrHTTP(cl.grpc, handler)
		cl.http.TLSConfig = tlsCfg.Clone()
		m.run(func() error { return ignoreClosed(cl.http.ServeTLS(cl.l, "", "")) })
		return
	}
	if grpcOnly {
		m.run(func() error { return ignoreClosed(cl.grpc.Serve(cl.l)) })
		return
	}
	cl.mux = api.NewConnMux(cl.l)
	m.run(func() error { return ignoreClosed(cl.grpc.Serve(cl.mux.GRPC())) })
	m.run(func() error { return ignoreClosed(cl.http.Serve(cl.mux.HTTP())) })
	m.run(cl.mux.Serve)
}

// serveHTTP serves the HTTP endpoints alone on a metrics or client HTTP
// listener.
func (m *Member) serveHTTP(cl *clientListener, handler http.Handler, tlsCfg *tls.Config) {
	cl.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Minute,
		ErrorLog:          log.New(discard{}, "", 0),
	}
	if tlsCfg != nil && mustScheme(cl.url) == "https" {
		cl.http.TLSConfig = tlsCfg.Clone()
		m.run(func() error { return ignoreClosed(cl.http.ServeTLS(cl.l, "", "")) })
		return
	}
	m.run(func() error { return ignoreClosed(cl.http.Serve(cl.l)) })
}

func mustScheme(raw string) string {
	u, _ := url.Parse(raw)
	return u.Scheme
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// ignoreClosed drops the errors serving loops return because they were told
// to stop.
func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// run runs a serving loop; an error it returns while the member is not
// closing is reported on Err.
func (m *Member) run(f func() error) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := f(); err != nil {
			select {
			case <-m.closing:
			default:
				m.report(err)
			}
		}
	}()
}

func (m *Member) report(err error) {
	select {
	case m.errc <- err:
	default: // one error is enough to tell the owner to stop
	}
}

// watchServer reports the server stopping on its own (a fatal error).
func (m *Member) watchServer() {
	defer m.wg.Done()
	select {
	case <-m.srv.Done():
		select {
		case <-m.closing:
			return
		default:
		}
		err := m.srv.Err()
		if err == nil {
			err = server.ErrStopped
		}
		m.report(fmt.Errorf("member stopped: %w", err))
	case <-m.closing:
	}
}

// ClientURLs returns the URLs clients are served on, with the ports
// actually bound (so "http://127.0.0.1:0" comes back with its real port).
func (m *Member) ClientURLs() []string { return append([]string(nil), m.clientURLs...) }

// MetricsURLs returns the URLs the HTTP endpoints alone are served on
// (Config.ListenMetricsURLs), with the ports actually bound.
func (m *Member) MetricsURLs() []string { return append([]string(nil), m.metricsURLs...) }

// HTTPURLs returns the URLs the HTTP endpoints are served on when they
// have URLs of their own (Config.ListenClientHTTPURLs), with the ports
// actually bound.
func (m *Member) HTTPURLs() []string { return append([]string(nil), m.httpURLs...) }

// Server returns the member's server.
func (m *Member) Server() *server.Server { return m.srv }

// Err delivers the first error that stops the member from serving: a
// listener failing or the server stopping after a fatal error. The owner
// should then Close the member.
func (m *Member) Err() <-chan error { return m.errc }

// Close stops the member gracefully: it stops accepting connections, gives
// requests in flight up to the request timeout to finish, then stops the
// gRPC and HTTP servers and the member's server. It is idempotent and
// returns the server's fatal error if there was one.
func (m *Member) Close() error {
	m.closeOnce.Do(func() {
		close(m.closing)
		m.handOffLeadership()
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.requestTimeout())
		defer cancel()
		var wg sync.WaitGroup
		for _, cl := range append(m.listeners, m.httpOnly...) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl.stop(ctx)
			}()
		}
		wg.Wait()
		m.self.close()
		m.srv.Stop()
		m.stopPeers(ctx)
		m.wg.Wait()
		m.closeErr = m.srv.Err()
		m.lg.Info("member closed", "name", m.cfg.Name)
	})
	return m.closeErr
}

// stop stops one listener's servers: gracefully until ctx ends, then at
// once.
func (cl *clientListener) stop(ctx context.Context) {
	if cl.mux != nil {
		// Refuse new connections first; those being sniffed are dropped.
		cl.mux.Close()
	}
	if cl.grpc == nil {
		cl.http.Shutdown(ctx)
		cl.http.Close()
		return
	}
	stopped := make(chan struct{})
	go func() {
		cl.grpc.GracefulStop()
		close(stopped)
	}()
	cl.http.Shutdown(ctx)
	select {
	case <-stopped:
	case <-ctx.Done():
		cl.grpc.Stop()
		<-stopped
	}
	cl.http.Close()
	cl.l.Close()
}

// closeListeners releases the listeners of a Start that failed.
func (m *Member) closeListeners() {
	for _, cl := range append(m.listeners, m.httpOnly...) {
		cl.l.Close()
	}
	for _, pl := range m.peers {
		pl.l.Close()
	}
}
