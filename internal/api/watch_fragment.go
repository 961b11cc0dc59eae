package api

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// sendFragments sends wr whole if it is under limit bytes, or else as
// consecutive responses with fragment=true on all but the last, each under
// limit unless one event alone exceeds it, the way etcd splits responses
// of watchers created with fragment=true. clientv3 joins them back into
// one response.
func sendFragments(stream pb.Watch_WatchServer, wr *pb.WatchResponse, limit int) error {
	evs := wr.Events
	wr.Events = nil
	base := proto.Size(wr)
	sizes := make([]int, len(evs))
	total := base
	for i, ev := range evs {
		// A repeated message field: tag, length, message.
		n := proto.Size(ev)
		sizes[i] = protowire.SizeTag(11) + protowire.SizeBytes(n)
		total += sizes[i]
	}
	if total < limit {
		wr.Events = evs
		return stream.Send(wr)
	}
	base += 2 // fragment=true
	for i := 0; i < len(evs); {
		j, size := i+1, base+sizes[i]
		for j < len(evs) && size+sizes[j] < limit {
			size += sizes[j]
			j++
		}
		// A fresh message per fragment, as the events are shared
		// read-only with other watchers.
		cur := &pb.WatchResponse{
			Header:          wr.Header,
			WatchId:         wr.WatchId,
			Created:         wr.Created,
			Canceled:        wr.Canceled,
			CompactRevision: wr.CompactRevision,
			CancelReason:    wr.CancelReason,
			Fragment:        j < len(evs),
			Events:          evs[i:j:j],
		}
		if err := stream.Send(cur); err != nil {
			return err
		}
		i = j
	}
	return nil
}
