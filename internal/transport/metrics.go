package transport

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are etcd's network metrics, under etcd's names and labels, so
// that dashboards built for etcd work unchanged. IDs are printed in hex.
type metrics struct {
	activePeers, snapSendInflight, snapRecvInflight       *prometheus.GaugeVec
	disconnectedPeers, sentBytes, recvBytes, sentFailures *prometheus.CounterVec
	recvFailures, snapSendSuccess, snapSendFailures       *prometheus.CounterVec
	snapRecvSuccess, snapRecvFailures                     *prometheus.CounterVec
	rtt, snapSendDuration, snapRecvDuration               *prometheus.HistogramVec
}

// newMetrics builds the metrics and registers them on reg if it is non-nil.
// A collector that reg already holds (a second transport in one process) is
// shared rather than refused.
func newMetrics(reg prometheus.Registerer) *metrics {
	counter := func(name, help string, label ...string) *prometheus.CounterVec {
		return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "network", Name: name, Help: help}, label))
	}
	gauge := func(name, help string, label ...string) *prometheus.GaugeVec {
		return register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "network", Name: name, Help: help}, label))
	}
	histogram := func(name, help string, buckets []float64, label ...string) *prometheus.HistogramVec {
		return register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "network", Name: name, Help: help, Buckets: buckets}, label))
	}
	snapBuckets := prometheus.ExponentialBuckets(0.1, 2, 10)
	return &metrics{
		activePeers:       gauge("active_peers", "The current number of active peer connections.", "Local", "Remote"),
		disconnectedPeers: counter("disconnected_peers_total", "The total number of disconnected peers.", "Local", "Remote"),
		sentBytes:         counter("peer_sent_bytes_total", "The total number of bytes sent to peers.", "To"),
		recvBytes:         counter("peer_received_bytes_total", "The total number of bytes received from peers.", "From"),
		sentFailures:      counter("peer_sent_failures_total", "The total number of send failures to peers.", "To"),
		recvFailures:      counter("peer_received_failures_total", "The total number of receive failures from peers.", "From"),
		rtt: histogram("peer_round_trip_time_seconds", "Round-trip time between peers, measured on the stream's keepalives.",
			prometheus.ExponentialBuckets(0.0001, 2, 16), "To"),
		snapSendSuccess:  counter("snapshot_send_success", "Total number of successful snapshot sends.", "To"),
		snapSendFailures: counter("snapshot_send_failures", "Total number of snapshot send failures.", "To"),
		snapSendInflight: gauge("snapshot_send_inflights_total", "Total number of inflight snapshot sends.", "To"),
		snapSendDuration: histogram("snapshot_send_total_duration_seconds", "Total latency distributions of snapshot sends.", snapBuckets, "To"),
		snapRecvSuccess:  counter("snapshot_receive_success", "Total number of successful snapshot receives.", "From"),
		snapRecvFailures: counter("snapshot_receive_failures", "Total number of snapshot receive failures.", "From"),
		snapRecvInflight: gauge("snapshot_receive_inflights_total", "Total number of inflight snapshot receives.", "From"),
		snapRecvDuration: histogram("snapshot_receive_total_duration_seconds", "Total latency distributions of snapshot receives.", snapBuckets, "From"),
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // two different metrics under one name: a programming error
	}
	return c
}
