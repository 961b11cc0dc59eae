// Package bench is the library behind `cairn bench`: closed-loop load
// generators for the etcd v3 API (put, range, txn-put, watch-latency,
// lease-keepalive), a measure of how fast a server expires leases
// (lease-expire), a latency histogram with percentiles, a progress bar, and
// the report printed at the end of a run.
//
// Every workload talks to the server through clientv3, so it measures cairn
// and etcd alike; nothing here knows which one is on the other end.
//
// # How a run works
//
// A run opens Conns client connections and starts Clients workers, worker i
// using connection i mod Conns. Each worker issues one request at a time and
// records how long it took (a closed loop, like etcd's benchmark tool). The
// run ends when Total requests have been issued or Duration has passed,
// whichever comes first, or when its context is cancelled; a request that
// takes longer than RequestTimeout fails and is counted as an error. The
// report then covers exactly the requests that were issued.
//
// # Latency histogram
//
// Latencies are recorded in a log-linear histogram (see Histogram): values
// below 256ns are exact, larger ones fall in buckets at most 1/128 of their
// value wide, and a percentile is reported as the middle of its bucket
// (clamped to the fastest and slowest latency seen), so any reported
// percentile is within 0.4% of the exact one. Memory does not grow with the
// number of requests, so a run bounded only by Duration is as cheap as one
// bounded by Total. Average and standard deviation are computed exactly.
//
// # Machine-readable output
//
// Report marshals to JSON (see the field tags on Report): durations are
// seconds as floating point numbers, counts are integers. That JSON is what
// `cairn bench ... --output json` prints and what bench/compare reads.
package bench
