package lockelect

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"google.golang.org/grpc"
)

// Observe streams the election's leader key each time it is set: first the
// current leader (or, with none, the first key created under the prefix),
// then every new value of that key until it is deleted, then the next
// leader, and so on until the caller goes away.
func (s *electionServer) Observe(req *v3electionpb.LeaderRequest, stream grpc.ServerStreamingServer[v3electionpb.LeaderResponse]) error {
	ctx := outgoing(stream.Context())
	prefix := string(req.Name) + "/"
	o := observer{c: s.c, stream: stream}
	for {
		hdr, kv, err := o.leader(ctx, prefix)
		if err != nil {
			return err
		}
		if err := o.send(hdr, kv); err != nil {
			return err
		}
		if err := o.follow(ctx, string(kv.Key), hdr.Revision+1); err != nil {
			return err
		}
	}
}

// observer is one Observe stream.
type observer struct {
	c      *clientv3.Client
	stream grpc.ServerStreamingServer[v3electionpb.LeaderResponse]
	// last is the last key version sent. After a compaction under its
	// watch, the observer reads the leader again and must not repeat it.
	last *mvccpb.KeyValue
}

// send streams kv unless it is the version sent last.
func (o *observer) send(hdr *pb.ResponseHeader, kv *mvccpb.KeyValue) error {
	if o.last != nil && string(o.last.Key) == string(kv.Key) && o.last.ModRevision == kv.ModRevision {
		return nil
	}
	if err := o.stream.Send(&v3electionpb.LeaderResponse{Header: hdr, Kv: kv}); err != nil {
		return err
	}
	o.last = kv
	return nil
}

// leader returns the oldest key under prefix, waiting for the first one to
// be created if there is none. The header's revision is the one the key was
// read or created at.
func (o *observer) leader(ctx context.Context, prefix string) (*pb.ResponseHeader, *mvccpb.KeyValue, error) {
	for {
		resp, err := o.c.Get(ctx, prefix, clientv3.WithFirstCreate()...)
		if err != nil {
			return nil, nil, err
		}
		if len(resp.Kvs) > 0 {
			return resp.Header, resp.Kvs[0], nil
		}
		hdr, kv, err := firstPut(ctx, o.c, prefix, resp.Header.Revision+1)
		if err != nil || kv != nil {
			return hdr, kv, err
		}
		// Compacted under the watch: read again.
	}
}

// firstPut waits for the first key put under prefix at or after revision
// from. It returns no key and no error if that history was compacted.
func firstPut(ctx context.Context, c *clientv3.Client, prefix string, from int64) (*pb.ResponseHeader, *mvccpb.KeyValue, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := c.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithFilterDelete())
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return nil, nil, nil
		}
		if err := wr.Err(); err != nil {
			return nil, nil, err
		}
		if len(wr.Events) > 0 {
			kv := wr.Events[0].Kv
			// The response may span several revisions; the header is
			// pinned to the put's own.
			hdr := &pb.ResponseHeader{
				ClusterId: wr.Header.ClusterId,
				MemberId:  wr.Header.MemberId,
				Revision:  kv.ModRevision,
				RaftTerm:  wr.Header.RaftTerm,
			}
			return hdr, kv, nil
		}
	}
	return nil, nil, watchEnd(ctx)
}

// follow streams every new value of key from revision from on and returns
// nil once the key is deleted or the history under the watch is compacted:
// either way the caller reads the leader again.
func (o *observer) follow(ctx context.Context, key string, from int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range o.c.Watch(wctx, key, clientv3.WithRev(from)) {
		if wr.CompactRevision != 0 {
			return nil
		}
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return nil
			}
			if err := o.send(wr.Header, ev.Kv); err != nil {
				return err
			}
		}
	}
	return watchEnd(ctx)
}

// watchEnd is the error for a watch channel that closed: the caller's
// cancellation, or the client closing.
func watchEnd(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return errWatchLost
}
