package server

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/mvcc"
)

// revisionCompactInterval is how often revision mode compacts (etcd's).
const revisionCompactInterval = 5 * time.Minute

// autoCompactor compacts the key history in the background
// (--auto-compaction-mode and --auto-compaction-retention), with etcd's
// semantics. Only the leader compacts (the compaction is a raft request,
// so every member follows); on other members the compactor keeps its
// bookkeeping but skips the request.
type autoCompactor struct {
	s *Server
}

// startAutoCompactor starts the auto-compactor as one of the server's
// goroutines, unless the retention disables it.
func startAutoCompactor(s *Server) {
	retention, _ := parseRetention(s.cfg.AutoCompactionMode, s.cfg.AutoCompactionRetention)
	if retention <= 0 {
		return
	}
	c := autoCompactor{s: s}
	s.life.wg.Add(1)
	if s.cfg.AutoCompactionMode == CompactionModeRevision {
		go c.byRevision(int64(retention))
	} else {
		go c.periodically(retention)
	}
}

// periodically keeps about `period` of history. It samples the
// revision every tenth of the compaction interval (period, capped at an
// hour), and once a full period has passed since the last compaction
// compacts to the revision sampled a period ago. The first compaction thus
// comes one period after start, later ones every compaction interval.
func (c autoCompactor) periodically(period time.Duration) {
	s := c.s
	defer s.life.wg.Done()
	interval := min(period, time.Hour)
	retry := interval / 10
	keep := int(period/retry) + 1
	var (
		revs         = make([]int64, 0, keep+1)
		lastRev      int64
		lastSuccess  = s.clock.Now()
		baseInterval = period
	)
	for {
		revs = append(revs, s.kv.Rev())
		if len(revs) > keep {
			revs = revs[1:] // revs[0] is the revision one period ago
		}
		select {
		case <-s.life.stopc:
			return
		case <-s.clock.After(retry):
		}
		if !s.node.IsLeader() {
			continue
		}
		rev := revs[0]
		if s.clock.Now().Sub(lastSuccess) < baseInterval || rev == lastRev {
			continue
		}
		baseInterval = interval
		if c.compact(rev, "periodic") {
			lastRev, lastSuccess = rev, s.clock.Now()
		}
	}
}

// byRevision keeps the last `retention` revisions, compacting every
// five minutes.
func (c autoCompactor) byRevision(retention int64) {
	s := c.s
	defer s.life.wg.Done()
	var prev int64
	for {
		select {
		case <-s.life.stopc:
			return
		case <-s.clock.After(revisionCompactInterval):
		}
		if !s.node.IsLeader() {
			continue
		}
		rev := s.kv.Rev() - retention
		if rev <= 0 || rev == prev {
			continue
		}
		if c.compact(rev, "revision") {
			prev = rev
		}
	}
}

// compact proposes a compaction to rev and reports whether it is done
// (an already compacted revision counts as done).
func (c autoCompactor) compact(rev int64, mode string) bool {
	s := c.s
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := s.Compact(ctx, &pb.CompactionRequest{Revision: rev})
	if err == nil || errors.Is(err, mvcc.ErrCompacted) {
		s.lg.Info("auto compaction done", "mode", mode, "revision", rev)
		return true
	}
	s.lg.Warn("auto compaction failed", "mode", mode, "revision", rev, "err", err)
	return false
}
