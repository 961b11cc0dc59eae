package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeaseOptions shapes the lease-keepalive workload.
type LeaseOptions struct {
	// Leases is the number of leases granted before the run; requests
	// renew them round-robin.
	Leases int
	// TTL is each lease's time to live in seconds.
	TTL int64
}

// errLeaseGone is counted when a keepalive answers that the lease no longer
// exists (a TTL of zero or less), which etcd reports without an error.
var errLeaseGone = errors.New("bench: lease expired or not found")

// LeaseKeepalive grants opts.Leases leases, then measures single keepalive
// round trips: each worker holds one LeaseKeepAlive stream and sends one
// renewal at a time on it. The leases are revoked at the end. The report's
// "leases" counter is the number of leases granted.
func LeaseKeepalive(ctx context.Context, cfg Config, opts LeaseOptions) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if opts.Leases < 1 || opts.TTL < 1 {
		return nil, fmt.Errorf("bench: lease-keepalive: need at least one lease and a TTL of at least 1s, got %d leases, TTL %d",
			opts.Leases, opts.TTL)
	}
	clients, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)

	ids, err := grantLeases(ctx, &cfg, clients, opts)
	defer revokeLeases(&cfg, clients, ids)
	if err != nil {
		return nil, err
	}

	r, err := closedLoop(ctx, &cfg, "lease-keepalive", clients, func(_ int, cli *clientv3.Client) (request, func(), error) {
		ka := &keepaliver{remote: pb.NewLeaseClient(cli.ActiveConnection()), parent: ctx}
		return func(ctx context.Context, seq int64) error {
			return ka.once(ctx, ids[seq%int64(len(ids))])
		}, ka.close, nil
	})
	if err != nil {
		return nil, err
	}
	r.Counters = map[string]int64{"leases": int64(len(ids))}
	return r, nil
}

// grantLeases grants opts.Leases leases using every client in parallel. On
// error it returns the leases granted so far with the error.
func grantLeases(ctx context.Context, cfg *Config, clients []*clientv3.Client, opts LeaseOptions) ([]int64, error) {
	ids := make([]int64, opts.Leases)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for w := range min(cfg.Clients, opts.Leases) {
		cli := clients[w%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) {
					return
				}
				gctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
				resp, err := cli.Grant(gctx, opts.TTL)
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, fmt.Errorf("bench: grant lease: %w", err))
					mu.Unlock()
					return
				}
				ids[i] = int64(resp.ID)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		granted := ids[:0]
		for _, id := range ids {
			if id != 0 {
				granted = append(granted, id)
			}
		}
		return granted, firstErr
	}
	return ids, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// revokeLeases revokes ids in parallel, best effort: a lease left behind
// expires after its TTL anyway. It does not use the run's context, so that
// an interrupted run still cleans up.
func revokeLeases(cfg *Config, clients []*clientv3.Client, ids []int64) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for w := range min(cfg.Clients, len(ids)) {
		cli := clients[w%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) {
					return
				}
				rctx, cancel := context.WithTimeout(context.Background(), cfg.RequestTimeout)
				_, err := cli.Revoke(rctx, clientv3.LeaseID(ids[i]))
				cancel()
				if err != nil && errors.Is(err, context.DeadlineExceeded) {
					return // the server is gone or stuck: leave the rest to expire
				}
			}
		}()
	}
	wg.Wait()
}

// keepaliver renews leases over one LeaseKeepAlive stream, one renewal at a
// time. Used by one worker only.
type keepaliver struct {
	remote pb.LeaseClient
	parent context.Context
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
}

// once renews lease id and waits for the answer. A gRPC stream's Recv
// cannot take a deadline, so the request timeout cancels the whole stream,
// and the next call opens a new one.
func (k *keepaliver) once(ctx context.Context, id int64) error {
	if k.stream == nil {
		sctx, cancel := context.WithCancel(k.parent)
		stream, err := k.remote.LeaseKeepAlive(sctx)
		if err != nil {
			cancel()
			return err
		}
		k.stream, k.cancel = stream, cancel
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Hour)
	}
	timer := time.AfterFunc(time.Until(deadline), k.cancel)
	err := k.stream.Send(&pb.LeaseKeepAliveRequest{ID: id})
	var resp *pb.LeaseKeepAliveResponse
	if err == nil {
		resp, err = k.stream.Recv()
	}
	if !timer.Stop() || err != nil {
		k.close()
		if err == nil || ctx.Err() != nil {
			return context.DeadlineExceeded
		}
		return err
	}
	if resp.TTL <= 0 {
		return errLeaseGone
	}
	return nil
}

func (k *keepaliver) close() {
	if k.cancel != nil {
		k.cancel()
	}
	k.stream, k.cancel = nil, nil
}
