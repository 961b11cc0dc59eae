package lockelect

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// The services' own errors, with etcd's text: clients match them by message.
var (
	// ErrSessionExpired is Lock's answer when the caller's key disappeared
	// (its lease expired or was revoked, or the key was deleted) before the
	// lock could be granted.
	ErrSessionExpired = errors.New("mutex: session is expired")
	// ErrElectionNotLeader is Proclaim's answer when the LeaderKey no longer
	// leads, and Campaign's when the caller's key disappeared while waiting.
	ErrElectionNotLeader = errors.New("election: not leader")
	// ErrElectionNoLeader is Leader's answer when nobody campaigns.
	ErrElectionNoLeader = errors.New("election: no leader")
	// ErrMissingLeaderKey is Proclaim's and Resign's answer to a request
	// without a LeaderKey.
	ErrMissingLeaderKey = errors.New(`"leader" field must be provided`)
)

// errKeyLost reports that a waiter's own key is gone or was replaced; Lock
// and Campaign turn it into their etcd errors.
var errKeyLost = errors.New("lockelect: own key lost while waiting")

// defaultTTL is the TTL, in seconds, of the lease granted for a request with
// lease 0; etcd's server grants the same.
const defaultTTL = 60

// releaseTimeout bounds the clean-up delete of a failed Lock or Campaign. If
// it does not finish in time the key stays until its lease ends, which is
// the bound the design relies on anyway.
const releaseTimeout = 10 * time.Second

// Register serves the Lock and Election services on gs, backed by c. c must
// reach the KV, Watch and Lease services of the same cluster (normally the
// member itself, over an in-process connection) and stay open while gs
// serves; Register does not close it. Call before gs starts serving.
func Register(gs grpc.ServiceRegistrar, c *clientv3.Client) {
	v3lockpb.RegisterLockServer(gs, NewLockServer(c))
	v3electionpb.RegisterElectionServer(gs, NewElectionServer(c))
}

// NewLockServer returns the Lock service backed by c (see Register), for
// callers that register it themselves, such as an HTTP gateway. It is safe
// for concurrent use.
func NewLockServer(c *clientv3.Client) v3lockpb.LockServer {
	return &lockServer{c: c}
}

// NewElectionServer returns the Election service backed by c (see Register),
// for callers that register it themselves. It is safe for concurrent use.
func NewElectionServer(c *clientv3.Client) v3electionpb.ElectionServer {
	return &electionServer{c: c}
}

// CallerCNKey is the metadata key that carries the common name of the
// caller's verified client certificate to the calls underneath, so that
// with client-certificate auth they run as the caller, as etcd's
// in-process client does. The services only pass it on: the member's API
// layer sets it on their incoming calls from the certificate it verified
// (removing any value a client sent), and trusts it only on calls from the
// member's own client (internal/embed's private socket), never from the
// network.
const CallerCNKey = "cairn-caller-cn"

// forwardedMD lists the incoming metadata that the calls underneath carry
// on: the auth token (as gRPC clients send it, and as etcd's HTTP gateway
// passes it on) and the caller's verified CN (CallerCNKey), so they run
// with the caller's permissions, and the require-leader flag, so a caller
// that asked to fail without a leader does.
var forwardedMD = []string{
	rpctypes.TokenFieldNameGRPC,
	rpctypes.TokenFieldNameSwagger,
	CallerCNKey,
	rpctypes.MetadataRequireLeaderKey,
}

// outgoing returns ctx with the caller's forwarded metadata set for the
// calls made through the client.
func outgoing(ctx context.Context) context.Context {
	in, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	out := metadata.MD{}
	for _, k := range forwardedMD {
		if v := in.Get(k); len(v) > 0 {
			out.Set(k, v...)
		}
	}
	if len(out) == 0 {
		return ctx
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// leaseOrGrant returns id, or for id 0 a new lease with defaultTTL that
// nobody keeps alive, as etcd's server does.
func leaseOrGrant(ctx context.Context, c *clientv3.Client, id int64) (int64, error) {
	if id != 0 {
		return id, nil
	}
	resp, err := c.Grant(ctx, defaultTTL)
	if err != nil {
		return 0, err
	}
	return int64(resp.ID), nil
}

// ownKey returns the key a caller with lease holds under prefix.
func ownKey(prefix string, lease int64) string {
	return prefix + strconv.FormatInt(lease, 16)
}

// deleteIfOwned deletes key if it still has create revision rev, after the
// request that queued it failed. It runs on after ctx is cancelled (the
// usual reason for failing) but keeps ctx's metadata.
func deleteIfOwned(ctx context.Context, c *clientv3.Client, key string, rev int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	// A failure leaves the key to its lease; there is nobody to tell.
	_, _ = c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).
		Commit()
}

// enqueue runs txn, the transaction that puts the caller's key in a queue,
// without letting the caller cut it short: a cancellation that arrives while
// the write is in flight would otherwise leave a key in the queue that
// nobody waits for, blocking everyone behind it for as long as its lease
// lives. Once the outcome is known, a caller that gave up in the meantime
// leaves the queue again (only if this call put the key there) and gets its
// context's error.
func enqueue(ctx context.Context, c *clientv3.Client, key string, txn func(context.Context) (*clientv3.TxnResponse, error)) (*clientv3.TxnResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	resp, err := txn(tctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if ctx.Err() != nil {
		if resp.Succeeded {
			deleteIfOwned(ctx, c, key, resp.Header.Revision)
		}
		return nil, ctx.Err()
	}
	return resp, nil
}
