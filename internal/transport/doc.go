// Package transport carries raft messages between the members of a cluster.
//
// The raft Ready loop hands outgoing messages to Send, which never blocks;
// the peer side hands every message it receives to Raft.Process. Between
// them, each member keeps one long-lived HTTP stream open to every other
// member for ordinary messages, and opens a separate request for each
// snapshot. The member mounts Handler on its peer listener under PathPrefix.
//
// # Why HTTP/1.1 streams, not HTTP/2
//
// A stream is a POST whose request body carries messages for as long as the
// connection lives and whose response body carries keepalive answers. Both
// HTTP/1.1 (with http.ResponseController.EnableFullDuplex on the server) and
// h2c could carry that; HTTP/1.1 was chosen because:
//
//   - Each stream and each snapshot transfer gets its own TCP connection, so
//     a multi-GiB snapshot never shares a congestion window or a socket
//     buffer with the heartbeats that keep a leader in office. With HTTP/2
//     both would be multiplexed on one connection unless we kept separate
//     client pools anyway, and multiplexing buys nothing: there is exactly
//     one stream per peer and direction.
//   - The Handler works on whatever http.Server the member already runs,
//     plaintext or TLS, with no h2c upgrade handler or Protocols setting to
//     get right on both sides. The client offers only "http/1.1" in ALPN, so
//     a TLS listener that also speaks h2 still serves it.
//   - HTTP/2's per-stream flow control would add a second window on top of
//     TCP's, whose defaults cap a stream's throughput on long links.
//
// The price is one chunked-encoding header per write (a write carries a
// whole batch, so it is noise) and doing our own keepalives, which we want
// anyway for the round-trip-time metric.
//
// # Wire format
//
// Every request carries the sender's identity in headers, IDs in lower-case
// hex: X-Cairn-Cluster-Id, X-Cairn-From (sending member), X-Cairn-To
// (intended receiver). The receiver answers:
//
//	412 + X-Cairn-Refusal: cluster-id-mismatch   another cluster (ErrClusterIDMismatch)
//	412 + X-Cairn-Refusal: member-id-mismatch    this member is not X-Cairn-To (ErrMemberIDMismatch)
//	410 + X-Cairn-Refusal: member-removed        Raft.IsIDRemoved(From) (ErrMemberRemoved)
//	403 + X-Cairn-Refusal: tls-required          Config.ServerTLS set, plaintext request
//	404                                          no such path: another protocol version (ErrIncompatibleVersion)
//	503                                          the transport is stopped
//
// and always sets X-Cairn-Cluster-Id to its own cluster. A sender that gets
// a refusal logs it once (at error level) and retries only after
// Config.MaxRetryRefused, so a misconfigured member neither spins nor floods
// the log; ErrMemberRemoved also closes the channel returned by Removed.
//
// Bodies are sequences of frames: a 1-byte type, a 4-byte big-endian
// payload length, the payload.
//
//	type 1 message  a raftpb.Message in protobuf encoding, at most MaxMessageBytes
//	type 2 ping     8 opaque bytes (the sender's clock)
//	type 3 pong     the 8 bytes of a ping, echoed
//	type 4 data     a chunk of snapshot data, at most 4 MiB (senders use 256 KiB)
//	type 5 end      CRC-32C (Castagnoli) of all snapshot data, then its length as 8 bytes
//
// POST /raft/v1/stream: the request body is message and ping frames, the
// response (200, sent before any frame is read) is pong frames.
// POST /raft/v1/snapshot: the request body is one message frame (the
// MsgSnap), data frames, and an end frame; X-Cairn-Snapshot-Size announces
// the data size when the source knows it. The response is 204 once the
// snapshot is stored and raft has the MsgSnap, or an error with the reason
// as text.
//
// # Stream lifecycle
//
// AddPeer starts one goroutine per peer that dials a stream, writes batches
// until the stream fails, and redials after a jittered, exponentially
// growing delay (MinBackoff doubling up to MaxBackoff, reset once a stream
// was accepted; each failure moves on to the peer's next URL). A stream
// ends when a write stays blocked for WriteTimeout (the peer stopped
// reading), when no pong arrives for IdleIntervals keepalive intervals (the
// peer or the path is gone without a reset), when the connection fails, when
// UpdatePeer changes the URLs, or on RemovePeer/Stop. When a stream ends,
// what was queued for it is dropped and the peer is reported unreachable.
//
// The receiver reads frames in order and hands each message to Raft.Process
// on the request's goroutine, so order is preserved per sender. Its reads
// carry a deadline of IdleIntervals keepalive intervals, so a sender that
// vanished is noticed too, and a new stream from a sender replaces the old
// one. Messages whose From or To do not match the stream's headers close
// the stream, as does a MsgSnap (its data travels only with it on the
// snapshot endpoint); once Raft.IsIDRemoved(From) holds, so does the next
// message.
//
// A frame's length comes from the peer: the receiver allocates its payload
// as the bytes arrive (growing by doubling), never the declared length up
// front, so a peer cannot make a member reserve the frame limit with a
// five-byte header.
//
// # Backpressure
//
// Each peer has a bounded queue between Send and the stream writer
// (QueueMessages and QueueBytes). Send never waits: when the queue is full,
// or no stream is established, the message is dropped, the
// etcd_network_peer_sent_failures_total counter is bumped, and the peer is
// reported unreachable. This is deliberate: raft tolerates loss and
// retransmits (ReportUnreachable moves the follower's progress back to
// probing, which sends one message per heartbeat), whereas queueing without
// bound for a slow or dead follower would let it exhaust the leader's
// memory, and queueing for a disconnected peer would only deliver stale
// messages late. Dropping at a full queue is also the end of a chain of
// backpressure: a receiver whose raft is busy stops reading (Process
// blocks), TCP stops the sender's writes, the writer stops draining, the
// queue fills.
//
// ReportUnreachable is never called on the caller's goroutine: Send records
// the peer and a transport goroutine reports it, once per burst, so a raft
// loop that holds a lock while calling Send cannot deadlock on itself.
//
// The writer drains the queue into batches of about 1 MiB, encodes them into
// one buffer, and writes it in one call: under load many messages share a
// write, with no delay added when idle. Heartbeats, votes, read-index
// messages and MsgTimeoutNow form an urgent class with its own small budget
// that is written before queued MsgApp, so leadership confirmation and reads
// are not delayed behind megabytes of entries (raft tolerates the
// reordering). Within a class, order is preserved.
//
// # Snapshots
//
// A MsgSnap passed to Send does not go on the stream. A goroutine asks the
// SnapshotSource for the data at the snapshot's index and POSTs the MsgSnap
// followed by the data, generated frame by frame as the connection accepts
// it, so no more than one 256 KiB chunk is in memory on either side. The
// receiver hands the data to the SnapshotSink as an io.Reader that returns
// io.EOF only after the end frame's length and checksum matched; only then
// does it call Raft.Process with the MsgSnap, and only then does it answer
// 204. The sender reports SnapshotFinish on 204 and SnapshotFailure on
// anything else. A transfer that makes no progress for SnapshotStallTimeout
// is aborted on either side. At most one transfer per peer is in flight; a
// MsgSnap sent meanwhile is dropped, and raft's progress for the peer is
// settled by the report of the transfer in flight.
//
// # TLS
//
// Config.TLS configures the client side for https:// peer URLs. The
// listener belongs to the member; Config.ServerTLS tells the handler that it
// is meant to be served over TLS, and requests that arrive in plaintext are
// refused. Identity headers are not authentication: with TLS, client
// certificates (the listener's ClientAuth) are what keep strangers out.
//
// # Shutdown
//
// Stop cancels every stream and transfer, interrupts inbound requests (their
// reads fail and the Process context is canceled), and waits for every
// goroutine the transport started, including those serving inbound
// requests. Requests that arrive afterwards get 503. Stop the transport
// before closing the http.Server it is mounted on: the server waits for open
// requests, which only the transport ends.
//
// # Metrics
//
// With Config.Metrics set, the transport registers etcd's network metrics
// under their etcd names and labels: etcd_network_peer_sent_bytes_total,
// etcd_network_peer_received_bytes_total, etcd_network_peer_sent_failures_total,
// etcd_network_peer_received_failures_total,
// etcd_network_peer_round_trip_time_seconds (from keepalives),
// etcd_network_active_peers, etcd_network_disconnected_peers_total and the
// etcd_network_snapshot_{send,receive}_* family.
package transport
