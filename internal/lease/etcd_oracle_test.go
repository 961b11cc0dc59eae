package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// oracleOp is one step of a lease scenario. Exactly one field is set.
type oracleOp struct {
	Grant  *pb.LeaseGrantRequest
	Revoke int64
	Put    *pb.PutRequest
	Delete string
	TTL    int64 // LeaseTimeToLive with keys of this lease
	Keys   bool  // every key with its lease
	Leases bool  // LeaseLeases
}

// oracleOutcome is what a user sees of a step (timing-dependent fields,
// such as the remaining TTL, left out).
type oracleOutcome struct {
	Err  string
	TTL  int64 // granted TTL
	Rev  int64 // the store's revision after the step
	Keys []string
}

// TestAgainstEtcd runs lease scenarios through embedded etcd and through
// the lessor wired to mvcc as the server wires it, and compares what a
// client would see: granted TTLs, errors, revisions, attached keys.
func TestAgainstEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	ops := []oracleOp{
		{Grant: &pb.LeaseGrantRequest{ID: 5, TTL: 1}}, // below the minimum (2 s at 100 ms × 10)
		{Grant: &pb.LeaseGrantRequest{ID: 6, TTL: -3}},
		{Grant: &pb.LeaseGrantRequest{ID: 5, TTL: 100}}, // exists
		{Grant: &pb.LeaseGrantRequest{ID: 7, TTL: MaxTTL + 1}},
		{Grant: &pb.LeaseGrantRequest{ID: 5, TTL: MaxTTL + 1}}, // TTL checked first
		{Revoke: 5},
		{Revoke: 6},
		{Revoke: 5}, // gone
		{Grant: &pb.LeaseGrantRequest{ID: 1, TTL: 1000}},
		{Grant: &pb.LeaseGrantRequest{ID: 2, TTL: 1000}},
		{Grant: &pb.LeaseGrantRequest{ID: -4, TTL: 1000}},
		{Put: &pb.PutRequest{Key: []byte("c"), Lease: 1}},
		{Put: &pb.PutRequest{Key: []byte("a"), Lease: 1}},
		{Put: &pb.PutRequest{Key: []byte("b"), Lease: 1}},
		{Put: &pb.PutRequest{Key: []byte("x"), Lease: 2}},
		{Put: &pb.PutRequest{Key: []byte("n"), Lease: -4}},
		{Put: &pb.PutRequest{Key: []byte("u"), Lease: 99}}, // unknown lease
		{Put: &pb.PutRequest{Key: []byte("c")}},            // detached
		{Put: &pb.PutRequest{Key: []byte("x"), Value: []byte("new"), IgnoreLease: true}},
		{Put: &pb.PutRequest{Key: []byte("b"), Lease: 2}}, // moved
		{TTL: 1},
		{TTL: 2},
		{TTL: -4},
		{TTL: 99},
		{Leases: true},
		{Delete: "x"},
		{TTL: 2},
		{Revoke: 2}, // deletes b
		{Keys: true},
		{Grant: &pb.LeaseGrantRequest{ID: 3, TTL: 50}},
		{Revoke: 3}, // no keys: no revision
		{Revoke: 1}, // deletes a
		{Revoke: -4},
		{Keys: true},
		{Leases: true},
	}

	// etcd keeps its default timing, so its minimum TTL is 2 s.
	conn := oracle.Start(t).Conn(t)
	etcd := &etcdSide{kv: pb.NewKVClient(conn), lease: pb.NewLeaseClient(conn)}
	m := newMember(t, Options{MinTTL: MinTTL(100*time.Millisecond, 10)})
	m.le.Promote(time.Second)

	for i, o := range ops {
		want := etcd.do(t, o)
		got := m.do(o)
		if fmt.Sprint(want) != fmt.Sprint(got) {
			t.Errorf("step %d %+v:\n etcd  %+v\n cairn %+v", i, o, want, got)
		}
	}
}

type etcdSide struct {
	kv    pb.KVClient
	lease pb.LeaseClient
}

