package conformance

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/cairn-db/cairn/internal/embed"
)

// startCairn starts a cairn member (internal/embed, as cmd/cairn runs it)
// and returns its client endpoint (host:port). sc stops it.
func startCairn(t testing.TB, sc *scope) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "subject"
	cfg.DataDir = t.TempDir()
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	// As for the oracle: durability is the crash test's business.
	cfg.UnsafeNoFsync = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := embed.Start(cfg)
	if err != nil {
		t.Fatalf("start cairn: %v", err)
	}
	sc.defer_(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close cairn: %v", err)
		}
	})
	urls := m.ClientURLs()
	if len(urls) == 0 {
		t.Fatal("cairn reports no client URL")
	}
	return strings.TrimPrefix(urls[0], "http://")
}
