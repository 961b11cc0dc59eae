package main

import (
	"fmt"
	"io"
	"math"
)

// A target is one of issue 14's write-path targets, checked against a
// run's figures: the ratio second/first server of a figure (or the second
// server's own value, for a figure that is already a ratio) against a
// bound.
type target struct {
	name   string
	figure string
	// own: compare the second server's value, not the ratio.
	own bool
	// atMost: the figure must be at most bound; otherwise at least.
	atMost bool
	bound  float64
}

// targets are issue 14's, in its order. A figure the run did not take
// (another phase) is left out of the printout.
var targets = []target{
	{name: "server CPU per put, 100 clients: at most 0.5x etcd's", figure: "put, 100 clients: server CPU per request", atMost: true, bound: 0.5},
	{name: "1-client put, mean: at most 0.8x etcd's", figure: "put, 1 client: mean latency", atMost: true, bound: 0.8},
	{name: "1-client put, mean: within 1.2x of fsync + round trip", figure: "put, 1 client: mean latency / (disk fsync + round trip)", own: true, atMost: true, bound: 1.2},
	{name: "put throughput, 100 clients: at least 1.5x etcd's", figure: "put, 100 clients: throughput", bound: 1.5},
	{name: "3 members, put throughput, 100 clients: at least 1.5x", figure: "3 members: put, 100 clients: throughput", bound: 1.5},
	{name: "linearizable range throughput, 100 clients: at least 1.5x", figure: "range linearizable, 100 clients: throughput", bound: 1.5},
	{name: "linearizable range p99, 100 clients: no worse than etcd's", figure: "range linearizable, 100 clients: p99 latency", atMost: true, bound: 1},
	{name: "full range of the loaded keys, peak RSS: at most 0.4x etcd's", figure: "memory: peak RSS during the full range", atMost: true, bound: 0.4},
}

// cpuBound names, for a CPU-bound throughput figure, the figures of
// server and client CPU per request that bound it.
var cpuBound = map[string]string{
	"put, 100 clients: throughput":                "put, 100 clients",
	"3 members: put, 100 clients: throughput":     "3 members: put, 100 clients",
	"range linearizable, 100 clients: throughput": "range linearizable, 100 clients",
}

func (r *results) find(figure string) *row {
	for _, row := range r.rows {
		if row.Figure == figure {
			return row
		}
	}
	return nil
}

// printTargets writes each target the run has figures for, with the
// measured value and whether it is met. For the CPU-bound throughput
// targets it adds what the CPU figures allow: when both servers saturate
// the cores they share with the client, throughput is about cores / (server
// + client CPU per request), so the ratio cannot exceed (etcd's server +
// client) / (cairn's server + client), and reaching a bound b needs cairn's
// server at (etcd's server + client) / b - cairn's client.
func (r *results) printTargets(w io.Writer) {
	if len(r.servers) != 2 || r.servers[0] != "etcd" || r.servers[1] != "cairn" {
		return
	}
	header := false
	for _, t := range targets {
		row := r.find(t.figure)
		if row == nil {
			continue
		}
		a, b := row.value(0), row.value(1)
		v := b / a
		if t.own {
			v = b
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nissue 14's targets (cairn against etcd in this run):")
			header = true
		}
		met := v >= t.bound
		if t.atMost {
			met = v <= t.bound
		}
		verdict := "not met"
		if met {
			verdict = "met"
		}
		fmt.Fprintf(w, "  - %s: %.2f, %s\n", t.name, v, verdict)
		if s := r.ownSyncNote(t.figure); s != "" {
			fmt.Fprintf(w, "      %s\n", s)
		}
		if prefix, ok := cpuBound[t.figure]; ok {
			if s := r.cpuAllowance(prefix, t.bound); s != "" {
				fmt.Fprintf(w, "      %s\n", s)
			}
			if s := r.floorNote(t.figure); s != "" {
				fmt.Fprintf(w, "      %s\n", s)
			}
		}
	}
}

// cpuAllowance explains a CPU-bound throughput ratio from the server and
// client CPU per request of the figures named prefix, or returns "".
func (r *results) cpuAllowance(prefix string, bound float64) string {
	srv, cli := r.find(prefix+": server CPU per request"), r.find(prefix+": bench client CPU per request")
	if srv == nil || cli == nil {
		return ""
	}
	se, sc, ce, cc := srv.value(0), srv.value(1), cli.value(0), cli.value(1)
	for _, v := range []float64{se, sc, ce, cc} {
		if math.IsNaN(v) || v <= 0 {
			return ""
		}
	}
	return fmt.Sprintf("CPU per request, server + client: etcd %.1f + %.1f µs, cairn %.1f + %.1f µs: at most %.2fx when CPU-bound; %.1fx needs cairn's server at %.1f µs",
		se, ce, sc, cc, (se+ce)/(sc+cc), bound, (se+ce)/bound-cc)
}

// floorNote gives the gRPC floor (floorPhase) for the single-member put
// and range targets, or "".
func (r *results) floorNote(figure string) string {
	if r.floor == nil {
		return ""
	}
	switch figure {
	case "put, 100 clients: throughput":
		return fmt.Sprintf("gRPC floor, a server that answers every put at once: %.1f µs server + %.1f µs client per put", r.floor.putServer, r.floor.putClient)
	case "range linearizable, 100 clients: throughput":
		return fmt.Sprintf("gRPC floor, a server that answers every range at once: %.1f µs server + %.1f µs client per range", r.floor.rangeServer, r.floor.rangeClient)
	}
	return ""
}

// ownSyncNote gives, under the target of fsync + round trip, the same
// ratio against each member's own synced log writes during the put, or "".
func (r *results) ownSyncNote(figure string) string {
	if figure != "put, 1 client: mean latency / (disk fsync + round trip)" {
		return ""
	}
	own, ratio := r.find("put, 1 client: the member's synced log write, mean"), r.find("put, 1 client: mean latency / (member's synced log write + round trip)")
	if own == nil || ratio == nil {
		return ""
	}
	for _, v := range []float64{own.value(0), own.value(1), ratio.value(0), ratio.value(1)} {
		if math.IsNaN(v) || v <= 0 {
			return ""
		}
	}
	return fmt.Sprintf("against each member's own synced log writes during the put (etcd %.3f ms, cairn %.3f ms) + round trip: etcd %.2fx, cairn %.2fx",
		own.value(0), own.value(1), ratio.value(0), ratio.value(1))
}
