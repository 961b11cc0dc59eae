package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBoundsHoldTheirValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	values := []int64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 1<<62 + 12345, math.MaxInt64}
	for range 10000 {
		values = append(values, rng.Int64N(1<<uint(rng.IntN(63))+1))
	}
	for _, v := range values {
		i := bucketOf(v)
		low, width := bucketBounds(i)
		if v < low || v-low >= width {
			t.Fatalf("value %d in bucket %d = [%d, %d+%d)", v, i, low, low, width)
		}
		if v >= subCount && width > v/halfCount {
			t.Fatalf("bucket of %d is %d wide, more than 1/%d of the value", v, width, halfCount)
		}
		if v < subCount && width != 1 {
			t.Fatalf("small value %d has a bucket %d wide, want exact", v, width)
		}
	}
	// Buckets are contiguous and ordered: each starts where the previous ends.
	for i := 1; i < subCount+20*halfCount; i++ {
		pl, pw := bucketBounds(i - 1)
		l, _ := bucketBounds(i)
		if pl+pw != l {
			t.Fatalf("bucket %d ends at %d but bucket %d starts at %d", i-1, pl+pw, i, l)
		}
	}
}

// exactPercentile is the nearest-rank percentile of sorted values, the
// naive reference the histogram must agree with.
func exactPercentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func TestPercentilesMatchExactWithinPrecision(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	dists := map[string]func() time.Duration{
		"uniform 1-10ms": func() time.Duration { return time.Millisecond + time.Duration(rng.Int64N(int64(9*time.Millisecond))) },
		"exponential":    func() time.Duration { return time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond)) },
		"long tail": func() time.Duration {
			if rng.IntN(100) == 0 {
				return time.Duration(rng.Int64N(int64(time.Second)))
			}
			return 300*time.Microsecond + time.Duration(rng.Int64N(200000))
		},
		"tiny nanoseconds": func() time.Duration { return time.Duration(rng.Int64N(200)) },
	}
	for name, gen := range dists {
		t.Run(name, func(t *testing.T) {
			var h Histogram
			var vals []time.Duration
			for range 20000 {
				v := gen()
				vals = append(vals, v)
				h.Record(v)
			}
			slices.Sort(vals)
			s := h.Snapshot()
			if s.Count() != int64(len(vals)) || s.Min() != vals[0] || s.Max() != vals[len(vals)-1] {
				t.Fatalf("count/min/max = %d/%v/%v, want %d/%v/%v", s.Count(), s.Min(), s.Max(), len(vals), vals[0], vals[len(vals)-1])
			}
			for _, p := range append(PercentileLevels, 0.001, 100) {
				got, want := s.Percentile(p), exactPercentile(vals, p)
				if diff := math.Abs(float64(got - want)); diff > float64(want)/256+1 {
					t.Errorf("p%v = %v, exact %v: off by more than 1/256", p, got, want)
				}
			}
		})
	}
}

func TestMeanAndStddevAreExact(t *testing.T) {
	var h Histogram
	// 2,4,4,4,5,5,7,9 ms: mean 5ms, population stddev 2ms.
	for _, v := range []int{2, 4, 4, 4, 5, 5, 7, 9} {
		h.Record(time.Duration(v) * time.Millisecond)
	}
	s := h.Snapshot()
	if s.Mean() != 5*time.Millisecond || s.Stddev() != 2*time.Millisecond {
		t.Fatalf("mean %v stddev %v, want 5ms and 2ms", s.Mean(), s.Stddev())
	}
	// The 4th of 8 values, to the histogram's precision (not 5ms, the 5th).
	if got := s.Percentile(50); got < 4*time.Millisecond || got > 4*time.Millisecond+4*time.Millisecond/256 {
		t.Fatalf("p50 = %v, want 4ms", got)
	}
}

func TestMergeEqualsRecordingEverything(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var all, a, b Histogram
	for i := range 5000 {
		v := time.Duration(rng.Int64N(int64(50 * time.Millisecond)))
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	var merged Histogram
	merged.Merge(&a)
	merged.Merge(&b)
	merged.Merge(&Histogram{}) // empty: no effect
	got, want := merged.Snapshot(), all.Snapshot()
	if got.Count() != want.Count() || got.Min() != want.Min() || got.Max() != want.Max() {
		t.Fatalf("merged count/min/max %d/%v/%v, want %d/%v/%v", got.Count(), got.Min(), got.Max(), want.Count(), want.Min(), want.Max())
	}
	if d := got.Mean() - want.Mean(); d < -1 || d > 1 {
		t.Errorf("merged mean %v, want %v", got.Mean(), want.Mean())
	}
	if d := got.Stddev() - want.Stddev(); d < -1 || d > 1 {
		t.Errorf("merged stddev %v, want %v", got.Stddev(), want.Stddev())
	}
	for _, p := range PercentileLevels {
		if got.Percentile(p) != want.Percentile(p) {
			t.Errorf("merged p%v = %v, want %v", p, got.Percentile(p), want.Percentile(p))
		}
	}
}

func TestEmptyHistogramIsAllZero(t *testing.T) {
	var h Histogram
	s := h.Snapshot()
	if s.Count() != 0 || s.Min() != 0 || s.Max() != 0 || s.Mean() != 0 || s.Stddev() != 0 || s.Percentile(99) != 0 || s.Bins(10) != nil {
		t.Fatalf("empty histogram is not all zero: %+v", s)
	}
}

func TestBinsCoverEveryValue(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var h Histogram
	for range 10000 {
		h.Record(200*time.Microsecond + time.Duration(rng.ExpFloat64()*float64(time.Millisecond)))
	}
	s := h.Snapshot()
	bins := s.Bins(12)
	if len(bins) != 12 {
		t.Fatalf("got %d bins, want 12", len(bins))
	}
	var sum int64
	for i, b := range bins {
		sum += b.Count
		if i > 0 && b.UpTo <= bins[i-1].UpTo {
			t.Errorf("bin %d ends at %v, not after bin %d at %v", i, b.UpTo, i-1, bins[i-1].UpTo)
		}
	}
	if sum != s.Count() {
		t.Errorf("bins hold %d values, want %d", sum, s.Count())
	}
	if bins[len(bins)-1].UpTo != s.Max() {
		t.Errorf("last bin ends at %v, want the slowest %v", bins[len(bins)-1].UpTo, s.Max())
	}
	if bins[0].Count == 0 {
		t.Error("first bin is empty, but the fastest value belongs in it")
	}

	var same Histogram
	for range 5 {
		same.Record(time.Millisecond)
	}
	if got := same.Snapshot().Bins(10); len(got) != 1 || got[0].Count != 5 || got[0].UpTo != time.Millisecond {
		t.Errorf("equal values give bins %+v, want one bin of 5 up to 1ms", got)
	}
}
