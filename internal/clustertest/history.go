package clustertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"

	"github.com/cairn-db/cairn/internal/server"
	"github.com/cairn-db/cairn/tests/kit"
)

// History records the operations clients run against a cluster, with the
// real time of their call and return, for a linearizability check.
type History struct {
	start time.Time

	mu   sync.Mutex
	ops  []porcupine.Operation
	seqs []serialRead
}

// serialRead is a serializable read: not linearizable, but it must return
// the key exactly as it was at the revision it reports.
type serialRead struct {
	member string
	key    int
	kv     kit.KV
	rev    int64
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{start: time.Now()} }

func (h *History) now() int64 { return int64(time.Since(h.start)) }

// definite reports whether err says a write certainly did not happen (it
// was refused before reaching the log).
func definite(err error) bool {
	for _, e := range []error{raft.ErrProposalDropped, server.ErrTooManyRequests, server.ErrRequestTooLarge, server.ErrNoSpace} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Do runs in against s for client, and records it: a read that failed is
// left out (it had no effect), a write that failed is recorded with an
// unknown outcome unless the error says it never reached the log.
func (h *History) Do(ctx context.Context, client int, s *server.Server, in kit.Input) error {
	call := h.now()
	out, err := run(ctx, s, in)
	ret := h.now()
	if err != nil {
		if in.Op == kit.OpGet || definite(err) {
			return err
		}
		out, ret = kit.Output{Unknown: true}, math.MaxInt64
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	h.mu.Unlock()
	return err
}

// SerializableGet reads key from s without a read-index round and records
// the answer for CheckSerializable.
func (h *History) SerializableGet(ctx context.Context, name string, s *server.Server, key int) error {
	r, err := s.Range(ctx, &pb.RangeRequest{Key: []byte(kit.Key(key)), Serializable: true})
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.seqs = append(h.seqs, serialRead{member: name, key: key, kv: kvOf(r), rev: r.Header.Revision})
	h.mu.Unlock()
	return nil
}

func kvOf(r *pb.RangeResponse) kit.KV {
	if len(r.Kvs) == 0 {
		return kit.KV{}
	}
	kv := r.Kvs[0]
	return kit.KV{Value: string(kv.Value), Create: kv.CreateRevision, Mod: kv.ModRevision, Version: kv.Version, Exists: true}
}

func run(ctx context.Context, s *server.Server, in kit.Input) (kit.Output, error) {
	key := []byte(kit.Key(in.Key))
	switch in.Op {
	case kit.OpPut:
		r, err := s.Put(ctx, &pb.PutRequest{Key: key, Value: []byte(in.Value)})
		if err != nil {
			return kit.Output{}, err
		}
		return kit.Output{Rev: r.Header.Revision}, nil
	case kit.OpGet:
		r, err := s.Range(ctx, &pb.RangeRequest{Key: key})
		if err != nil {
			return kit.Output{}, err
		}
		return kit.Output{Rev: r.Header.Revision, KV: kvOf(r)}, nil
	case kit.OpCAS:
		cmp := &pb.Compare{Key: key, Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_Value{Value: []byte(in.Expect)}}
		if in.Expect == "" { // the key must be absent (see kit.OpCAS)
			cmp = &pb.Compare{Key: key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}
		}
		r, err := s.Txn(ctx, &pb.TxnRequest{
			Compare: []*pb.Compare{cmp},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: []byte(in.Value)}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}}},
		})
		if err != nil {
			return kit.Output{}, err
		}
		out := kit.Output{Rev: r.Header.Revision, Succeeded: r.Succeeded}
		if !r.Succeeded {
			out.KV = kvOf(r.Responses[0].GetResponseRange())
		}
		return out, nil
	case kit.OpDelete:
		r, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: key})
		if err != nil {
			return kit.Output{}, err
		}
		return kit.Output{Rev: r.Header.Revision, Deleted: r.Deleted}, nil
	}
	return kit.Output{}, fmt.Errorf("unknown op %d", in.Op)
}

// Len returns how many operations were recorded, and how many of them have
// an unknown outcome.
func (h *History) Len() (ops, unknown int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, op := range h.ops {
		if op.Output.(kit.Output).Unknown {
			unknown++
		}
	}
	return len(h.ops), unknown
}

// Resolve settles the outcome of the writes whose outcome is unknown (see
// kit.Resolve) from the converged store's history as s holds it, which must
// not be compacted.
func (h *History) Resolve(t testing.TB, s *server.Server) {
	t.Helper()
	applied := map[string]int64{} // value → revision it was written at
	last := s.Rev()
	for rev := int64(2); rev <= last; rev++ {
		r, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("key"), RangeEnd: []byte("kez"), Revision: rev, Serializable: true})
		if err != nil {
			t.Fatalf("reading the history at revision %d: %v", rev, err)
		}
		for _, kv := range r.Kvs {
			if kv.ModRevision == rev {
				applied[string(kv.Value)] = rev
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = kit.Resolve(h.ops, applied)
}

// CheckLinearizable checks the history against kit.Model (see
// kit.CheckLinearizable): a violation fails the test with the seed, the
// history and porcupine's visualization in a temporary file.
func (h *History) CheckLinearizable(t testing.TB, seed uint64) {
	t.Helper()
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	kit.CheckLinearizable(t, ops, seed)
}

// CheckSerializable checks each serializable read against the key's
// history read back from s: the read must report the key exactly as it was
// at the revision it reports. Reads at compacted revisions are skipped.
func (h *History) CheckSerializable(t testing.TB, seed uint64, s *server.Server) {
	t.Helper()
	h.mu.Lock()
	reads := append([]serialRead(nil), h.seqs...)
	h.mu.Unlock()
	for _, r := range reads {
		got, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte(kit.Key(r.key)), Revision: r.rev, Serializable: true})
		if err != nil {
			continue // compacted
		}
		if want := kvOf(got); want != r.kv {
			t.Fatalf("seed %d: serializable read of %s on %s at revision %d returned %s; the key was %s then",
				seed, kit.Key(r.key), r.member, r.rev, kit.DescribeKV(r.kv), kit.DescribeKV(want))
		}
	}
}
