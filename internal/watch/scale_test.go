package watch

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestTenThousandWatchers: 10,000 watchers on 100 streams (one key,
// prefix and from-key watchers over the same hot key) each receive every
// event, in order, once.
func TestTenThousandWatchers(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 watchers")
	}
	e := newEnv(t, Options{})
	const streams, perStream, writes = 100, 100, 50
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, streams)
	var ss []*Stream
	for si := range streams {
		s := e.hub.NewStream()
		defer s.Close()
		ss = append(ss, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := make(map[int64]int64)
			got, created := 0, 0
			for got < perStream*writes {
				rs, err := s.Recv(ctx)
				if err != nil {
					errc <- fmt.Errorf("stream %d: %w after %d events", si, err, got)
					return
				}
				for _, r := range rs {
					if r.Created {
						created++
						continue
					}
					for _, ev := range r.Events {
						if rev := ev.Kv.ModRevision; rev <= last[r.WatchID] {
							errc <- fmt.Errorf("stream %d watch %d: revision %d after %d", si, r.WatchID, rev, last[r.WatchID])
							return
						}
						last[r.WatchID] = ev.Kv.ModRevision
						got++
					}
				}
			}
			if created != perStream {
				errc <- fmt.Errorf("stream %d: %d created responses", si, created)
			}
		}()
	}
	for _, s := range ss {
		for i := range perStream {
			r := WatchRequest{Key: []byte("hot")}
			switch i % 3 {
			case 1:
				r = WatchRequest{Key: []byte("h"), End: []byte("i")}
			case 2:
				r = WatchRequest{Key: []byte("a"), FromKey: true}
			}
			if _, err := s.Watch(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range writes {
		e.put("hot", fmt.Sprint(i))
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		cancel()
		<-done
	}
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
