// Package prometheus is the Prometheus test tier: a real Prometheus server
// scrapes a 3-member cluster of real cairn processes and evaluates the alert
// rules cairn ships for operators (docs/alerts.yml), so that what the
// dashboards and alerts of an etcd deployment query is checked end to end,
// through Prometheus's own query engine.
//
// TestAlertRules builds cairn (go build of ./cmd/cairn into a temporary
// directory), starts three members on 127.0.0.1 with --metrics=extensive and
// a quota a little above an empty member's size, and a Prometheus that
// scrapes them every second and evaluates the rules every second, each
// rule's "for" cut to zero. Under a client load it then:
//
//  1. moves the leadership around the members (MoveLeader) five times, and
//     stops one follower (SIGSTOP) for two seconds, so that round trips to
//     it are slow;
//  2. fills the database until writes fail with the NOSPACE alarm
//     (ResourceExhausted), and goes on writing a little;
//  3. kills one member (SIGKILL), then a second, leaving the survivor
//     without a leader, and sends it linearizable reads that time out and
//     deletes whose proposals fail.
//
// Every rule's expression (less its threshold) must return data, and the
// alerts whose condition was provoked must fire: members down, no leader,
// frequent leader changes, failed gRPC requests, slow gRPC requests, slow
// peer round trips, failed proposals, database near quota and database
// growing fast. Slow fsync, slow backend commit and high fragmentation are
// not provoked (they need a slow disk or a large database); their
// expressions must still return data.
//
// The tier needs the prometheus binary (Debian's prometheus package) and
// runs behind the prometheus build tag, so go test ./... needs neither:
//
//	apt-get install -y prometheus
//	go test -tags prometheus -count=1 ./tests/prometheus/
//
// CAIRN_PROMETHEUS names another prometheus binary. .ci/run installs the
// package and runs the tier. Without a prometheus binary the test is
// skipped, saying so, unless CI=true, where it fails.
package prometheus