// errName turns an error from either side into one comparable name.
func errName(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound), errors.Is(err, ErrLeaseNotFound), errors.Is(err, mvcc.ErrLeaseNotFound):
		return "lease not found"
	case errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseExist), errors.Is(err, ErrLeaseExists):
		return "lease exists"
	case errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseTTLTooLarge), errors.Is(err, ErrLeaseTTLTooLarge):
		return "TTL too large"
	}
	return err.Error()
}

func (e *etcdSide) rev(t *testing.T, ctx context.Context) int64 {
	resp, err := e.kv.Range(ctx, &pb.RangeRequest{Key: []byte("probe")})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func (e *etcdSide) do(t *testing.T, o oracleOp) oracleOutcome {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out oracleOutcome
	var err error
	switch {
	case o.Grant != nil:
		var resp *pb.LeaseGrantResponse
		if resp, err = e.lease.LeaseGrant(ctx, o.Grant); err == nil {
			out.TTL = resp.TTL
		}
	case o.Revoke != 0:
		_, err = e.lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: o.Revoke})
	case o.Put != nil:
		_, err = e.kv.Put(ctx, o.Put)
	case o.Delete != "":
		_, err = e.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte(o.Delete)})
	case o.TTL != 0:
		var resp *pb.LeaseTimeToLiveResponse
		if resp, err = e.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: o.TTL, Keys: true}); err == nil {
			if resp.TTL == -1 {
				err = ErrLeaseNotFound
			}
			out.TTL = resp.GrantedTTL
			for _, k := range resp.Keys {
				out.Keys = append(out.Keys, string(k))
			}
			slices.Sort(out.Keys) // etcd's order is a map's; cairn's is sorted
		}
	case o.Keys:
		var resp *pb.RangeResponse
		if resp, err = e.kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}); err == nil {
			for _, kv := range resp.Kvs {
				out.Keys = append(out.Keys, fmt.Sprintf("%s@%d", kv.Key, kv.Lease))
			}
		}
	case o.Leases:
		var resp *pb.LeaseLeasesResponse
		if resp, err = e.lease.LeaseLeases(ctx, &pb.LeaseLeasesRequest{}); err == nil {
			for _, l := range resp.Leases {
				out.Keys = append(out.Keys, fmt.Sprint(l.ID))
			}
			slices.Sort(out.Keys) // the order is by remaining TTL: timing
		}
	}
	out.Err = errName(err)
	out.Rev = e.rev(t, ctx)
	return out
}

func (m *member) do(o oracleOp) oracleOutcome {
	var out oracleOutcome
	var err error
	switch {
	case o.Grant != nil:
		m.apply(func(a *applier) { out.TTL, err = a.grant(o.Grant.ID, o.Grant.TTL) })
	case o.Revoke != 0:
		m.apply(func(a *applier) { _, err = a.revoke(o.Revoke) })
	case o.Put != nil:
		m.apply(func(a *applier) {
			err = a.do(func(w *mvcc.Write) error { _, err := w.Put(o.Put); return err })
		})
	case o.Delete != "":
		m.apply(func(a *applier) {
			err = a.do(func(w *mvcc.Write) error {
				_, err := w.DeleteRange(&pb.DeleteRangeRequest{Key: []byte(o.Delete)})
				return err
			})
		})
	case o.TTL != 0:
		var resp *pb.LeaseTimeToLiveResponse
		if resp, err = m.le.TimeToLive(&pb.LeaseTimeToLiveRequest{ID: o.TTL, Keys: true}); err == nil {
			out.TTL = resp.GrantedTTL
			for _, k := range resp.Keys {
				out.Keys = append(out.Keys, string(k))
			}
		}
	case o.Keys:
		resp, rerr := m.kv.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		if err = rerr; err == nil {
			for _, kv := range resp.Kvs {
				out.Keys = append(out.Keys, fmt.Sprintf("%s@%d", kv.Key, kv.Lease))
			}
		}
	case o.Leases:
		for _, id := range m.le.Leases() {
			out.Keys = append(out.Keys, fmt.Sprint(id))
		}
		slices.Sort(out.Keys)
	}
	out.Err = errName(err)
	out.Rev = m.kv.Rev()
	return out
}
