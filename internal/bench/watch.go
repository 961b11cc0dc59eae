package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"
)

// WatchOptions shapes the watch-latency workload.
type WatchOptions struct {
	// Streams is the number of gRPC watch streams, spread over the
	// connections; WatchersPerStream watchers share each stream.
	Streams, WatchersPerStream int
	// PrevKV asks for the previous key-value with each event.
	PrevKV bool
}

// latencyShards spreads the watchers' latency recording over several
// histograms, because one event wakes every watcher at once and they would
// all queue on one mutex.
const latencyShards = 64

// maxWatchPuts bounds the puts of one watch-latency run: the start time of
// every put is kept until its events arrive, 8 bytes each.
const maxWatchPuts = 10_000_000

// errEventMissing is counted once for each event a watcher had not received
// when the run gave up waiting (RequestTimeout after the last put).
var errEventMissing = errors.New("bench: watch event not received in time")

// WatchLatency measures how long a write takes to reach every watcher of
// its key. It opens opts.Streams*opts.WatchersPerStream watchers on one key
// unique to the run, then one client puts that key cfg.Total times, one put
// at a time, at most cfg.Rate puts per second; cfg.Clients is not used.
// Each event's latency runs from the start of its put to its arrival at a
// watcher, so the report has one sample per event and watcher, and its
// requests per second are events delivered per second. Its counters are
// "watchers", "puts" (successful) and "events_expected".
func WatchLatency(ctx context.Context, cfg Config, opts WatchOptions) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Total < 1 || cfg.Total > maxWatchPuts {
		return nil, fmt.Errorf("bench: watch-latency needs a total number of puts between 1 and %d, got %d", maxWatchPuts, cfg.Total)
	}
	if opts.Streams < 1 || opts.WatchersPerStream < 1 {
		return nil, fmt.Errorf("bench: watch-latency needs at least one stream and one watcher per stream, got %d and %d",
			opts.Streams, opts.WatchersPerStream)
	}
	clients, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)

	wctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	key := fmt.Sprintf("watch-latency/%016x", rand.Uint64())
	base := time.Now()
	run := &watchRun{
		starts:  make([]atomic.Int64, cfg.Total),
		base:    base,
		arrived: make(chan struct{}),
	}
	run.target.Store(1<<63 - 1)

	chans, closeWatchers, err := openWatchers(wctx, &cfg, clients, key, opts)
	defer closeWatchers()
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for i, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run.receive(ch, &run.lat[i%latencyShards])
		}()
	}

	start := time.Now()
	puts := run.put(ctx, &cfg, clients[0], key)
	expected := puts * int64(len(chans))
	run.target.Store(expected)
	if run.received.Load() >= expected {
		run.signal()
	}
	timer := time.NewTimer(cfg.RequestTimeout)
	select {
	case <-run.arrived:
	case <-timer.C:
	case <-ctx.Done():
	}
	timer.Stop()
	elapsed := time.Since(start)
	run.stopping.Store(true)
	stopWatching()
	wg.Wait()

	var lat Histogram
	for i := range run.lat {
		lat.Merge(&run.lat[i])
	}
	if missing := expected - run.received.Load(); missing > 0 && ctx.Err() == nil {
		for range missing {
			run.errs.add(errEventMissing)
		}
	}
	r := NewReport("watch-latency", lat.Snapshot(), run.errs.snapshot(), elapsed)
	r.Endpoints, r.Conns, r.Clients, r.Unit = cfg.Endpoints, cfg.Conns, 1, "events"
	r.Counters = map[string]int64{"watchers": int64(len(chans)), "puts": puts, "events_expected": expected}
	return r, nil
}

// watchRun is the state shared by the putter and the watchers of one run.
type watchRun struct {
	starts   []atomic.Int64 // put seq -> start, nanoseconds since base
	base     time.Time
	lat      [latencyShards]Histogram
	errs     errorTally
	issued   atomic.Int64
	received atomic.Int64
	target   atomic.Int64 // events expected; max int64 until the puts end
	stopping atomic.Bool  // set before the watches are cancelled
	arrived  chan struct{}
	once     sync.Once
}

func (w *watchRun) signal() { w.once.Do(func() { close(w.arrived) }) }

// put writes key cfg.Total times, each value carrying its sequence number,
// and returns how many puts succeeded.
func (w *watchRun) put(ctx context.Context, cfg *Config, cli *clientv3.Client, key string) int64 {
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
	bar := startProgress(cfg.Progress, cfg.ProgressMode, progressState{
		done: w.issued.Load, total: cfg.Total, limit: cfg.Duration, started: time.Now(),
	})
	defer bar.stop()
	val := make([]byte, max(cfg.ValSize, 8))
	var ok int64
	for seq := range cfg.Total {
		if stopCtx.Err() != nil || (limiter != nil && limiter.Wait(stopCtx) != nil) {
			break
		}
		binary.BigEndian.PutUint64(val, uint64(seq))
		w.starts[seq].Store(int64(time.Since(w.base)))
		rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
		_, err := cli.Put(rctx, key, string(val))
		cancel()
		w.issued.Add(1)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			w.errs.add(fmt.Errorf("put: %w", err))
			continue
		}
		ok++
	}
	return ok
}

// receive records the latency of every event arriving on ch until the
// watch ends.
func (w *watchRun) receive(ch clientv3.WatchChan, lat *Histogram) {
	for resp := range ch {
		if err := resp.Err(); err != nil {
			if w.stopping.Load() {
				return // the run cancelled the watch
			}
			w.errs.add(fmt.Errorf("watch: %w", err))
			continue
		}
		now := int64(time.Since(w.base))
		for _, ev := range resp.Events {
			if len(ev.Kv.Value) < 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(ev.Kv.Value)
			if seq >= uint64(len(w.starts)) {
				continue
			}
			lat.Record(time.Duration(now - w.starts[seq].Load()))
			if w.received.Add(1) >= w.target.Load() {
				w.signal()
			}
		}
	}
}

// openWatchers opens every watcher and waits until the server has created
// each one, so no put happens before all watchers are in place. The
// returned close releases the watch streams; call it even on error.
func openWatchers(ctx context.Context, cfg *Config, clients []*clientv3.Client, key string, opts WatchOptions) ([]clientv3.WatchChan, func(), error) {
	watchOpts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if opts.PrevKV {
		watchOpts = append(watchOpts, clientv3.WithPrevKV())
	}
	watchers := make([]clientv3.Watcher, opts.Streams)
	chans := make([]clientv3.WatchChan, opts.Streams*opts.WatchersPerStream)
	closeFn := func() {
		for _, w := range watchers {
			if w != nil {
				w.Close()
			}
		}
	}
	errs := make(chan error, opts.Streams)
	for s := range opts.Streams {
		// A Watcher of its own gives each stream its own gRPC stream;
		// watchers on one Watcher and context share one.
		watchers[s] = clientv3.NewWatcher(clients[s%len(clients)])
		go func() {
			for j := range opts.WatchersPerStream {
				ch := watchers[s].Watch(ctx, key, watchOpts...)
				chans[s*opts.WatchersPerStream+j] = ch
				if err := awaitCreated(ch, cfg.RequestTimeout); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range opts.Streams {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return chans, closeFn, first
}

func awaitCreated(ch clientv3.WatchChan, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case resp, ok := <-ch:
		switch {
		case !ok:
			return errors.New("bench: watch closed before it was created")
		case resp.Err() != nil:
			return fmt.Errorf("bench: create watch: %w", resp.Err())
		case !resp.Created:
			return errors.New("bench: watch sent events before it was created")
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("bench: create watch: %w", context.DeadlineExceeded)
	}
}
