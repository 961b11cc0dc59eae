package server

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
)

type countingTransport struct{ sent int }

func (ct *countingTransport) Send(msgs []*raftpb.Message) { ct.sent += len(msgs) }

// TestHeartbeatWatch checks etcd's rule for a late heartbeat: more than
// two intervals after the previous one to the same peer, a new leadership
// starting afresh.
func TestHeartbeatWatch(t *testing.T) {
	em := newEtcdMetrics()
	tr := &countingTransport{}
	now := time.Unix(1000, 0)
	interval := 100 * time.Millisecond
	hw := em.watchHeartbeats(tr, interval, func() time.Time { return now }, slog.New(slog.DiscardHandler))
	hb := func(to uint64) { hw.Send([]*raftpb.Message{{Type: raftpb.MsgHeartbeat.Enum(), To: &to}}) }
	late := func() float64 { return counterValue(t, em.heartbeatSendFailures) }

	hb(2) // the first heartbeat to a peer is never late
	hb(3)
	now = now.Add(2 * interval)
	hb(2) // exactly two intervals: on time
	if got := late(); got != 0 {
		t.Fatalf("late heartbeats after on-time ones: %v", got)
	}
	now = now.Add(2*interval + time.Millisecond)
	hb(2)
	if got := late(); got != 1 {
		t.Fatalf("late heartbeats: %v, want 1", got)
	}
	// Other messages neither count nor reset the clock.
	now = now.Add(interval)
	hw.Send([]*raftpb.Message{{Type: raftpb.MsgApp.Enum(), To: new(uint64(2))}})
	now = now.Add(2 * interval)
	hb(2)
	if got := late(); got != 2 {
		t.Fatalf("late heartbeats: %v, want 2", got)
	}
	// A new leadership starts afresh.
	now = now.Add(time.Minute)
	hw.reset()
	hb(2)
	hb(3)
	if got := late(); got != 2 {
		t.Fatalf("late heartbeats after reset: %v, want 2", got)
	}
	if tr.sent != 8 {
		t.Fatalf("transport got %d messages, want all 8", tr.sent)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestTxnOps checks that a txn's operations are counted as etcd counts
// them: its compares as ranges, and only the branch it took, nested txns
// included.
func TestTxnOps(t *testing.T) {
	put := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k")}}}
	get := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k")}}}
	del := &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}}
	inner := &pb.TxnRequest{Compare: []*pb.Compare{{}}, Success: []*pb.RequestOp{del}, Failure: []*pb.RequestOp{put, put}}
	txn := &pb.TxnRequest{
		Compare: []*pb.Compare{{}, {}},
		Success: []*pb.RequestOp{put, get, {Request: &pb.RequestOp_RequestTxn{RequestTxn: inner}}},
		Failure: []*pb.RequestOp{del},
	}
	innerResp := &pb.TxnResponse{Succeeded: false}
	for _, c := range []struct {
		name string
		resp *pb.TxnResponse
		want txnOps
	}{
		{"success", &pb.TxnResponse{Succeeded: true, Responses: []*pb.ResponseOp{
			{}, {}, {Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: innerResp}},
		}}, txnOps{ranges: 2 + 1 + 1, puts: 1 + 2}},
		{"failure", &pb.TxnResponse{Succeeded: false}, txnOps{ranges: 2, deletes: 1}},
		{"no response", nil, txnOps{ranges: 2}},
	} {
		var n txnOps
		n.add(txn, c.resp)
		if n != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, n, c.want)
		}
	}
}
