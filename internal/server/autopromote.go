package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// autoPromote promotes, on the leader, every learner that has caught up,
// with the check MemberPromote makes (learnerReady, then the strict
// reconfig check): the --auto-promote-learners behaviour, which etcd does
// not have. The version monitor calls it on each of its rounds, so a
// learner is promoted within about versionMonitorInterval of catching up.
// promoted counts the promotions.
func (rc *reconfig) autoPromote(promoted prometheus.Counter) {
	s := rc.s
	for _, m := range s.members.all() {
		if !m.IsLearner {
			continue
		}
		if err := s.life.enter(); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		_, err := rc.promoteHere(ctx, m.ID)
		cancel()
		s.life.leave()
		switch {
		case err == nil:
			promoted.Inc()
			s.lg.Info("promoted a learner that caught up (auto-promote-learners)",
				"member-id", fmt.Sprintf("%x", m.ID), "name", m.Name)
		case errors.Is(err, ErrLearnerNotReady), errors.Is(err, ErrNotLeader), errors.Is(err, ErrStopped):
			// Not yet, or no longer ours to do.
		default:
			s.lg.Warn("automatic learner promotion failed", "member-id", fmt.Sprintf("%x", m.ID), "err", err)
		}
	}
}
