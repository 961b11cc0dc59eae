package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

var (
	errRedial      = errors.New("peer URLs changed")
	errStalled     = errors.New("write stalled: the peer stopped reading")
	errPeerSilent  = errors.New("no keepalive answer from the peer")
	errNoAnswer    = errors.New("the peer accepted the stream but did not answer")
	errPeerStopped = errors.New("peer removed or transport stopped")
)

// maxBatchBytes is about how much one write to a stream carries.
const maxBatchBytes = 1 << 20

// peer is the outbound side of one remote member: a send queue, the
// goroutine that keeps one stream to the member open and writes the queue to
// it, and at most one snapshot transfer.
type peer struct {
	t     *Transport
	id    uint64
	label string // the ID as metrics and logs print it
	log   *slog.Logger
	q     *sendQueue

	ctx    context.Context // canceled by stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the stream loop and a snapshot transfer
	redial chan struct{}  // a token asks the stream loop to reconnect

	snapshotInFlight atomic.Bool
	// writes counts writes to streams (a batch or a ping each), to observe
	// batching.
	writes atomic.Int64

	mu struct {
		sync.Mutex
		closed      bool
		urls        []string
		next        int    // index in urls of the URL to dial next
		url         string // URL of the current stream or last attempt
		activeSince time.Time
		lastErr     error
	}
}

func newPeer(t *Transport, id uint64, urls []string) *peer {
	p := &peer{
		t:      t,
		id:     id,
		label:  formatID(id),
		q:      newSendQueue(t.cfg.QueueMessages, t.cfg.QueueBytes),
		redial: make(chan struct{}, 1),
	}
	p.log = t.log.With("peer", p.label)
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	p.mu.urls = cleanURLs(urls)
	return p
}

func (p *peer) start() {
	p.wg.Add(1)
	go p.run()
}

// stop cancels everything the peer does and waits for it.
func (p *peer) stop() {
	p.mu.Lock()
	p.mu.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	p.q.setOpen(false)
}

func (p *peer) setURLs(urls []string) {
	p.mu.Lock()
	p.mu.urls = cleanURLs(urls)
	p.mu.next = 0
	p.mu.Unlock()
	select {
	case p.redial <- struct{}{}:
	default:
	}
}

func (p *peer) status() PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PeerStatus{ActiveSince: p.mu.activeSince, URL: p.mu.url, LastError: p.mu.lastErr}
}

// cleanURLs copies urls without trailing slashes, which would otherwise
// double the slash before PathPrefix.
func cleanURLs(urls []string) []string {
	out := slices.Clone(urls)
	for i, u := range out {
		out[i] = strings.TrimRight(u, "/")
	}
	return out
}

// pickURL returns the URL to dial, or "" if the peer has none.
func (p *peer) pickURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.mu.urls) == 0 {
		return ""
	}
	p.mu.url = p.mu.urls[p.mu.next%len(p.mu.urls)]
	return p.mu.url
}

// failedURL moves on to the next URL after a failure, so that a member with
// several peer URLs is reached through any that works.
func (p *peer) failedURL() {
	p.mu.Lock()
	p.mu.next++
	p.mu.Unlock()
}

// run keeps a stream to the peer open until the peer is stopped, waiting a
// jittered, exponentially growing delay between failed attempts.
func (p *peer) run() {
	defer p.wg.Done()
	delay := time.Duration(0)
	var lastLogged string
	for {
		url := p.pickURL()
		var err error
		established := false
		if url == "" {
			err = errors.New("the peer has no URLs")
		} else {
			established, err = p.stream(url)
		}
		if p.ctx.Err() != nil {
			return
		}
		var wait time.Duration
		switch {
		case errors.Is(err, errRedial):
			delay, wait = 0, 0
		case isRefusal(err):
			wait = p.t.cfg.MaxRetryRefused
			p.failedURL()
		default:
			if established {
				delay = 0
			}
			delay = min(max(2*delay, p.t.cfg.MinBackoff), p.t.cfg.MaxBackoff)
			// Equal jitter: members restarted together do not redial in step.
			wait = delay/2 + rand.N(delay/2+1)
			p.failedURL()
		}
		if !errors.Is(err, errRedial) {
			p.mu.Lock()
			p.mu.lastErr = err
			p.mu.Unlock()
			// Log a failure when it changes, not on every retry, so that a
			// peer that stays down (or refuses us) does not flood the log.
			if msg := err.Error(); msg != lastLogged || established {
				lastLogged = msg
				level := slog.LevelWarn
				if isRefusal(err) {
					level = slog.LevelError
				}
				p.log.Log(p.ctx, level, "stream to peer failed", "url", url, "established", established,
					"retry_in", wait.Round(time.Millisecond), "err", err)
			}
			p.t.noteRemoved(err)
		}
		if wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-p.ctx.Done():
				timer.Stop()
				return
			case <-p.redial:
				delay = 0
			case <-timer.C:
			}
			timer.Stop()
		}
	}
}

