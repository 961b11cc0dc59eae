package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"
)

// maxErrorKinds bounds how many distinct error messages a report keeps; the
// rest are counted under otherErrors, so a flood of unique messages cannot
// grow memory.
const (
	maxErrorKinds = 32
	otherErrors   = "(other errors)"
)

// errorTally counts errors by message. Safe for concurrent use.
type errorTally struct {
	mu     sync.Mutex
	counts map[string]int64
}

func (t *errorTally) add(err error) {
	msg := err.Error()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts = make(map[string]int64)
	}
	if _, ok := t.counts[msg]; !ok && len(t.counts) >= maxErrorKinds {
		msg = otherErrors
	}
	t.counts[msg]++
}

func (t *errorTally) snapshot() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.counts) == 0 {
		return nil
	}
	m := make(map[string]int64, len(t.counts))
	for k, v := range t.counts {
		m[k] = v
	}
	return m
}

// request issues request number seq (0-based, unique in the run) and
// returns its error. ctx carries the request timeout.
type request func(ctx context.Context, seq int64) error

// newWorker builds worker i's request function on its connection; the
// returned close (may be nil) releases what the worker holds.
type newWorker func(i int, cli *clientv3.Client) (req request, close func(), err error)

// closedLoop runs cfg.Clients workers, each issuing one request at a time,
// until cfg.Total requests were issued, cfg.Duration passed or ctx is
// cancelled, and returns the report. Requests cut short because the run
// was stopping are not counted at all.
func closedLoop(ctx context.Context, cfg *Config, name string, clients []*clientv3.Client, mk newWorker) (*Report, error) {
	reqs := make([]request, cfg.Clients)
	for i := range reqs {
		req, closeFn, err := mk(i, clients[i%len(clients)])
		if err != nil {
			return nil, err
		}
		if closeFn != nil {
			defer closeFn()
		}
		reqs[i] = req
	}

	// stopCtx ends when the run should stop issuing requests; requests
	// already in flight use ctx, so that a time limit does not turn the
	// last requests into errors.
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	if cfg.Duration > 0 {
		stopCtx, stop = context.WithTimeout(stopCtx, cfg.Duration)
		defer stop()
	}
	var limiter *rate.Limiter
	if cfg.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(cfg.Rate), 1)
	}

	var (
		lat      Histogram
		errs     errorTally
		issued   atomic.Int64
		finished atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	bar := startProgress(cfg.Progress, cfg.ProgressMode, progressState{
		done: finished.Load, total: cfg.Total, limit: cfg.Duration, started: start,
	})
	for _, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for stopCtx.Err() == nil {
				seq := issued.Add(1) - 1
				if cfg.Total > 0 && seq >= cfg.Total {
					return
				}
				if limiter != nil && limiter.Wait(stopCtx) != nil {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
				t0 := time.Now()
				err := req(rctx, seq)
				took := time.Since(t0)
				cancel()
				switch {
				case err == nil:
					lat.Record(took)
				case ctx.Err() != nil:
					return // interrupted: neither a success nor a failure
				default:
					errs.add(err)
				}
				finished.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	bar.stop()

	r := NewReport(name, lat.Snapshot(), errs.snapshot(), elapsed)
	r.Endpoints, r.Conns, r.Clients = cfg.Endpoints, cfg.Conns, cfg.Clients
	return r, nil
}
