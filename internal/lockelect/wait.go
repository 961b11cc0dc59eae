package lockelect

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errWatchLost reports a watch channel that closed without an error or a
// cancelled context: the client is closing.
var errWatchLost = errors.New("lockelect: watch closed while waiting")

// waitTurn blocks until key, queued under prefix with create revision rev,
// is the oldest key under prefix, and returns the header of the read that
// saw it so. It returns errKeyLost as soon as key is gone or has another
// create revision, so a waiter whose lease ended learns it without waiting
// for the queue ahead.
//
// Each round is one linearizable read of the caller's key and its immediate
// predecessor; the round after that waits for either of the two to be
// deleted. Both facts a grant rests on (own key present, no older key) come
// from the same read, that is, hold at the same revision.
func waitTurn(ctx context.Context, c *clientv3.Client, prefix, key string, rev int64) (*pb.ResponseHeader, error) {
	for {
		ops := []clientv3.Op{clientv3.OpGet(key, clientv3.WithKeysOnly())}
		if rev > 1 {
			// Revision 1 has no key (a store's first write is revision 2),
			// and a max create revision of 0 would mean "no bound".
			opts := append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1), clientv3.WithKeysOnly())
			ops = append(ops, clientv3.OpGet(prefix, opts...))
		}
		resp, err := c.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, err
		}
		own := resp.Responses[0].GetResponseRange().GetKvs()
		if len(own) == 0 || own[0].CreateRevision != rev {
			return nil, errKeyLost
		}
		var pred []byte
		if len(ops) > 1 {
			if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 {
				pred = kvs[0].Key
			}
		}
		if pred == nil {
			return resp.Header, nil
		}
		if err := waitDelete(ctx, c, resp.Header.Revision+1, string(pred), key); err != nil {
			return nil, err
		}
	}
}

// waitDelete returns once pred or own is deleted at or after revision from,
// or once the history from there has been compacted (so the caller reads the
// state again instead).
func waitDelete(ctx context.Context, c *clientv3.Client, from int64, pred, own string) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	predCh := c.Watch(wctx, pred, clientv3.WithRev(from), clientv3.WithFilterPut())
	ownCh := c.Watch(wctx, own, clientv3.WithRev(from), clientv3.WithFilterPut())
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case wr, ok = <-predCh:
		case wr, ok = <-ownCh:
		}
		switch {
		case !ok:
			if err := ctx.Err(); err != nil {
				return err
			}
			return errWatchLost
		case wr.CompactRevision != 0:
			return nil
		case wr.Err() != nil:
			// Unwrapped: the caller answers with it, and etcd's text is
			// what clients match.
			return wr.Err()
		case len(wr.Events) > 0:
			return nil
		}
	}
}
