package transport

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// countingRaft counts processed messages and nothing else.
type countingRaft struct{ n atomic.Int64 }

func (c *countingRaft) Process(context.Context, *raftpb.Message) error {
	c.n.Add(1)
	return nil
}
func (c *countingRaft) IsIDRemoved(uint64) bool                    { return false }
func (c *countingRaft) ReportUnreachable(uint64)                   {}
func (c *countingRaft) ReportSnapshot(uint64, raft.SnapshotStatus) {}

// BenchmarkStream measures messages carried per second from Send to
// Process, with 256-byte entries sent 64 per call, as a leader under write
// load does.
func BenchmarkStream(b *testing.B) {
	recv := &countingRaft{}
	a := startMember(&testing.T{}, fastConfig(1, &countingRaft{}))
	c := startMember(&testing.T{}, fastConfig(2, recv))
	defer a.close()
	defer c.close()
	a.tr.AddPeer(2, []string{c.url})
	for a.tr.ActiveSince(2).IsZero() {
		time.Sleep(time.Millisecond)
	}
	payload := make([]byte, 256)
	batch := make([]*raftpb.Message, 64)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		for i := range batch {
			batch[i] = msgApp(1, 2, uint64(sent+i), payload)
		}
		// Stay under the queue limit so the benchmark measures carriage,
		// not drops.
		for queueLen(a.tr, 2) > a.tr.cfg.QueueMessages-len(batch) {
			time.Sleep(50 * time.Microsecond)
		}
		a.tr.Send(batch)
		sent += len(batch)
	}
	for recv.n.Load() < int64(sent) {
		time.Sleep(50 * time.Microsecond)
	}
}
