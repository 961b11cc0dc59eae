package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeaseExpireOptions shapes the lease-expire workload.
type LeaseExpireOptions struct {
	// TTL is each lease's requested time to live in seconds. The server
	// may grant more (etcd raises a TTL below its minimum); the deadlines
	// follow the TTL granted. It must outlast the grant phase, or the
	// first leases expire while the last are still being granted.
	TTL int64
	// PollInterval is the time between the starts of two count-only
	// ranges over the keys (0: DefaultExpirePollInterval). It bounds the
	// resolution of every figure; each poll reads every key still alive,
	// so a very short interval loads the server it measures.
	PollInterval time.Duration
}

// DefaultExpirePollInterval is the poll interval of lease-expire when none
// is given: fine enough for expiries that take seconds, coarse enough that
// counting 100,000 keys does not become the load.
const DefaultExpirePollInterval = 50 * time.Millisecond

// pollLead is how long before the first deadline the polls begin, so that
// a server that expires leases a little early is seen doing it.
const pollLead = time.Second

// errKeyNotExpired is counted once for each attached key still present
// when the run stopped waiting (cfg.Duration after the last deadline).
var errKeyNotExpired = errors.New("bench: key still present after its lease's deadline")

// LeaseExpire measures how fast the server expires leases. cfg.Total
// leases are granted by cfg.Clients workers, each lease with one key
// attached (a put of a cfg.ValSize value under a prefix unique to the
// run); each lease's deadline is the time its grant was answered plus the
// TTL granted. Then one client counts the keys left (a count-only range
// every opts.PollInterval, from shortly before the first deadline) until
// none is left, or until cfg.Duration (0: no limit) after the last
// deadline, when every key still there counts as an error and its lease is
// revoked.
//
// The report's latency samples are one per expired lease: the time from
// the k-th earliest deadline to the first poll that found at least k keys
// gone (the k-th key to go matched with the k-th deadline: the server may
// expire in another order, but the sum of the lags is the same). Its
// requests are leases expired, and its requests per second the expiry
// throughput: leases expired over the time from the first deadline until
// the last key was gone. If the server keeps pace with the deadlines, that
// is the rate the leases were granted at, a lower bound of what it could
// do; drain_us then stays near zero.
//
// Counters: "leases" (granted, each with its key), "ttl_seconds" (as
// granted), "setup_us" (time to grant and attach them all),
// "deadline_spread_us" (first to last deadline), "expired_during_setup"
// (deadlines that passed before the grant phase ended: the TTL was too
// short for the figures to mean what they say), "drain_us" (from the last
// deadline until every key was gone; 0 if none was left by then),
// "keys_left" and "polls".
//
// A grant or put that fails ends the run with its error, after revoking
// the leases granted so far.
func LeaseExpire(ctx context.Context, cfg Config, opts LeaseExpireOptions) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Total < 1 || opts.TTL < 1 || opts.PollInterval < 0 {
		return nil, fmt.Errorf("bench: lease-expire needs at least one lease (--total) and a TTL of at least 1s, got %d leases, TTL %d",
			cfg.Total, opts.TTL)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultExpirePollInterval
	}
	clients, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)

	prefix := fmt.Sprintf("lease-expire/%016x/", rand.Uint64())
	base := time.Now()
	setup, err := grantAttached(ctx, &cfg, clients, prefix, opts.TTL, base)
	if err != nil {
		revokeLeases(&cfg, clients, setup.granted())
		return nil, err
	}
	setupEnd := time.Since(base)

	deadlines := slices.Clone(setup.deadlines)
	slices.Sort(deadlines)
	first, last := time.Duration(deadlines[0]), time.Duration(deadlines[len(deadlines)-1])
	var duringSetup int64
	for _, d := range deadlines {
		if time.Duration(d) <= setupEnd {
			duringSetup++
		}
	}

	poll := &expiryPoll{
		cfg: &cfg, cli: clients[0], prefix: prefix, base: base,
		interval: opts.PollInterval, deadlines: deadlines,
	}
	waitUntil := time.Duration(1<<63 - 1)
	if cfg.Duration > 0 {
		waitUntil = last + cfg.Duration
	}
	left := poll.run(ctx, first-pollLead, waitUntil)

	elapsed := poll.lastGone - first
	if left > 0 {
		elapsed = poll.lastPoll - first
		if ctx.Err() == nil {
			for range left {
				poll.errs.add(errKeyNotExpired)
			}
		}
		// Whatever the server did not expire, the run cleans up.
		revokeLeases(&cfg, clients, setup.ids)
	}
	r := NewReport("lease-expire", poll.lag.Snapshot(), poll.errs.snapshot(), max(elapsed, 0))
	r.Endpoints, r.Conns, r.Clients, r.Unit = cfg.Endpoints, cfg.Conns, cfg.Clients, "leases"
	var drain time.Duration
	if left == 0 {
		drain = max(poll.lastGone-last, 0)
	}
	r.Counters = map[string]int64{
		"leases":               int64(len(deadlines)),
		"ttl_seconds":          setup.ttl.Load(),
		"setup_us":             setupEnd.Microseconds(),
		"deadline_spread_us":   (last - first).Microseconds(),
		"expired_during_setup": duringSetup,
		"drain_us":             drain.Microseconds(),
		"keys_left":            left,
		"polls":                poll.polls,
	}
	return r, nil
}

