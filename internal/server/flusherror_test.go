package server

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/cairn-db/cairn/internal/storage"
)

// TestFailedFlushStopsTheMember: a flush that fails for another cause than
// a full device stops the member with the error, rather than leaving it to
// acknowledge writes until its memtables fill and it stalls in silence.
func TestFailedFlushStopsTheMember(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	put(t, s, "k", "v")
	s.quota.onBackgroundError(fmt.Errorf("%w: %w", storage.ErrFlush, syscall.EIO))
	waitUntil(t, "the member to stop", func() bool {
		select {
		case <-s.Done():
			return true
		default:
			return false
		}
	})
	if err := s.Err(); !errors.Is(err, syscall.EIO) || !errors.Is(err, storage.ErrFlush) {
		t.Fatalf("the member stopped with %v, want the flush's EIO", err)
	}
}
