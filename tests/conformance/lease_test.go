package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"
)

// leaseSide is one server of the lease comparison, driven through
// clientv3 (and, for what clientv3 cannot ask, the raw Lease stub on its
// connection). Leases whose ID the server picked are known by a name, so
// the two sides' different IDs compare equal.
type leaseSide struct {
	name string
	c    *clientv3.Client
	ids  map[string]int64 // name → this side's lease ID
	// restart stops the server and starts it again on its data directory,
	// with a new client.
	restart func()
}

func newLeaseSide(t *testing.T, name string, start starter) *leaseSide {
	t.Helper()
	dir := t.TempDir()
	s := &leaseSide{name: name, ids: map[string]int64{}}
	var stop func()
	up := func() {
		var addr string
		addr, stop = start(t, dir)
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: startTimeout})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s.c = c
	}
	down := func() {
		if s.c != nil {
			s.c.Close()
			stop()
			s.c = nil
		}
	}
	up()
	t.Cleanup(down)
	s.restart = func() { down(); up() }
	return s
}

// leaseOp is one step: exactly one of its fields is set. Lease names
// starting with "#" are literal IDs (#66 is lease 0x66); others name a
// lease the server picked the ID of at its Grant.
type leaseOp struct {
	Grant      string // a lease to grant, with TTL
	TTL        int64
	Revoke     string
	KeepAlive  string // KeepAliveOnce
	TimeToLive string // with keys
	Leases     bool
	Put        string // key, with lease Lease ("" for none)
	Lease      string
	Get        string // a key prefix
	CompareTxn string // txn: key's lease = Lease
	// Stream keeps Lease alive through clientv3's keep-alive stream and
	// reports the first answer.
	Stream string
	// WaitGone waits until no key has the prefix (a lease expired).
	WaitGone string
	// Restart restarts the server on its data directory.
	Restart bool
}

// id returns this side's ID for a lease name.
func (s *leaseSide) id(name string) int64 {
	if strings.HasPrefix(name, "#") {
		var id int64
		fmt.Sscanf(name[1:], "%x", &id)
		return id
	}
	return s.ids[name]
}

// leaseName turns one of this side's IDs back into its name.
func (s *leaseSide) leaseName(id int64) string {
	for n, v := range s.ids {
		if v == id {
			return n
		}
	}
	return fmt.Sprintf("#%x", id)
}

// errText is what a client sees of an error: its gRPC code and message.
func errText(err error) string {
	if err == nil {
		return ""
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return fmt.Sprintf("%v: %s", ee.Code(), ee.Error())
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%v: %s", st.Code(), st.Message())
	}
	return err.Error()
}

