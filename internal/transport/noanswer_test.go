package transport

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TestStreamToSilentPeer dials a peer that accepts connections and never
// answers: the stream attempt must fail and be retried rather than wait
// for ever, which is what happened to the members whose peer's start failed
// after it bound its peer port.
func TestStreamToSilentPeer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read or answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})

	cfg := fastConfig(1, nil)
	cfg.DialTimeout, cfg.WriteTimeout = 50*time.Millisecond, 100*time.Millisecond
	a := startMember(t, cfg)
	a.tr.AddPeer(2, []string{"http://" + l.Addr().String()})
	waitFor(t, "the stream attempt to the silent peer to fail", func() bool {
		st, _ := a.tr.PeerStatus(2)
		return st.LastError != nil
	})
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	waitFor(t, "a new attempt", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(conns) > n
	})
}
