package watch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkFanout measures how long one put takes to reach every one of
// many watchers (streams × per stream, all on the written key), reporting
// the median and p99 of that latency.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []struct{ streams, per int }{{100, 100}, {1000, 100}} {
		b.Run(fmt.Sprintf("%dx%d", n.streams, n.per), func(b *testing.B) {
			e := newEnv(b, Options{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			got := make(chan struct{}, n.streams)
			for range n.streams {
				s := e.hub.NewStream()
				defer s.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					seen := 0
					for {
						rs, err := s.Recv(ctx)
						if err != nil {
							return
						}
						for _, r := range rs {
							if len(r.Events) > 0 {
								seen++
								if seen == n.per {
									seen = 0
									got <- struct{}{}
								}
							}
						}
					}
				}()
				for range n.per {
					if _, err := s.Watch(ctx, WatchRequest{Key: []byte("hot")}); err != nil {
						b.Fatal(err)
					}
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				e.put("hot", fmt.Sprint(i))
				for range n.streams {
					<-got
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			cancel()
			wg.Wait()
		})
	}
}
