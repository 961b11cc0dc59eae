package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	r := NewReport("put", h.Snapshot(), map[string]int64{"etcdserver: request timed out": 3}, 2*time.Second)
	r.Endpoints, r.Conns, r.Clients = []string{"127.0.0.1:2379"}, 2, 8
	r.Counters = map[string]int64{"keys_returned": 42}
	return r
}

func TestNewReportFigures(t *testing.T) {
	r := sampleReport()
	if r.Requests != 1000 || r.Errors != 3 {
		t.Fatalf("requests %d errors %d, want 1000 and 3", r.Requests, r.Errors)
	}
	if r.RequestsPerSecond != 500 {
		t.Errorf("requests/sec %v, want 500 (1000 in 2s)", r.RequestsPerSecond)
	}
	if r.Fastest.Duration() != time.Microsecond || r.Slowest.Duration() != time.Millisecond {
		t.Errorf("fastest %v slowest %v, want 1µs and 1ms", r.Fastest.Duration(), r.Slowest.Duration())
	}
	if d := r.Average.Duration() - 500500*time.Nanosecond; d < -1 || d > 1 {
		t.Errorf("average %v, want 500.5µs", r.Average.Duration())
	}
	want := map[string]time.Duration{
		"p10": 100 * time.Microsecond, "p50": 500 * time.Microsecond,
		"p99": 990 * time.Microsecond, "p99.9": 999 * time.Microsecond,
	}
	for name, w := range want {
		got := r.Percentiles[name].Duration()
		if d := got - w; d < -w/256 || d > w/256 {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	if len(r.Percentiles) != len(PercentileLevels) {
		t.Errorf("%d percentiles, want %d", len(r.Percentiles), len(PercentileLevels))
	}
	var inBars int64
	for _, b := range r.Histogram {
		inBars += b.Count
	}
	if inBars != r.Requests {
		t.Errorf("histogram holds %d requests, want %d", inBars, r.Requests)
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	r := sampleReport()
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	// A script reads plain numbers in seconds.
	var raw map[string]any
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, buf.String())
	}
	if raw["duration_seconds"] != 2.0 || raw["requests"] != 1000.0 || raw["requests_per_second"] != 500.0 {
		t.Errorf("duration/requests/rate = %v/%v/%v, want 2/1000/500", raw["duration_seconds"], raw["requests"], raw["requests_per_second"])
	}
	if p, ok := raw["percentiles_seconds"].(map[string]any); !ok || p["p99.9"] == nil {
		t.Errorf("no p99.9 in %v", raw["percentiles_seconds"])
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Slowest != r.Slowest || back.Percentiles["p50"] != r.Percentiles["p50"] || back.Counters["keys_returned"] != 42 {
		t.Errorf("round trip changed the report: %+v", back)
	}
}

func TestReportText(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"Summary (put, 2 conns, 8 clients):",
		"Total:        1000 requests, 3 errors",
		"Requests/sec: 500.00",
		"Slowest:      1.0000 ms",
		"Fastest:      0.0010 ms",
		"Latency histogram:",
		"Latency percentiles:",
		"p99.9",
		"keys_returned:",
		"3  etcdserver: request timed out",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "|") != histogramBins {
		t.Errorf("want %d histogram bars:\n%s", histogramBins, out)
	}
}

func TestReportTextWithoutRequests(t *testing.T) {
	var buf bytes.Buffer
	r := NewReport("range", (&Histogram{}).Snapshot(), nil, time.Second)
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); strings.Contains(out, "percentiles") || !strings.Contains(out, "0 requests, 0 errors") {
		t.Errorf("empty report:\n%s", out)
	}
}

func TestErrorTallyCapsDistinctMessages(t *testing.T) {
	var tally errorTally
	for i := range maxErrorKinds + 10 {
		tally.add(errors.New(strings.Repeat("x", i+1)))
	}
	tally.add(errors.New("x"))
	got := tally.snapshot()
	if len(got) != maxErrorKinds+1 || got[otherErrors] != 10 || got["x"] != 2 {
		t.Errorf("tally has %d kinds, %d other, %d of x; want %d, 10, 2", len(got), got[otherErrors], got["x"], maxErrorKinds+1)
	}
}

