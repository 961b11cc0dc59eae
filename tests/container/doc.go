// Package container runs a 3-member cairn cluster in Docker containers
// on a private network and partitions it, as a network fault in production
// would.
//
// Its tests carry the build tag docker, so that go test ./... never needs
// Docker:
//
//	go test -count=1 -tags docker ./tests/container/
//
// TestPartition builds the static binary (CGO_ENABLED=0) and the image from
// the repository's Dockerfile (a scratch image holding only the binary; no
// registry is involved), then creates two networks: one that carries raft
// traffic between the members (the peer network, whose addresses the peer
// URLs name) and one the test reaches the members' client ports through.
// It starts three containers, waits for a leader, and cuts the leader off
// the peer network with docker network disconnect. It then checks what a
// user would see:
//
//   - the two remaining members elect a new leader among themselves and
//     keep acknowledging writes;
//   - the isolated member refuses linearizable reads and writes (etcd's
//     timeout or no-leader errors) instead of answering from its stale
//     state;
//   - once reconnected, it rejoins: every member names the same leader,
//     reports the same HashKV at the same revision, and serves the writes
//     made while it was away.
//
// TestNodeLossAndRollingRestart runs a writer through a client of all three
// members, SIGKILLs the leader's container (docker kill) and starts it again
// on its own data, then restarts every member in turn (docker restart:
// SIGTERM, then start), as a rolling upgrade would. After each step the
// cluster must name one leader and keep acknowledging writes; at the end
// every member must hold every acknowledged write and the members must
// agree on HashKV.
//
// Everything the tests create (containers, networks, the image tag and the
// build directory) is removed when they end, failed or not; every
// container's log is printed when a test fails. The image is built once per
// run and shared by the tests. Names carry a random suffix, so runs do not
// collide.
package container
