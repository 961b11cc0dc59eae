package lockelect

import (
	"context"
	"errors"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// lockServer is the Lock service: a queue of keys per lock name, served
// through the client (see the package doc).
type lockServer struct {
	v3lockpb.UnimplementedLockServer
	c *clientv3.Client
}

// Lock queues the caller's key under "name/" and answers once it is the
// oldest there, with the header of a revision at which that held.
func (s *lockServer) Lock(ctx context.Context, req *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	ctx = outgoing(ctx)
	lease, err := leaseOrGrant(ctx, s.c, req.Lease)
	if err != nil {
		return nil, err
	}
	prefix := string(req.Name) + "/"
	key := ownKey(prefix, lease)

	// One transaction queues the key (or finds it queued by an earlier call
	// with the same lease) and reads the head of the queue, so an
	// uncontended lock costs one round.
	head := clientv3.OpGet(prefix, clientv3.WithFirstCreate()...)
	resp, err := enqueue(ctx, s.c, key, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return s.c.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, "", clientv3.WithLease(clientv3.LeaseID(lease))), head).
			Else(clientv3.OpGet(key), head).
			Commit()
	})
	if err != nil {
		return nil, err
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		// The compare failed, so the key existed at this revision.
		rev = resp.Responses[0].GetResponseRange().GetKvs()[0].CreateRevision
	}
	if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 && kvs[0].CreateRevision == rev {
		// The key exists (the transaction wrote or read it) and is the
		// oldest, at the transaction's revision.
		return &v3lockpb.LockResponse{Header: resp.Header, Key: []byte(key)}, nil
	}

	hdr, err := waitTurn(ctx, s.c, prefix, key, rev)
	if errors.Is(err, errKeyLost) {
		return nil, ErrSessionExpired
	}
	if err != nil {
		// Leave the queue, or the key would block everyone behind it for
		// as long as the lease lives.
		deleteIfOwned(ctx, s.c, key, rev)
		return nil, err
	}
	return &v3lockpb.LockResponse{Header: hdr, Key: []byte(key)}, nil
}

// Unlock deletes the given key. It succeeds whether or not the key exists.
func (s *lockServer) Unlock(ctx context.Context, req *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	resp, err := s.c.Delete(outgoing(ctx), string(req.Key))
	if err != nil {
		return nil, err
	}
	return &v3lockpb.UnlockResponse{Header: resp.Header}, nil
}
