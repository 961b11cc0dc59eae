package conformance

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/cairn-db/cairn/internal/embed"
)

// startCairn starts a cairn member (internal/embed, as cmd/cairn runs it)
// on dir and returns its client endpoint (host:port).
func startCairn(t testing.TB, dir string) (string, func()) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "subject"
	cfg.DataDir = dir
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	// As for the oracle: durability is the crash test's business.
	cfg.UnsafeNoFsync = true
	cfg.HeartbeatMs, cfg.ElectionMs = 10, 100 // as for the oracle
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := embed.Start(cfg)
	if err != nil {
		t.Fatalf("start cairn: %v", err)
	}
	stop := func() {
		if err := m.Close(); err != nil {
			t.Errorf("close cairn: %v", err)
		}
	}
	urls := m.ClientURLs()
	if len(urls) == 0 {
		stop()
		t.Fatal("cairn reports no client URL")
	}
	return strings.TrimPrefix(urls[0], "http://"), stop
}
