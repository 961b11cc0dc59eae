package raftlog

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
)

// TestConcurrentReads runs readers against a writer that appends,
// overwrites, compacts (removing segments) and resets. Every read answers
// from one consistent state: an entry it returns has the term Term gave
// for it in the same state or raft.ErrCompacted / raft.ErrUnavailable
// when the log moved; never a read error from a removed file. Run it with
// -race.
func TestConcurrentReads(t *testing.T) {
	fs := vfs.NewMem()
	l := open(t, fs, Options{SegmentBytes: 2048})
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			for !stop.Load() {
				trunc, _ := l.Truncation()
				last := l.LastIndex()
				if last <= trunc {
					continue
				}
				got, err := l.Entries(trunc+1, last+1, 4096)
				if errors.Is(err, raft.ErrCompacted) || errors.Is(err, raft.ErrUnavailable) {
					continue
				}
				if err != nil {
					errc <- err
					return
				}
				for i, e := range got {
					if e.GetIndex() != trunc+1+uint64(i) {
						errc <- errors.New("entries out of order")
						return
					}
				}
				_, _ = l.Term(last)
				_ = l.HardState()
				_ = l.Identity()
			}
		})
	}
	term := uint64(1)
	for k := uint64(0); k < 400; k++ {
		last := l.LastIndex()
		switch {
		case k%50 == 49:
			term++
			must(t, l.Reset(last+5, term, hs(term, 1, last+5)))
		case k%10 == 9:
			trunc, _ := l.Truncation()
			if last > trunc+2 {
				must(t, l.Compact(last-2))
			}
		case k%7 == 6 && last > 3:
			term++
			must(t, l.Append(nil, ents(last-2, last+1, term, "ow"), k%2 == 0))
		default:
			must(t, l.Append(hs(term, 1, last), ents(last+1, last+3, term, "c"), k%2 == 0))
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	must(t, l.Close())
}
