package watch

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIndexMatchesNaiveModel adds and removes random single-key, range
// and from-key watchers and checks every stab against a scan of all of
// them.
func TestIndexMatchesNaiveModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() []byte { return []byte(fmt.Sprintf("%02d", rng.IntN(40))) }
	x := newIndex()
	var all []*watcher
	check := func(k []byte) {
		t.Helper()
		var got, want []int64
		x.stab(k, func(w *watcher) { got = append(got, w.id) })
		for _, w := range all {
			if w.contains(k) {
				want = append(want, w.id)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("stab %q: got %v, want %v", k, got, want)
		}
	}
	for i := range 20000 {
		switch op := rng.IntN(10); {
		case op < 5 || len(all) == 0:
			w := &watcher{id: int64(i), key: key(), pos: -1}
			switch rng.IntN(3) {
			case 1:
				w.end = append(slices.Clone(w.key), byte('0'+rng.IntN(10)))
				if rng.IntN(2) == 0 {
					w.end = key()
				}
				if string(w.end) <= string(w.key) {
					w.end = nil
				}
			case 2:
				w.fromKey = true
			}
			x.add(w)
			all = append(all, w)
		case op < 8:
			j := rng.IntN(len(all))
			x.remove(all[j])
			all = slices.Delete(all, j, j+1)
		default:
			check(key())
		}
		if x.len() != len(all) {
			t.Fatalf("len %d, want %d", x.len(), len(all))
		}
	}
	for _, w := range all {
		check(w.key)
	}
	n := 0
	x.each(func(*watcher) { n++ })
	if n != len(all) {
		t.Fatalf("each visited %d of %d", n, len(all))
	}
	for _, w := range all {
		x.remove(w)
	}
	if x.root != nil || len(x.keys) != 0 || x.len() != 0 {
		t.Fatal("index not empty after removing everything")
	}
}
