// Package clustertest runs cairn clusters inside one test process: several
// servers (internal/server) with their own data directories, connected by
// a simulated network instead of the peer transport, on a simulated clock
// instead of the wall clock.
//
// # Time
//
// Every member runs on the cluster's Clock, a clocktest.Fake. A driver
// goroutine advances it one raft tick (10 ms of simulated time) at a time,
// and the fake hands each member's raft loop its tick with a blocking
// send, so the members' raft clocks stay in step with each other and with
// the simulated time however the Go scheduler runs them. Request timeouts, read-index retries and
// health intervals are all simulated time too; tests never sleep on the
// wall clock, they poll conditions (Cluster.WaitFor).
//
// # Network
//
// The Network implements the server's PeerTransport for each member. A
// message sent is copied and queued with a delivery time drawn from the
// configured delay range; the driver delivers what falls due after each
// tick. Faults drop, delay (and so reorder) and duplicate messages, from a
// random source seeded per member; partitions cut links in both
// directions; a removed member's messages are refused and it is told, as
// the real transport does. Snapshots go from the sender's snapshot source
// to the receiver's sink in one step. Requests a member makes to its peers
// over HTTP (the member list when joining, promotions forwarded to the
// leader) go straight to the peer's PeerHandler.
//
// # Histories
//
// History records operations that clients run against random members; the
// test kit's porcupine model of etcd's key-value semantics (tests/kit's
// Model: values, versions, create and mod revisions, the header revision)
// checks them for linearizability.
// An operation whose outcome is unknown (a timeout) may have taken effect
// at any time after its call. A violation prints the seed and the history
// and writes porcupine's visualization to a temporary file.
//
// The tests' randomized schedules run CAIRN_CLUSTER_SEEDS seeds (five by
// default, a few seconds each), from CAIRN_CLUSTER_SEED (1) on. A seed
// fixes the schedule (faults, operations, their targets), not the Go
// scheduler's interleavings: CAIRN_CLUSTER_SEED=<seed> CAIRN_CLUSTER_SEEDS=1
// replays a failing schedule, which may take a few runs to fail again.
// CAIRN_CLUSTER_LOG=debug|info|warn prints the members' logs.
package clustertest