// stream opens one stream to url and writes queued messages to it until it
// fails, the peer is stopped or its URLs change. established reports whether
// the peer accepted the stream.
func (p *peer) stream(url string) (established bool, err error) {
	// A redial token left from before this attempt is satisfied by it.
	select {
	case <-p.redial:
	default:
	}
	ctx, cancel := context.WithCancelCause(p.ctx)
	defer cancel(errPeerStopped)
	pr, pw := io.Pipe()
	// Whatever ends the stream also unblocks a writer stuck in the pipe.
	stopClose := context.AfterFunc(ctx, func() { pr.CloseWithError(context.Cause(ctx)) })
	defer stopClose()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+streamPath, pr)
	if err != nil {
		return false, fmt.Errorf("bad peer URL %q: %w", url, err)
	}
	setIdentity(req.Header, p.t.cfg.ClusterID, p.t.cfg.LocalID, p.id)
	req.Header.Set("Content-Type", contentTypeStream)
	// A peer that accepts the connection and never answers (a listener
	// closed with the connection still in its accept queue, as when a
	// member's start fails after it bound its peer port) would hold Do
	// forever: the client's response-header timeout only starts once the
	// request body is written, and a stream's body never ends.
	noAnswer := time.AfterFunc(p.t.cfg.DialTimeout+p.t.cfg.WriteTimeout, func() { cancel(errNoAnswer) })
	resp, err := p.t.streamClient.Do(req)
	if !noAnswer.Stop() && err == nil {
		resp.Body.Close()
		err = errNoAnswer
	}
	if err != nil {
		return false, causeOr(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, refusalError(resp)
	}

	start := time.Now()
	p.mu.Lock()
	p.mu.activeSince = start
	p.mu.lastErr = nil
	p.mu.Unlock()
	p.q.setOpen(true)
	p.t.metrics.activePeers.WithLabelValues(p.t.label, p.label).Inc()
	p.log.Info("stream to peer established", "url", url)
	defer func() {
		p.mu.Lock()
		p.mu.activeSince = time.Time{}
		p.mu.Unlock()
		p.t.metrics.activePeers.WithLabelValues(p.t.label, p.label).Dec()
		p.t.metrics.disconnectedPeers.WithLabelValues(p.t.label, p.label).Inc()
		p.q.setOpen(false)
		// Whatever was queued or in flight is lost; raft must probe again.
		p.t.markUnreachable(p.id)
	}()

	// The response body carries pongs; reading them proves the peer alive.
	var lastHeard atomic.Int64 // nanoseconds since start
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		cancel(p.readPongs(resp.Body, start, &lastHeard))
	}()
	defer func() {
		cancel(errPeerStopped)
		<-readerDone
	}()

	sentBytes := p.t.metrics.sentBytes.WithLabelValues(p.label)
	stall := time.AfterFunc(time.Hour, func() { cancel(errStalled) })
	stall.Stop()
	defer stall.Stop()
	write := func(b []byte) error {
		stall.Reset(p.t.cfg.WriteTimeout)
		_, err := pw.Write(b)
		stall.Stop()
		p.writes.Add(1)
		if err != nil {
			return err
		}
		sentBytes.Add(float64(len(b)))
		return nil
	}

	ticker := time.NewTicker(p.t.cfg.KeepaliveInterval)
	defer ticker.Stop()
	idle := IdleIntervals * p.t.cfg.KeepaliveInterval
	var (
		batch []*raftpb.Message
		buf   []byte
	)
	for {
		select {
		case <-ctx.Done():
			return true, context.Cause(ctx)
		case <-p.redial:
			return true, errRedial
		case <-p.q.ready:
			batch = p.q.drain(batch[:0], maxBatchBytes)
			buf = buf[:0]
			for _, m := range batch {
				var err error
				buf, err = appendMessageFrame(buf, m, p.t.cfg.MaxMessageBytes)
				if err != nil {
					p.log.Error("dropping message", "err", err)
					p.t.metrics.sentFailures.WithLabelValues(p.label).Inc()
				}
			}
			clear(batch)
			if len(buf) > 0 {
				if err := write(buf); err != nil {
					return true, causeOr(ctx, err)
				}
			}
			if cap(buf) > 4*maxBatchBytes {
				buf = nil
			}
		case <-ticker.C:
			if time.Since(start)-time.Duration(lastHeard.Load()) > idle {
				return true, errPeerSilent
			}
			var ping [frameHeaderLen + pingLen]byte
			appendFrameHeader(ping[:0], framePing, pingLen)
			binary.BigEndian.PutUint64(ping[frameHeaderLen:], uint64(time.Since(start)))
			if err := write(ping[:]); err != nil {
				return true, causeOr(ctx, err)
			}
		}
	}
}

// readPongs reads the stream's response body until it fails, recording when
// the peer was last heard from and the round-trip time.
func (p *peer) readPongs(body io.Reader, start time.Time, lastHeard *atomic.Int64) error {
	fr := newFrameReader(body)
	for {
		_, payload, err := fr.next(func(typ byte) int {
			if typ == framePong {
				return pingLen
			}
			return -1
		})
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("the peer closed the stream")
			}
			return fmt.Errorf("reading from stream: %w", err)
		}
		if len(payload) != pingLen {
			return fmt.Errorf("%w: pong of %d bytes", errProtocol, len(payload))
		}
		now := time.Since(start)
		lastHeard.Store(int64(now))
		sent := time.Duration(binary.BigEndian.Uint64(payload))
		if sent <= now {
			p.t.metrics.rtt.WithLabelValues(p.label).Observe((now - sent).Seconds())
		}
	}
}

// causeOr returns why ctx was canceled, which explains a failed write or
// request better than the error it caused, or err if ctx is live.
func causeOr(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return err
}
