package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// row is one figure for both servers, with one sample per round.
type row struct {
	Figure  string
	Unit    string
	samples [2][]float64
}

// value returns the median of column col's samples (the mean of the middle
// two for an even count), or NaN if the figure is missing.
func (r *row) value(col int) float64 {
	s := slices.Clone(r.samples[col])
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// results collects the figures of a run in the order they were first set.
type results struct {
	servers []string
	fsync   time.Duration
	mu      sync.Mutex
	rows    []*row
	notes   []string
	// floor is the gRPC floor (floorPhase), nil if not measured.
	floor *floorFigures
}

func (r *results) set(figure, unit string, col int, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, row := range r.rows {
		if row.Figure == figure {
			row.samples[col] = append(row.samples[col], v)
			return
		}
	}
	nr := &row{Figure: figure, Unit: unit}
	nr.samples[col] = []float64{v}
	r.rows = append(r.rows, nr)
}

func (r *results) notef(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func fmtMs(seconds float64) string { return fmt.Sprintf("%.3f ms", seconds*1000) }

func fmtValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch unit {
	case "ms":
		return fmt.Sprintf("%.3f ms", v)
	case "req/s":
		return fmt.Sprintf("%.0f/s", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	case "s":
		return fmt.Sprintf("%.2f s", v)
	case "x":
		return fmt.Sprintf("%.2fx", v)
	case "us":
		return fmt.Sprintf("%.1f µs", v)
	}
	return fmt.Sprintf("%g %s", v, unit)
}

// print writes the table: figure, the two servers, and the ratio of the
// second to the first.
func (r *results) print(w io.Writer, o *options) {
	a, b := r.servers[0], r.servers[1]
	if a == b {
		a, b = a+" (1)", b+" (2)"
	}
	width := len("figure")
	for _, row := range r.rows {
		width = max(width, len(row.Figure))
	}
	fmt.Fprintf(w, "\ndisk write+fsync (512 B): %s mean, %.0f/s\n\n", fmtMs(r.fsync.Seconds()), 1/r.fsync.Seconds())
	fmt.Fprintf(w, "%-*s  %14s  %14s  %10s\n", width, "figure", a, b, b+"/"+a)
	fmt.Fprintf(w, "%s\n", strings.Repeat("-", width+2+14+2+14+2+max(10, len(b+"/"+a))))
	for _, row := range r.rows {
		ratio := "n/a"
		if x, y := row.value(0), row.value(1); !math.IsNaN(x) && !math.IsNaN(y) && x != 0 {
			ratio = fmt.Sprintf("%.2f", y/x)
		}
		fmt.Fprintf(w, "%-*s  %14s  %14s  %10s\n", width, row.Figure,
			fmtValue(row.value(0), row.Unit), fmtValue(row.value(1), row.Unit), ratio)
	}
	r.printTargets(w)
	if len(r.notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range r.notes {
			fmt.Fprintf(w, "  - %s\n", firstLine(n))
		}
	}
	fmt.Fprintf(w, "\n%d values, %d requests per throughput workload, at most %v each, %d round(s), medians.\n",
		o.values, o.requests, o.maxTime, o.rounds)
	fmt.Fprintln(w, "Throughput: higher is better. Latency, memory, disk, time: lower is better.")
}

// writeJSON writes the results for scripts: per row, the two values (null
// when missing) and the ratio.
func (r *results) writeJSON(path string) error {
	type jsonRow struct {
		Figure string              `json:"figure"`
		Unit   string              `json:"unit"`
		Values map[string]*float64 `json:"values"`
		Ratio  *float64            `json:"ratio"`
	}
	out := struct {
		Servers      []string  `json:"servers"`
		FsyncSeconds float64   `json:"fsync_mean_seconds"`
		Rows         []jsonRow `json:"rows"`
		Notes        []string  `json:"notes,omitempty"`
	}{Servers: r.servers, FsyncSeconds: r.fsync.Seconds(), Notes: r.notes}
	for _, row := range r.rows {
		jr := jsonRow{Figure: row.Figure, Unit: row.Unit, Values: map[string]*float64{}}
		for i, s := range r.servers {
			if i == 1 && r.servers[0] == r.servers[1] {
				s += "_2"
			}
			if v := row.value(i); !math.IsNaN(v) {
				jr.Values[s] = &v
			}
		}
		if x, y := row.value(0), row.value(1); !math.IsNaN(x) && !math.IsNaN(y) && x != 0 {
			ratio := y / x
			jr.Ratio = &ratio
		}
		out.Rows = append(out.Rows, jr)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
