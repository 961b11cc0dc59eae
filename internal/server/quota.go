package server

import (
	"context"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/membership"
)

// sizeRefreshInterval and sizeRefreshEntries bound how stale the engine
// size used by the quota check may get.
const (
	sizeRefreshInterval = 100 * time.Millisecond
	sizeRefreshEntries  = 1024
)

// Quota costs, etcd's estimates of what a write adds to the database.
const kvOverhead = 256

func putCost(r *pb.PutRequest) int { return kvOverhead + len(r.Key) + len(r.Value) }

func txnCost(r *pb.TxnRequest) int {
	branch := func(ops []*pb.RequestOp) int {
		n := 0
		for _, op := range ops {
			if p := op.GetRequestPut(); p != nil {
				n += putCost(p)
			} else if t := op.GetRequestTxn(); t != nil {
				n += txnCost(t)
			}
		}
		return n
	}
	return max(branch(r.Success), branch(r.Failure))
}

// quota is the backend quota (QuotaBackendBytes) on the request path: the
// engine size as the apply loop last measured it, which check compares
// with the quota without touching the engine, and the NOSPACE alarm that
// the first refusal raises. The alarm itself, once applied, is the
// alarmSet's; while it is raised every member refuses writes that add
// data at apply.
type quota struct {
	s *Server
	// size is the engine size as last measured.
	size atomic.Int64
	// raising is set while a NOSPACE alarm proposal is in flight.
	raising atomic.Bool

	// measured and sinceMeasure are the apply loop's own: when it last
	// measured the size, and how many entries it applied since.
	measured     time.Time
	sinceMeasure int
}

func newQuota(s *Server) *quota {
	q := &quota{s: s}
	q.measure()
	return q
}

// limit is the quota as reported: 0 when disabled.
func (q *quota) limit() int64 {
	return max(q.s.cfg.QuotaBackendBytes, 0)
}

// measure refreshes the size from the engine. Only the apply loop (and
// startup) calls it.
func (q *quota) measure() {
	q.size.Store(q.s.eng.Size())
	q.measured, q.sinceMeasure = time.Now(), 0
}

// maybeMeasure refreshes the size after the apply loop applied n more
// entries, if enough entries or time passed since the last measure.
func (q *quota) maybeMeasure(n int) {
	q.sinceMeasure += n
	if q.sinceMeasure >= sizeRefreshEntries || time.Since(q.measured) >= sizeRefreshInterval {
		q.measure()
	}
}

// engineSize returns the engine's size on disk and the part of it live
// data needs, or the last measured size after Stop.
func (q *quota) engineSize() (size, inUse int64) {
	s := q.s
	if s.life.enter() != nil {
		n := q.size.Load()
		return n, n
	}
	defer s.life.leave()
	return s.eng.Size(), s.eng.SizeInUse()
}

// check refuses a write that adds cost bytes when the engine is over its
// quota, and raises the NOSPACE alarm (through raft, in the background)
// the first time that happens, as etcd does.
func (q *quota) check(cost int) error {
	s := q.s
	if cost == 0 || s.cfg.QuotaBackendBytes < 0 {
		return nil
	}
	if q.size.Load()+int64(cost) < s.cfg.QuotaBackendBytes {
		return nil
	}
	al := membership.Alarm{MemberID: s.memberID, Type: int32(pb.AlarmType_NOSPACE)}
	if !s.alarms.has(al) && q.raising.CompareAndSwap(false, true) {
		s.life.wg.Add(1)
		go func() {
			defer s.life.wg.Done()
			defer q.raising.Store(false)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				select {
				case <-s.life.stopc:
					cancel()
				case <-ctx.Done():
				}
			}()
			_, err := s.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: s.memberID, Alarm: pb.AlarmType_NOSPACE})
			if err != nil {
				s.lg.Warn("raising the NOSPACE alarm failed", "err", err)
			} else {
				s.lg.Warn("database space exceeded: NOSPACE alarm raised", "quota-bytes", s.cfg.QuotaBackendBytes)
			}
		}()
	}
	return ErrNoSpace
}
