package lockelect

import (
	"bytes"
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
)

// electionServer is the Election service: a queue of candidate keys per
// election name, served through the client (see the package doc).
type electionServer struct {
	v3electionpb.UnimplementedElectionServer
	c *clientv3.Client
}

// Campaign queues the caller's key under "name/" with the given value and
// answers once it is the oldest there, with the header of a revision at
// which that held.
func (s *electionServer) Campaign(ctx context.Context, req *v3electionpb.CampaignRequest) (*v3electionpb.CampaignResponse, error) {
	ctx = outgoing(ctx)
	lease, err := leaseOrGrant(ctx, s.c, req.Lease)
	if err != nil {
		return nil, err
	}
	prefix := string(req.Name) + "/"
	key := ownKey(prefix, lease)

	resp, err := enqueue(ctx, s.c, key, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return s.c.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(req.Value), clientv3.WithLease(clientv3.LeaseID(lease)))).
			Else(clientv3.OpGet(key)).
			Commit()
	})
	if err != nil {
		return nil, err
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		// Already campaigning with this lease: keep the place in the queue
		// and post the new value.
		kv := resp.Responses[0].GetResponseRange().GetKvs()[0]
		rev = kv.CreateRevision
		if !bytes.Equal(kv.Value, req.Value) {
			if _, err := proclaim(ctx, s.c, key, rev, lease, req.Value); err != nil {
				if !errors.Is(err, ErrElectionNotLeader) {
					deleteIfOwned(ctx, s.c, key, rev)
				}
				return nil, err
			}
		}
	}

	hdr, err := waitTurn(ctx, s.c, prefix, key, rev)
	if errors.Is(err, errKeyLost) {
		return nil, ErrElectionNotLeader
	}
	if err != nil {
		// A caller that gave up leaves the queue. After other failures the
		// key stays, as in etcd, so campaigning again with the same lease
		// keeps the caller's place.
		if ctx.Err() != nil {
			deleteIfOwned(ctx, s.c, key, rev)
		}
		return nil, err
	}
	return &v3electionpb.CampaignResponse{
		Header: hdr,
		Leader: &v3electionpb.LeaderKey{Name: req.Name, Key: []byte(key), Rev: rev, Lease: lease},
	}, nil
}

// Proclaim sets the leader key's value if the key still has the LeaderKey's
// create revision, and answers ErrElectionNotLeader otherwise. A LeaderKey
// with lease 0 attaches the key to a new 60 s lease, as in etcd.
func (s *electionServer) Proclaim(ctx context.Context, req *v3electionpb.ProclaimRequest) (*v3electionpb.ProclaimResponse, error) {
	if req.Leader == nil {
		return nil, ErrMissingLeaderKey
	}
	ctx = outgoing(ctx)
	lease, err := leaseOrGrant(ctx, s.c, req.Leader.Lease)
	if err != nil {
		return nil, err
	}
	hdr, err := proclaim(ctx, s.c, string(req.Leader.Key), req.Leader.Rev, lease, req.Value)
	if err != nil {
		return nil, err
	}
	return &v3electionpb.ProclaimResponse{Header: hdr}, nil
}

// proclaim puts value at key, attached to lease, if key has create revision
// rev.
func proclaim(ctx context.Context, c *clientv3.Client, key string, rev, lease int64, value []byte) (*pb.ResponseHeader, error) {
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(value), clientv3.WithLease(clientv3.LeaseID(lease)))).
		Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, ErrElectionNotLeader
	}
	return resp.Header, nil
}

// Resign deletes the leader key if it still has the LeaderKey's create
// revision. Resigning a leadership already lost is not an error.
func (s *electionServer) Resign(ctx context.Context, req *v3electionpb.ResignRequest) (*v3electionpb.ResignResponse, error) {
	if req.Leader == nil {
		return nil, ErrMissingLeaderKey
	}
	key := string(req.Leader.Key)
	resp, err := s.c.Txn(outgoing(ctx)).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", req.Leader.Rev)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return nil, err
	}
	return &v3electionpb.ResignResponse{Header: resp.Header}, nil
}

// Leader returns the oldest key under "name/", or ErrElectionNoLeader.
func (s *electionServer) Leader(ctx context.Context, req *v3electionpb.LeaderRequest) (*v3electionpb.LeaderResponse, error) {
	resp, err := s.c.Get(outgoing(ctx), string(req.Name)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrElectionNoLeader
	}
	return &v3electionpb.LeaderResponse{Header: resp.Header, Kv: resp.Kvs[0]}, nil
}