// do runs o and describes its outcome, header revisions included but
// nothing else of the header; remaining TTLs, which depend on timing, are
// reported only as whether they are in (0, granted].
func (s *leaseSide) do(ctx context.Context, o leaseOp) string {
	c := s.c
	switch {
	case o.Grant != "":
		id := int64(0)
		if strings.HasPrefix(o.Grant, "#") {
			id = s.id(o.Grant)
		}
		r, err := pb.NewLeaseClient(c.ActiveConnection()).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: o.TTL})
		if err != nil {
			return "error " + errText(rpctypes.Error(err))
		}
		if id == 0 {
			if r.ID <= 0 {
				return fmt.Sprintf("server-chosen ID %d not positive", r.ID)
			}
			s.ids[o.Grant] = r.ID
		} else if r.ID != id {
			return fmt.Sprintf("granted ID %x for %x", r.ID, id)
		}
		return fmt.Sprintf("granted TTL %d rev %d error %q", r.TTL, r.Header.Revision, r.Error)
	case o.Revoke != "":
		r, err := c.Revoke(ctx, clientv3.LeaseID(s.id(o.Revoke)))
		if err != nil {
			return "error " + errText(err)
		}
		return fmt.Sprintf("revoked rev %d", r.Header.Revision)
	case o.KeepAlive != "":
		r, err := c.KeepAliveOnce(ctx, clientv3.LeaseID(s.id(o.KeepAlive)))
		if err != nil {
			return "error " + errText(err)
		}
		return fmt.Sprintf("kept %s TTL %d", s.leaseName(int64(r.ID)), r.TTL)
	case o.TimeToLive != "":
		r, err := c.TimeToLive(ctx, clientv3.LeaseID(s.id(o.TimeToLive)), clientv3.WithAttachedKeys())
		if err != nil {
			return "error " + errText(err)
		}
		// etcd lists the keys in its map's order: only the set counts.
		keys := keyStrings(r.Keys)
		slices.Sort(keys)
		ttl := fmt.Sprint(r.TTL)
		if r.TTL > 0 && r.TTL <= r.GrantedTTL {
			ttl = "in (0, granted]"
		}
		return fmt.Sprintf("lease %s TTL %s granted %d keys %q rev %d", s.leaseName(int64(r.ID)), ttl, r.GrantedTTL, keys, r.Revision)
	case o.Leases:
		r, err := c.Leases(ctx)
		if err != nil {
			return "error " + errText(err)
		}
		var names []string
		for _, l := range r.Leases {
			names = append(names, s.leaseName(int64(l.ID)))
		}
		slices.Sort(names)
		return fmt.Sprintf("leases %q rev %d", names, r.Revision)
	case o.Put != "":
		r, err := c.Put(ctx, o.Put, "v", clientv3.WithLease(clientv3.LeaseID(s.id(o.Lease))))
		if err != nil {
			return "error " + errText(err)
		}
		return fmt.Sprintf("put rev %d", r.Header.Revision)
	case o.Get != "":
		r, err := c.Get(ctx, o.Get, clientv3.WithPrefix())
		if err != nil {
			return "error " + errText(err)
		}
		var kvs []string
		for _, kv := range r.Kvs {
			kvs = append(kvs, fmt.Sprintf("%s@%d/%s", kv.Key, kv.ModRevision, s.leaseName(kv.Lease)))
		}
		return fmt.Sprintf("kvs %v rev %d", kvs, r.Header.Revision)
	case o.CompareTxn != "":
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(o.CompareTxn), "=", clientv3.LeaseID(s.id(o.Lease)))).Commit()
		if err != nil {
			return "error " + errText(err)
		}
		return fmt.Sprintf("txn succeeded %v rev %d", r.Succeeded, r.Header.Revision)
	case o.Stream != "":
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := c.KeepAlive(ctx, clientv3.LeaseID(s.id(o.Stream)))
		if err != nil {
			return "error " + errText(err)
		}
		r, ok := <-ch
		if !ok {
			return "keep-alive stream closed"
		}
		return fmt.Sprintf("stream kept %s TTL %d", s.leaseName(int64(r.ID)), r.TTL)
	case o.Restart:
		s.restart()
		return "restarted"
	case o.WaitGone != "":
		deadline := time.Now().Add(time.Minute)
		for {
			r, err := c.Get(ctx, o.WaitGone, clientv3.WithPrefix())
			if err != nil {
				return "error " + errText(err)
			}
			if len(r.Kvs) == 0 {
				return fmt.Sprintf("gone at rev %d", r.Header.Revision)
			}
			if time.Now().After(deadline) {
				return "keys still there after a minute"
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return "empty op"
}

// TestLeaseAgainstEtcd sends the same Lease RPCs (and the KV requests that
// attach keys to leases) through clientv3 to embedded etcd and to a full
// cairn member, and compares what the client sees: granted TTLs, errors
// (code and message), attached keys, revisions, expiry.
func TestLeaseAgainstEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd and a cairn member")
	}
	sides := []*leaseSide{newLeaseSide(t, "etcd", startEtcd), newLeaseSide(t, "cairn", startCairn)}

	ops := []leaseOp{
		{Grant: "a", TTL: 600},
		{Grant: "b", TTL: 600},
		{Grant: "#66", TTL: 0}, // raised to the minimum TTL (1 s at a 100 ms election timeout)
		{Revoke: "#66"},
		{Grant: "#67", TTL: -5},
		{Revoke: "#67"},
		{Grant: "#68", TTL: 500},
		{Grant: "#68", TTL: 500},           // exists
		{Grant: "#69", TTL: 9_000_000_001}, // too large
		{Grant: "z", TTL: 9_000_000_001},   // too large, no ID picked
		{Put: "k/1", Lease: "a"},
		{Put: "k/2", Lease: "a"},
		{Put: "k/3", Lease: "a"},
		{Put: "k/4", Lease: "b"},
		{Put: "k/5", Lease: "#68"},
		{Put: "k/6", Lease: "#99"}, // unknown lease
		{Put: "k/2"},               // detached
		{Put: "k/4", Lease: "a"},   // moved from b
		{TimeToLive: "a"},
		{TimeToLive: "b"},
		{TimeToLive: "#68"},
		{TimeToLive: "#99"},
		{TimeToLive: "#0"},
		{Leases: true},
		{KeepAlive: "a"},
		{KeepAlive: "#68"},
		{KeepAlive: "#99"},
		{KeepAlive: "#0"},
		{Stream: "b"},
		{Stream: "#99"},
		{CompareTxn: "k/1", Lease: "a"},
		{CompareTxn: "k/2", Lease: "a"},
		{CompareTxn: "k/2", Lease: "#0"},
		{CompareTxn: "k/4", Lease: "b"},
		{Get: "k/"},
		{Revoke: "a"}, // k/1, k/3, k/4 at one revision
		{Get: "k/"},
		{Revoke: "a"},
		{Revoke: "#0"},
		{Revoke: "b"}, // no keys left: no revision
		{TimeToLive: "a"},
		{KeepAlive: "a"},
		{Leases: true},
		{Grant: "#70", TTL: 1},
		{Put: "e/1", Lease: "#70"},
		{Put: "e/2", Lease: "#70"},
		{WaitGone: "e/"},
		{TimeToLive: "#70"},
		{Leases: true},
		{Get: "k/"},
		{Grant: "c", TTL: 300},
		{Put: "r/1", Lease: "c"},
		{Restart: true},
		{Leases: true},
		{TimeToLive: "c"},
		{TimeToLive: "#68"},
		{KeepAlive: "c"},
		{Put: "r/2", Lease: "#68"},
		{Revoke: "#68"},
		{Get: "k/"},
		{Get: "r/"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, o := range ops {
		want, got := sides[0].do(ctx, o), sides[1].do(ctx, o)
		t.Logf("step %d: %s", i, got)
		if want != got {
			t.Errorf("step %d %+v:\n etcd  %s\n cairn %s", i, o, want, got)
		}
	}
}

func keyStrings(keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = string(k)
	}
	return out
}
