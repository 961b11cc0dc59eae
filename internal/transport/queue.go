package transport

import (
	"errors"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
)

var (
	errQueueFull    = errors.New("send queue full")
	errNotConnected = errors.New("no stream to the peer")
)

// Limits of the urgent class. Urgent messages are small (no entries beyond a
// read-index context), so a fixed budget is enough and keeps them from being
// crowded out by a queue full of MsgApp.
const (
	urgentMaxMessages = 256
	urgentMaxBytes    = 1 << 20
)

// isUrgent reports whether a message type jumps ahead of queued MsgApp.
// Heartbeats and read-index traffic decide leadership confirmation and read
// latency, votes decide elections; none of them should wait behind megabytes
// of log entries. raft tolerates reordering between messages, so letting them
// overtake is safe.
func isUrgent(t raftpb.MessageType) bool {
	switch t {
	case raftpb.MsgHeartbeat, raftpb.MsgHeartbeatResp,
		raftpb.MsgVote, raftpb.MsgVoteResp, raftpb.MsgPreVote, raftpb.MsgPreVoteResp,
		raftpb.MsgReadIndex, raftpb.MsgReadIndexResp, raftpb.MsgTimeoutNow:
		return true
	}
	return false
}

// approxSize estimates a message's encoded size cheaply (no protobuf walk),
// for the queue's byte budget. The exact size is checked when encoding.
func approxSize(m *raftpb.Message) int64 {
	n := int64(64 + len(m.GetContext()))
	for _, e := range m.GetEntries() {
		n += int64(24 + len(e.GetData()))
	}
	if s := m.GetSnapshot(); s != nil {
		n += int64(len(s.GetData()))
	}
	return n
}

type queued struct {
	m    *raftpb.Message
	size int64
}

// fifo is a slice-backed queue that clears what it hands out, so that sent
// messages (and their entries) are not kept alive by the backing array.
type fifo struct {
	items []queued
	head  int
	bytes int64
}

func (f *fifo) len() int { return len(f.items) - f.head }

func (f *fifo) push(q queued) {
	if f.head > 0 && f.head == len(f.items) {
		f.items, f.head = f.items[:0], 0
	}
	f.items = append(f.items, q)
	f.bytes += q.size
}

func (f *fifo) pop() queued {
	q := f.items[f.head]
	f.items[f.head] = queued{}
	f.head++
	f.bytes -= q.size
	if f.head == len(f.items) {
		f.items, f.head = f.items[:0], 0
	}
	return q
}

func (f *fifo) reset() int {
	n := f.len()
	clear(f.items)
	f.items, f.head, f.bytes = f.items[:0], 0, 0
	return n
}

// sendQueue is the bounded buffer between Send and a peer's stream writer.
// It accepts messages only while a stream is established: raft retransmits
// whatever is dropped, so buffering for an absent peer would only delay the
// moment raft learns (through ReportUnreachable) that the peer is gone.
type sendQueue struct {
	maxMessages int
	maxBytes    int64
	// ready holds a token whenever the queue may be non-empty.
	ready chan struct{}

	mu struct {
		sync.Mutex
		open   bool
		urgent fifo
		bulk   fifo
	}
}

func newSendQueue(maxMessages int, maxBytes int64) *sendQueue {
	return &sendQueue{maxMessages: maxMessages, maxBytes: maxBytes, ready: make(chan struct{}, 1)}
}

// push enqueues m without blocking. It fails with errNotConnected or
// errQueueFull. A single message larger than the byte budget is accepted
// into an empty queue, or it could never be sent at all.
func (q *sendQueue) push(m *raftpb.Message, size int64) error {
	q.mu.Lock()
	if !q.mu.open {
		q.mu.Unlock()
		return errNotConnected
	}
	f, maxN, maxB := &q.mu.bulk, q.maxMessages, q.maxBytes
	if isUrgent(m.GetType()) {
		f, maxN, maxB = &q.mu.urgent, urgentMaxMessages, urgentMaxBytes
	}
	if f.len() >= maxN || (f.len() > 0 && f.bytes+size > maxB) {
		q.mu.Unlock()
		return errQueueFull
	}
	f.push(queued{m: m, size: size})
	q.mu.Unlock()
	q.signal()
	return nil
}

func (q *sendQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// drain appends to dst every urgent message and then bulk messages up to
// about maxBytes (at least one), in order within each class. If messages
// remain it leaves a token in ready.
func (q *sendQueue) drain(dst []*raftpb.Message, maxBytes int64) []*raftpb.Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	var n int64
	for q.mu.urgent.len() > 0 {
		it := q.mu.urgent.pop()
		n += it.size
		dst = append(dst, it.m)
	}
	for q.mu.bulk.len() > 0 && (n == 0 || n+q.mu.bulk.items[q.mu.bulk.head].size <= maxBytes) {
		it := q.mu.bulk.pop()
		n += it.size
		dst = append(dst, it.m)
	}
	if q.mu.bulk.len() > 0 {
		q.signal()
	}
	return dst
}

// setOpen starts accepting messages (a stream is up) or stops and discards
// the queue (the stream is gone). It returns how many messages were dropped.
func (q *sendQueue) setOpen(open bool) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.mu.open = open
	if open {
		return 0
	}
	return q.mu.urgent.reset() + q.mu.bulk.reset()
}
