package api

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// http2Preface is what every HTTP/2 client sends first on a connection; gRPC
// always speaks HTTP/2, and a plain-text HTTP/1.1 request can never start
// with it.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// sniffTimeout bounds how long a new connection may take to send the bytes
// that tell gRPC from HTTP/1.1. Clients send them right after connecting;
// one that sends nothing for this long is dropped rather than held.
const sniffTimeout = 30 * time.Second

// ConnMux splits one listener between gRPC and HTTP/1.1 by the first bytes
// of each connection: those that open with the HTTP/2 preface go to GRPC(),
// all others to HTTP(). This is how one client port serves both, as etcd's
// does. Plain-text HTTP/2 that is not gRPC is not supported (neither is it by
// etcd on a plain-text port).
//
// Sniffing happens on a goroutine per connection, so a slow client never
// holds up Accept. Serve runs the accept loop; Close stops it, closes both
// child listeners and drops connections still being sniffed.
type ConnMux struct {
	root       net.Listener
	grpc, http *childListener

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{}
	wg      sync.WaitGroup // sniffing goroutines
}

// NewConnMux returns a ConnMux over l. Call Serve to start accepting.
func NewConnMux(l net.Listener) *ConnMux {
	m := &ConnMux{root: l, pending: make(map[net.Conn]struct{})}
	m.grpc = newChildListener(l.Addr())
	m.http = newChildListener(l.Addr())
	return m
}

// GRPC returns the listener of gRPC (HTTP/2) connections.
func (m *ConnMux) GRPC() net.Listener { return m.grpc }

// HTTP returns the listener of HTTP/1.1 (and anything else) connections.
func (m *ConnMux) HTTP() net.Listener { return m.http }

// Serve accepts connections until the root listener is closed (by Close or
// otherwise) and then returns nil, closing the child listeners. Other accept
// errors (such as running out of file descriptors) are retried with a
// backoff.
func (m *ConnMux) Serve() error {
	defer m.grpc.Close()
	defer m.http.Close()
	var backoff time.Duration
	for {
		c, err := m.root.Accept()
		if err != nil {
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait for the load to
			// pass instead of spinning or giving up the port, as
			// net/http's server does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			c.Close()
			return nil
		}
		m.pending[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.route(c)
	}
}

// route reads just enough of c to tell whether it opens with the HTTP/2
// preface and hands it, those bytes included, to the matching listener.
func (m *ConnMux) route(c net.Conn) {
	defer m.wg.Done()
	isGRPC, buf, err := sniff(c)
	m.mu.Lock()
	delete(m.pending, c)
	closed := m.closed
	m.mu.Unlock()
	if err != nil || closed {
		c.Close()
		return
	}
	sc := &sniffedConn{Conn: c, buf: buf}
	if isGRPC {
		m.grpc.deliver(sc)
	} else {
		m.http.deliver(sc)
	}
}

func sniff(c net.Conn) (isGRPC bool, buf []byte, err error) {
	if err := c.SetReadDeadline(time.Now().Add(sniffTimeout)); err != nil {
		return false, nil, err
	}
	buf = make([]byte, 0, len(http2Preface))
	for len(buf) < len(http2Preface) && bytes.HasPrefix(http2Preface, buf) {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			return false, nil, err
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return false, nil, err
	}
	return bytes.Equal(buf, http2Preface), buf, nil
}

// Close stops Serve, closes the root and child listeners and every
// connection not yet handed over, and waits for the sniffing goroutines.
// Connections already handed over belong to their server.
func (m *ConnMux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	for c := range m.pending {
		c.Close()
	}
	m.mu.Unlock()
	err := m.root.Close()
	m.grpc.Close()
	m.http.Close()
	m.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// sniffedConn replays the bytes read while sniffing before reading on.
type sniffedConn struct {
	net.Conn
	buf []byte
}

func (c *sniffedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// childListener is a net.Listener fed by a ConnMux.
type childListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChildListener(addr net.Addr) *childListener {
	return &childListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *childListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *childListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *childListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *childListener) Addr() net.Addr { return l.addr }

// GRPCOrHTTP returns a handler that gives gRPC requests (HTTP/2 with a gRPC
// content type) to gs and everything else to h. It is for TLS listeners,
// where the protocol is only visible after the handshake and both protocols
// arrive through one http.Server, as in etcd's TLS serving.
func GRPCOrHTTP(gs *grpc.Server, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