func TestConfigValidateAndKeys(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if got := cfg.key(0); got != "00000000" {
		t.Errorf("key 0 = %q, want 00000000", got)
	}
	cfg.KeySpaceSize = 1000
	if got := cfg.key(1234); got != "00000234" {
		t.Errorf("key 1234 in a space of 1000 = %q, want 00000234", got)
	}
	cfg.KeyPrefix = "bench/"
	if got := cfg.key(7); got != "bench/00000007" {
		t.Errorf("key 7 with prefix bench/ = %q, want bench/00000007", got)
	}
	cfg.KeyPrefix = ""
	bad := map[string]func(*Config){
		"no bound":          func(c *Config) { c.Total, c.Duration = 0, 0 },
		"no clients":        func(c *Config) { c.Clients = 0 },
		"no user name":      func(c *Config) { c.User = ":pw" },
		"no conns":          func(c *Config) { c.Conns = 0 },
		"keys too short":    func(c *Config) { c.KeySize, c.KeySpaceSize = 3, 10000 },
		"no endpoints":      func(c *Config) { c.Endpoints = nil },
		"negative rate":     func(c *Config) { c.Rate = -1 },
		"empty key space":   func(c *Config) { c.KeySpaceSize = 0 },
		"negative val size": func(c *Config) { c.ValSize = -1 },
	}
	for name, mutate := range bad {
		c := DefaultConfig()
		mutate(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: validate accepted %+v", name, c)
		}
	}
	c := DefaultConfig()
	c.Total = 0
	if err := c.validate(); !errors.Is(err, ErrNoBound) {
		t.Errorf("no bound: got %v, want ErrNoBound", err)
	}
	c.Duration = time.Second
	if err := c.validate(); err != nil {
		t.Errorf("a duration alone is a bound: %v", err)
	}
}

func TestProgressFraction(t *testing.T) {
	cases := []struct {
		total   int64
		limit   time.Duration
		done    int64
		elapsed time.Duration
		want    float64
	}{
		{total: 100, done: 25, want: 0.25},
		{limit: 10 * time.Second, elapsed: 5 * time.Second, want: 0.5},
		{total: 100, limit: 10 * time.Second, done: 10, elapsed: 8 * time.Second, want: 0.8},
		{total: 100, done: 150, want: 1},
	}
	for _, c := range cases {
		s := progressState{total: c.total, limit: c.limit}
		if got := s.fraction(c.done, c.elapsed); got != c.want {
			t.Errorf("%+v: fraction %v, want %v", c, got, c.want)
		}
	}
}

func TestProgressDraw(t *testing.T) {
	start := time.Now()
	done := func() int64 { return 50 }
	var bar, lines bytes.Buffer
	(&progress{w: &bar, mode: ProgressBar, state: progressState{done: done, total: 100, started: start}}).draw(start.Add(time.Second))
	(&progress{w: &lines, mode: ProgressLines, state: progressState{done: done, total: 100, started: start}}).draw(start.Add(time.Second))
	if got := bar.String(); !strings.HasPrefix(got, "\r[===============>") || !strings.Contains(got, " 50%  50/100  50 req/s") {
		t.Errorf("bar = %q", got)
	}
	if got := lines.String(); got != "bench: 50/100 requests, 50 req/s, 1s elapsed\n" {
		t.Errorf("line = %q", got)
	}
	if startProgress(nil, ProgressBar, progressState{}) != nil || startProgress(&bar, ProgressNone, progressState{}) != nil {
		t.Error("progress started without a writer or with ProgressNone")
	}
}

func TestWorkloadOptionsValidatedBeforeConnecting(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Endpoints = []string{"127.0.0.1:1"} // never dialled: every call fails validation first
	ctx := context.Background()
	noPuts := cfg
	noPuts.Total, noPuts.Duration = 0, time.Second
	tooMany := cfg
	tooMany.Total = maxWatchPuts + 1
	checks := map[string]func() error{
		"watch without a put count": func() error {
			_, err := WatchLatency(ctx, noPuts, WatchOptions{Streams: 1, WatchersPerStream: 1})
			return err
		},
		"watch with too many puts": func() error {
			_, err := WatchLatency(ctx, tooMany, WatchOptions{Streams: 1, WatchersPerStream: 1})
			return err
		},
		"watch without streams": func() error { _, err := WatchLatency(ctx, cfg, WatchOptions{WatchersPerStream: 1}); return err },
		"txn without ops":       func() error { _, err := TxnPut(ctx, cfg, TxnPutOptions{}); return err },
		"lease without leases":  func() error { _, err := LeaseKeepalive(ctx, cfg, LeaseOptions{TTL: 10}); return err },
		"lease without a TTL":   func() error { _, err := LeaseKeepalive(ctx, cfg, LeaseOptions{Leases: 1}); return err },
	}
	for name, check := range checks {
		if err := check(); err == nil || strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("%s: got %v, want a validation error before connecting", name, err)
		}
	}
}
