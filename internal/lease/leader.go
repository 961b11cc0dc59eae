package lease

import (
	"context"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// This file holds the leader side: the lease clocks. Only the primary
// lessor (the raft leader's) runs them; the decisions it takes from them
// (a lease expired, a remaining TTL worth persisting) reach every member as
// proposals through raft, never directly.

// Promote makes this lessor the primary: every lease's clock restarts from
// its checkpointed remaining TTL (or its full TTL if it has none), plus
// extend. etcd extends by the election timeout, so that clients whose
// keep-alives went to the old leader have time to find the new one. Call
// it when this member, as leader, has applied every entry of the previous
// terms (its own first, empty, entry of the term).
//
// If more leases would expire together than the revoke rate allows, some
// are pushed later so that at most 3/4 of the rate expire in any second,
// as etcd does, so a failover does not revoke a pile of leases at once.
func (l *Lessor) Promote(extend time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.demoted == nil {
		l.mu.demoted = make(chan struct{})
	}
	l.mu.primary = true
	now := l.now()
	for _, le := range l.mu.leases {
		l.startClockLocked(le, now, extend)
	}
	l.spreadLocked()
}

// spreadLocked delays deadlines so that no second holds more than 3/4 of
// the revoke rate's expiries: in deadline order, a lease expires at least
// a second after the one perSecond places before it.
func (l *Lessor) spreadLocked() {
	perSecond := 3 * l.opts.RevokeRate / 4
	if perSecond < 1 || len(l.mu.leases) <= perSecond {
		return
	}
	all := make([]*lease, 0, len(l.mu.leases))
	for _, le := range l.mu.leases {
		all = append(all, le)
	}
	slices.SortFunc(all, func(a, b *lease) int {
		if a.deadline != b.deadline {
			return cmpInt64(a.deadline, b.deadline)
		}
		return cmpInt64(a.id, b.id)
	})
	for i := perSecond; i < len(all); i++ {
		le := all[i]
		if floor := addSat(all[i-perSecond].deadline, int64(time.Second)); le.deadline < floor {
			le.deadline, le.due = floor, floor
			l.mu.expiry.set(le)
		}
	}
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Demote stops every lease's clock: this member is no longer the leader,
// so it neither expires nor renews leases. A Renew waiting on an expired
// lease returns ErrNotPrimary.
func (l *Lessor) Demote() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.primary = false
	if l.mu.demoted != nil {
		close(l.mu.demoted)
		l.mu.demoted = nil
	}
	for _, le := range l.mu.leases {
		le.deadline, le.due = forever, forever
	}
	l.mu.expiry.clear()
	l.mu.checkpoints.clear()
}

// IsPrimary reports whether the lessor is promoted.
func (l *Lessor) IsPrimary() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.primary
}

// Renew restarts lease id's clock from its full TTL and returns that TTL.
// It is the leader's answer to a keep-alive and changes no replicated
// state, with one exception: when resetCheckpoint is true the lease had a
// checkpointed remaining TTL, which the renewal made stale, and the caller
// must propose LeaseCheckpoint{ID: id, Remaining_TTL: 0} through raft
// before answering the client (and fail the keep-alive if that fails), or
// a new leader would cut the renewed lease short.
//
// A lease whose deadline has passed cannot be renewed: its revoke is on
// its way, so Renew waits for it and then returns ErrLeaseNotFound, or
// ErrNotPrimary if this member is demoted meanwhile, or ctx's error.
// Errors otherwise: ErrNotPrimary, ErrLeaseNotFound.
func (l *Lessor) Renew(ctx context.Context, id int64) (ttl int64, resetCheckpoint bool, err error) {
	l.mu.Lock()
	if !l.mu.primary {
		l.mu.Unlock()
		return -1, false, ErrNotPrimary
	}
	le := l.mu.leases[id]
	if le == nil {
		l.mu.Unlock()
		return -1, false, ErrLeaseNotFound
	}
	now := l.now()
	if le.deadline <= now {
		if le.revoked == nil {
			le.revoked = make(chan struct{})
		}
		revoked, demoted := le.revoked, l.mu.demoted
		l.mu.Unlock()
		select {
		case <-revoked:
			return -1, false, ErrLeaseNotFound
		case <-demoted:
			return -1, false, ErrNotPrimary
		case <-ctx.Done():
			return -1, false, ctx.Err()
		}
	}
	defer l.mu.Unlock()
	le.deadline = addSat(now, seconds(le.ttl))
	le.due = le.deadline
	l.mu.expiry.set(le)
	return le.ttl, le.remaining > 0, nil
}

// Expired returns up to max leases whose deadline has passed, earliest
// first; the caller proposes a LeaseRevoke for each. A lease reported is
// not reported again for the retry interval (Options.ExpiredRetry), so a
// revoke that fails (lost leadership, a timeout) is retried. Only the
// primary reports anything.
func (l *Lessor) Expired(max int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return nil
	}
	now := l.now()
	var ids []int64
	for len(ids) < max {
		le := l.mu.expiry.peek()
		if le == nil || le.due > now {
			break
		}
		ids = append(ids, le.id)
		le.due = addSat(now, int64(l.opts.ExpiredRetry))
		l.mu.expiry.set(le)
	}
	return ids
}

// Checkpoints returns up to max checkpoints that are due: for each lease
// whose TTL is longer than the checkpoint interval, once per interval, its
// remaining TTL in whole seconds (rounded up), unless that is still its
// full TTL. The caller proposes them as one LeaseCheckpointRequest. Only
// the primary reports anything.
func (l *Lessor) Checkpoints(max int) []*pb.LeaseCheckpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return nil
	}
	now := l.now()
	var cps []*pb.LeaseCheckpoint
	for len(cps) < max {
		le := l.mu.checkpoints.peek()
		if le == nil || le.cpAt > now {
			break
		}
		if le.deadline <= now {
			// Expiring: its revoke makes a checkpoint moot.
			l.mu.checkpoints.remove(le)
			continue
		}
		// Re-armed whatever happens, unlike etcd, so a lease renewed
		// just before its checkpoint still gets the next one.
		l.scheduleCheckpointLocked(le, now)
		left := (le.deadline - now + int64(time.Second) - 1) / int64(time.Second)
		if left < le.ttl {
			cps = append(cps, &pb.LeaseCheckpoint{ID: le.id, Remaining_TTL: left})
		}
	}
	return cps
}

// Run drives the primary's duties until stop is closed: every
// TickInterval it hands expired leases to revoke (at most the revoke rate's
// share of a tick) and due checkpoints to checkpoint (likewise). Both
// callbacks run on Run's goroutine and may block (to propose and wait):
// the next tick waits for them, and a revoke that fails is reported again
// after the retry interval. On a member that is not the leader it only
// ticks. The caller owns the goroutine.
func (l *Lessor) Run(stop <-chan struct{}, revoke func(ids []int64), checkpoint func(cps []*pb.LeaseCheckpoint)) {
	perTick := func(rate int) int {
		return max(1, rate*int(TickInterval/time.Millisecond)/1000)
	}
	for {
		if ids := l.Expired(perTick(l.opts.RevokeRate)); len(ids) > 0 {
			revoke(ids)
		}
		if cps := l.Checkpoints(perTick(l.opts.CheckpointRate)); len(cps) > 0 {
			checkpoint(cps)
		}
		select {
		case <-stop:
			return
		case <-l.clock.After(TickInterval):
		}
	}
}
