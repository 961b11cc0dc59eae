package server

import (
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairn-db/cairn/internal/watch"
)

// WatchHub returns the member's watch hub, which the apply loop feeds with
// every applied write; internal/api serves etcd's Watch service over it.
func (s *Server) WatchHub() *watch.Hub { return s.hub }

// newHub starts the watch hub over the member's store.
func (s *Server) newHub() *watch.Hub {
	return watch.New(watchSource{s}, watch.Options{
		ProgressNotifyInterval: s.cfg.WatchProgressNotifyInterval,
		Logger:                 s.lg.With("component", "watch"),
		Registerer:             s.cfg.Metrics,
	})
}

// watchSource is the store as the watch hub reads it: catch-up reads are
// kept out while a snapshot replaces the store's state, and fail with
// ErrStopped once the member is stopping.
type watchSource struct{ s *Server }

// Events reads the store's event log for a catching-up watcher.
func (w watchSource) Events(from int64, limit int) ([]*mvccpb.Event, int64, int64, error) {
	s := w.s
	if err := s.life.enter(); err != nil {
		return nil, 0, 0, err
	}
	defer s.life.leave()
	s.restoring.RLock()
	defer s.restoring.RUnlock()
	return s.kv.Events(from, limit)
}

// Rev is the store's published revision.
func (w watchSource) Rev() int64 { return w.s.kv.Rev() }

// CompactRev is the store's compaction revision.
func (w watchSource) CompactRev() int64 { return w.s.kv.CompactRev() }
