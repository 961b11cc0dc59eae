// Package conformance holds the differential test that holds cairn's KV API
// to etcd 3.7's behaviour, response field by response field.
//
// The test starts an embedded etcd (go.etcd.io/etcd/server/v3/embed, a test
// dependency only) and a cairn member (internal/embed), each on a fresh data
// directory, and sends both the very same protobuf request for every step of
// a seeded random sequence of KV operations: Range with every option,
// RangeStream, Put, DeleteRange, Txn (nested, every compare target and
// result, both branches) and Compact, including the requests etcd refuses
// (empty keys, duplicate keys in a txn, too many ops, missing leases,
// compacted and future revisions, oversized requests), and now and then a
// restart of both servers on their data directories, after which every key
// is read back from both and compared. Requests go through
// plain gRPC stubs without clientv3's retry interceptors, so what is compared
// is exactly what the server said.
//
// Two outcomes match when both are errors with the same gRPC code and the
// same message (clientv3 turns a status into its typed error by the message,
// so the text must agree to the letter), or when both are responses that are
// equal as protobuf messages after every ResponseHeader, nested ones
// included, is cut down to its revision: cluster id, member id and raft term
// legitimately differ between two clusters, but the revision must follow
// etcd's one for one, starting from 1 on a new store. A RangeStream is
// compared by what a client assembles from it (every chunk's kvs in order,
// and the header, more and count of the final chunk) and by whether any
// earlier chunk carried a header, more or count, which clientv3 documents
// they do not; where the server cuts the chunks is its own business.
//
// The order of keys that tie under a sort target (say two keys at version 1
// sorted by VERSION) is compared strictly too: etcd sorts the key-ordered
// result with sort.Sort, which is deterministic, and a client paging with a
// limit sees which tied keys land on the page.
//
// TestLeaseAgainstEtcd does the same for the Lease service, through
// clientv3 against a full cairn member: a fixed sequence of grants (the
// member's and the client's IDs, TTLs below the minimum and above the
// maximum), puts that attach and detach keys, keep-alives (one-shot and
// streamed), TimeToLive with keys, Leases, revokes, compares on a key's
// lease, an expiry and a restart. IDs the servers pick are compared by
// name, remaining TTLs only by being within (0, granted], and the keys of
// a lease as a set (etcd lists them in map order).
//
// Running it:
//
//	go test ./tests/conformance/                 # a few seeds, thousands of ops each
//	go test -short ./tests/conformance/          # one small seed
//	CAIRN_CONFORMANCE_SEED=42 go test -run 'TestRandomOps' -v ./tests/conformance/
//	CAIRN_CONFORMANCE_OPS=20000 go test ./tests/conformance/
//	CAIRN_CONFORMANCE_SUBJECT=direct go test ./tests/conformance/ # cairn's API over mvcc, no raft
//	CAIRN_CONFORMANCE_SUBJECT=etcd go test ./tests/conformance/   # etcd against etcd: checks the harness
//
// On a mismatch the test prints the seed, the op index, the request, both
// outcomes and a field-level diff. A seed stops at a differing write (the
// stores may have diverged); after a differing read it goes on, reporting
// the first difference of every other kind of op. With
// CAIRN_CONFORMANCE_SHRINK=1 it then replays shorter subsequences of the
// ops against fresh servers and prints a minimal sequence that still shows
// the first difference.
package conformance