// attachedLeases is the outcome of the grant phase: lease i has ID ids[i]
// and its deadline at deadlines[i] nanoseconds after the run's base time.
type attachedLeases struct {
	ids       []int64
	deadlines []int64
	ttl       atomic.Int64 // the TTL granted, as the server reported it
}

// granted returns the IDs of the leases granted so far.
func (a *attachedLeases) granted() []int64 {
	var ids []int64
	for _, id := range a.ids {
		if id != 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

// grantAttached grants cfg.Total leases with cfg.Clients workers, each
// lease followed by a put of its key with the lease attached. On error it
// returns what it granted with the first error.
func grantAttached(ctx context.Context, cfg *Config, clients []*clientv3.Client, prefix string, ttl int64, base time.Time) (*attachedLeases, error) {
	a := &attachedLeases{ids: make([]int64, cfg.Total), deadlines: make([]int64, cfg.Total)}
	var (
		next, done atomic.Int64
		wg         sync.WaitGroup
		mu         sync.Mutex
		firstErr   error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		firstErr = cmpOr(firstErr, err)
	}
	gctx, stop := context.WithCancel(ctx)
	defer stop()
	bar := startProgress(cfg.Progress, cfg.ProgressMode, progressState{
		done: done.Load, total: cfg.Total, started: time.Now(),
	})
	seed := rand.Uint64()
	for w := range int(min(int64(cfg.Clients), cfg.Total)) {
		cli := clients[w%len(clients)]
		p := newPayload(cfg, seed, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for gctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= cfg.Total {
					return
				}
				rctx, cancel := context.WithTimeout(gctx, cfg.RequestTimeout)
				resp, err := cli.Grant(rctx, ttl)
				cancel()
				if err != nil {
					fail(fmt.Errorf("bench: grant lease: %w", err))
					stop()
					return
				}
				a.ids[i] = int64(resp.ID)
				a.deadlines[i] = int64(time.Since(base) + time.Duration(resp.TTL)*time.Second)
				a.ttl.Store(resp.TTL)
				rctx, cancel = context.WithTimeout(gctx, cfg.RequestTimeout)
				_, err = cli.Put(rctx, fmt.Sprintf("%s%010d", prefix, i), p.value(), clientv3.WithLease(resp.ID))
				cancel()
				if err != nil {
					if errors.Is(err, rpctypes.ErrLeaseNotFound) {
						err = fmt.Errorf("%w (the TTL of %ds ran out before its key was attached: give a longer TTL)", err, resp.TTL)
					}
					fail(fmt.Errorf("bench: attach a key to lease %x: %w", resp.ID, err))
					stop()
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	bar.stop()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return a, firstErr
}

// expiryPoll counts the keys left, one count-only range at a time, and
// turns the counts into expiry lags. Used by one goroutine.
type expiryPoll struct {
	cfg       *Config
	cli       *clientv3.Client
	prefix    string
	base      time.Time
	interval  time.Duration
	deadlines []int64 // sorted, nanoseconds after base

	lag                Histogram
	errs               errorTally
	polls              int64
	lastPoll, lastGone time.Duration // after base
}

// run polls from start until no key is left, until, or ctx is done (all
// durations after base), and returns the keys left at the last answer.
func (p *expiryPoll) run(ctx context.Context, start, until time.Duration) int64 {
	total := int64(len(p.deadlines))
	var gone int64 // keys seen gone so far; each has its lag recorded
	next := start
	for {
		if wait := next - time.Since(p.base); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return total - gone
			}
		}
		sent := time.Since(p.base)
		next = sent + p.interval
		rctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
		resp, err := p.cli.Get(rctx, p.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		// The answer is the state at some moment before it arrived:
		// timing it on arrival errs on the slow side, by a round trip.
		now := time.Since(p.base)
		p.polls++
		switch {
		case err != nil && ctx.Err() != nil:
			return total - gone
		case err != nil:
			p.errs.add(fmt.Errorf("count keys: %w", err))
		default:
			p.lastPoll = now
			// A count never rises again; if it seems to, keep what was seen.
			for ; gone < min(total, total-resp.Count); gone++ {
				p.lag.Record(now - time.Duration(p.deadlines[gone]))
				p.lastGone = now
			}
		}
		if gone == total || now >= until {
			return total - gone
		}
	}
}
