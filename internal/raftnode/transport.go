package raftnode

import "go.etcd.io/raft/v3/raftpb"

// Transport carries raft messages to the other members. The Ready loop calls
// Send, so it must not block on the network: it queues and returns. Delivery
// is best effort; raft retransmits what is lost.
type Transport interface {
	// Send queues msgs for delivery to the members named in their To field.
	// The messages must not be modified, and must be marshaled before Send
	// returns or treated as read-only afterwards.
	Send(msgs []*raftpb.Message)
}

// noTransport is the transport of a member without peers: a single voter
// never has anyone to talk to.
type noTransport struct{}

func (noTransport) Send([]*raftpb.Message) {}
