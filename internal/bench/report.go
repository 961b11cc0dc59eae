package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PercentileLevels are the percentiles every report lists, in order.
var PercentileLevels = []float64{10, 25, 50, 75, 90, 95, 99, 99.9}

// histogramBins is the number of bars in a report's latency histogram.
const histogramBins = 12

// Seconds is a duration that marshals to JSON as a number of seconds, the
// unit etcd's tools print and the easiest for a script to compare.
type Seconds time.Duration

// Duration returns s as a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) }

// MarshalJSON encodes s as seconds with nanosecond precision.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(s).Seconds(), 'f', -1, 64), nil
}

// UnmarshalJSON decodes a number of seconds.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("bench: seconds: %w", err)
	}
	*s = Seconds(time.Duration(f * float64(time.Second)))
	return nil
}

// HistogramBar is one bar of Report.Histogram: Count requests took more than
// the previous bar's UpTo and at most UpTo.
type HistogramBar struct {
	UpTo  Seconds `json:"up_to_seconds"`
	Count int64   `json:"count"`
}

// Report is the outcome of one run. Requests and the latency figures cover
// successful requests only; failed ones are counted in Errors, by message in
// ErrorCounts.
type Report struct {
	Workload  string   `json:"workload"`
	Endpoints []string `json:"endpoints"`
	Conns     int      `json:"conns"`
	Clients   int      `json:"clients"`
	// Unit names what Requests counts when it is not requests: "events"
	// for watch-latency, where each sample is one event at one watcher.
	Unit string `json:"unit,omitempty"`

	Requests          int64   `json:"requests"`
	Errors            int64   `json:"errors"`
	Duration          Seconds `json:"duration_seconds"`
	RequestsPerSecond float64 `json:"requests_per_second"`

	Slowest Seconds `json:"slowest_seconds"`
	Fastest Seconds `json:"fastest_seconds"`
	Average Seconds `json:"average_seconds"`
	Stddev  Seconds `json:"stddev_seconds"`

	// Percentiles maps "p50", "p99.9", ... (see PercentileLevels and
	// PercentileName) to a latency.
	Percentiles map[string]Seconds `json:"percentiles_seconds"`
	Histogram   []HistogramBar     `json:"histogram"`

	// Counters holds what the workload did besides requests, e.g.
	// "keys_returned" for range or "watchers" for watch-latency.
	Counters    map[string]int64 `json:"counters,omitempty"`
	ErrorCounts map[string]int64 `json:"error_counts,omitempty"`
}

// PercentileName returns the key of percentile p in Report.Percentiles:
// "p50" for 50, "p99.9" for 99.9.
func PercentileName(p float64) string {
	return "p" + strconv.FormatFloat(p, 'f', -1, 64)
}

// NewReport builds a report from the latencies of the successful requests,
// the errors, and the run's wall-clock duration.
func NewReport(workload string, lat HistogramSnapshot, errs map[string]int64, elapsed time.Duration) *Report {
	r := &Report{
		Workload:    workload,
		Requests:    lat.Count(),
		Duration:    Seconds(elapsed),
		Slowest:     Seconds(lat.Max()),
		Fastest:     Seconds(lat.Min()),
		Average:     Seconds(lat.Mean()),
		Stddev:      Seconds(lat.Stddev()),
		Percentiles: make(map[string]Seconds, len(PercentileLevels)),
		ErrorCounts: errs,
	}
	for _, n := range errs {
		r.Errors += n
	}
	if elapsed > 0 {
		r.RequestsPerSecond = float64(r.Requests) / elapsed.Seconds()
	}
	for _, p := range PercentileLevels {
		r.Percentiles[PercentileName(p)] = Seconds(lat.Percentile(p))
	}
	for _, b := range lat.Bins(histogramBins) {
		r.Histogram = append(r.Histogram, HistogramBar{UpTo: Seconds(b.UpTo), Count: b.Count})
	}
	return r
}

// WriteJSON writes r as one indented JSON object followed by a newline.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encode report: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ms formats a latency in milliseconds with microsecond resolution, the
// scale at which both a local round trip and a disk sync stay readable.
func ms(s Seconds) string {
	return strconv.FormatFloat(float64(s)/float64(time.Millisecond), 'f', 4, 64) + " ms"
}

// WriteText writes r for a person: a summary, a latency histogram and the
// percentiles, then the counters and errors if there are any.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	unit := cmp.Or(r.Unit, "requests")
	fmt.Fprintf(&b, "Summary (%s, %d conns, %d clients):\n", r.Workload, r.Conns, r.Clients)
	fmt.Fprintf(&b, "  %-14s%d %s, %d errors\n", "Total:", r.Requests, unit, r.Errors)
	fmt.Fprintf(&b, "  %-14s%.4f s\n", "Duration:", r.Duration.Duration().Seconds())
	fmt.Fprintf(&b, "  %-14s%.2f\n", strings.ToUpper(unit[:1])+unit[1:]+"/sec:", r.RequestsPerSecond)
	fmt.Fprintf(&b, "  %-14s%s\n", "Slowest:", ms(r.Slowest))
	fmt.Fprintf(&b, "  %-14s%s\n", "Fastest:", ms(r.Fastest))
	fmt.Fprintf(&b, "  %-14s%s\n", "Average:", ms(r.Average))
	fmt.Fprintf(&b, "  %-14s%s\n", "Stddev:", ms(r.Stddev))

	if len(r.Histogram) > 0 {
		b.WriteString("\nLatency histogram:\n")
		var most int64
		for _, bar := range r.Histogram {
			most = max(most, bar.Count)
		}
		width := len(strconv.FormatInt(most, 10))
		for _, bar := range r.Histogram {
			n := 0
			if most > 0 {
				n = int((bar.Count*40 + most - 1) / most) // round up: any count shows
			}
			fmt.Fprintf(&b, "  <= %12s  [%*d]  |%s\n", ms(bar.UpTo), width, bar.Count, strings.Repeat("#", n))
		}
	}

	if r.Requests > 0 {
		b.WriteString("\nLatency percentiles:\n")
		for _, p := range PercentileLevels {
			name := PercentileName(p)
			fmt.Fprintf(&b, "  %-6s %14s\n", name, ms(r.Percentiles[name]))
		}
	}

	if len(r.Counters) > 0 {
		b.WriteString("\nCounters:\n")
		for _, k := range sortedKeys(r.Counters) {
			fmt.Fprintf(&b, "  %-22s%d\n", k+":", r.Counters[k])
		}
	}
	if len(r.ErrorCounts) > 0 {
		b.WriteString("\nErrors:\n")
		for _, k := range sortedKeys(r.ErrorCounts) {
			fmt.Fprintf(&b, "  %8d  %s\n", r.ErrorCounts[k], k)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
