package bench

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// subBits sets the histogram's precision: values below 1<<subBits are counted
// exactly, and above that each power-of-two range is cut into
// 1<<(subBits-1) equal buckets, so a bucket is never wider than 1/128 of the
// values in it. Storing every sample would be exact but grows without bound
// in a run limited only by time; this keeps memory at a few kilobytes.
const (
	subBits   = 8
	subCount  = 1 << subBits // exact values below this
	halfCount = subCount / 2 // buckets per power of two above it
)

// bucketOf returns the index of the bucket holding v (nanoseconds, v >= 0).
func bucketOf(v int64) int {
	u := uint64(v)
	if u < subCount {
		return int(u)
	}
	shift := bits.Len64(u) - subBits // >= 1
	return subCount + (shift-1)*halfCount + int(u>>uint(shift)) - halfCount
}

// bucketBounds returns the smallest value in bucket i and the bucket's width.
func bucketBounds(i int) (low, width int64) {
	if i < subCount {
		return int64(i), 1
	}
	shift := (i-subCount)/halfCount + 1
	top := int64((i-subCount)%halfCount + halfCount)
	return top << uint(shift), int64(1) << uint(shift)
}

// Histogram records latencies and answers count, min, max, mean, standard
// deviation and percentiles. The zero value is empty and ready to use; all
// methods are safe for concurrent use.
type Histogram struct {
	mu struct {
		sync.Mutex
		counts   []int64 // by bucket index; grown on demand
		n        int64
		min, max int64
		// mean and m2 follow Welford's method, which stays accurate where
		// a plain sum of squares of nanoseconds would overflow or cancel.
		mean, m2 float64
	}
}

// Record adds one latency. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	i := bucketOf(v)
	h.mu.Lock()
	defer h.mu.Unlock()
	if i >= len(h.mu.counts) {
		grown := make([]int64, i+1, max(i+1, 2*len(h.mu.counts)))
		copy(grown, h.mu.counts)
		h.mu.counts = grown
	}
	h.mu.counts[i]++
	h.addMomentsLocked(1, float64(v), 0)
	if h.mu.n == 1 || v < h.mu.min {
		h.mu.min = v
	}
	if v > h.mu.max {
		h.mu.max = v
	}
}

// addMomentsLocked merges a group of n values with the given mean and m2 into
// the running mean and m2 (Chan et al.'s parallel form of Welford's method).
func (h *Histogram) addMomentsLocked(n int64, mean, m2 float64) {
	total := h.mu.n + n
	delta := mean - h.mu.mean
	h.mu.mean += delta * float64(n) / float64(total)
	h.mu.m2 += m2 + delta*delta*float64(h.mu.n)*float64(n)/float64(total)
	h.mu.n = total
}

// Merge adds every value recorded in o to h. o must not be h.
func (h *Histogram) Merge(o *Histogram) {
	s := o.Snapshot()
	if s.n == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(s.counts) > len(h.mu.counts) {
		grown := make([]int64, len(s.counts))
		copy(grown, h.mu.counts)
		h.mu.counts = grown
	}
	for i, c := range s.counts {
		h.mu.counts[i] += c
	}
	if h.mu.n == 0 || s.min < h.mu.min {
		h.mu.min = s.min
	}
	if s.max > h.mu.max {
		h.mu.max = s.max
	}
	h.addMomentsLocked(s.n, s.mean, s.m2)
}

// Snapshot returns an immutable copy of the histogram's current contents.
func (h *Histogram) Snapshot() HistogramSnapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HistogramSnapshot{
		counts: append([]int64(nil), h.mu.counts...),
		n:      h.mu.n,
		min:    h.mu.min,
		max:    h.mu.max,
		mean:   h.mu.mean,
		m2:     h.mu.m2,
	}
}

// HistogramSnapshot is a point-in-time copy of a Histogram. Its methods
// return zero for an empty snapshot.
type HistogramSnapshot struct {
	counts   []int64
	n        int64
	min, max int64
	mean, m2 float64
}

// Count returns the number of recorded values.
func (s HistogramSnapshot) Count() int64 { return s.n }

// Min returns the smallest recorded value, exactly.
func (s HistogramSnapshot) Min() time.Duration { return time.Duration(s.min) }

// Max returns the largest recorded value, exactly.
func (s HistogramSnapshot) Max() time.Duration { return time.Duration(s.max) }

// Mean returns the average of the recorded values.
func (s HistogramSnapshot) Mean() time.Duration { return time.Duration(math.Round(s.mean)) }

// Stddev returns the population standard deviation of the recorded values.
func (s HistogramSnapshot) Stddev() time.Duration {
	if s.n == 0 {
		return 0
	}
	return time.Duration(math.Round(math.Sqrt(s.m2 / float64(s.n))))
}

// Percentile returns the latency below which p percent of the recorded
// values fall (0 < p <= 100), using the nearest-rank definition: the value
// of rank ceil(p/100 * count). The answer is within half a bucket (0.4%) of
// the exact value and never outside [Min, Max].
func (s HistogramSnapshot) Percentile(p float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(p / 100 * float64(s.n)))
	rank = min(max(rank, 1), s.n)
	var seen int64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			low, width := bucketBounds(i)
			v := low + (width-1)/2
			return time.Duration(min(max(v, s.min), s.max))
		}
	}
	return time.Duration(s.max) // unreachable: counts add up to n
}

// Bin is one bar of a displayed latency histogram: Count values fell in
// (previous bin's UpTo, UpTo].
type Bin struct {
	UpTo  time.Duration
	Count int64
}

// Bins splits [Min, Max] into n bars whose edges grow geometrically, so that
// both the bulk of the requests and a long tail stay readable, and counts
// the values in each. Each recorded bucket is placed whole by its midpoint,
// so a bar edge is as precise as the histogram itself. It returns nil for an
// empty snapshot; a snapshot whose values are all equal gives one bar.
func (s HistogramSnapshot) Bins(n int) []Bin {
	if s.n == 0 || n <= 0 {
		return nil
	}
	lo, hi := float64(max(s.min, 1)), float64(s.max)
	if s.max <= s.min || n == 1 {
		return []Bin{{UpTo: time.Duration(s.max), Count: s.n}}
	}
	bins := make([]Bin, n)
	ratio := hi / lo
	for i := range bins {
		bins[i].UpTo = time.Duration(math.Round(lo * math.Pow(ratio, float64(i+1)/float64(n))))
	}
	bins[n-1].UpTo = time.Duration(s.max)
	j := 0
	for i, c := range s.counts {
		if c == 0 {
			continue
		}
		low, width := bucketBounds(i)
		mid := time.Duration(low + (width-1)/2)
		for j < n-1 && mid > bins[j].UpTo {
			j++
		}
		bins[j].Count += c
	}
	return bins
}
