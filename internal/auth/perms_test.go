package auth

import (
	"math/rand/v2"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
)

// naiveCovers is the reference for spanSet.covers on requests that name
// keys: it walks from key to the request's end, jumping to the furthest end
// of any span that holds the current point, in no particular order.
func naiveCovers(spans []span, key, rangeEnd []byte) bool {
	holds := func(s span, k []byte) bool { return cmpBound(s.begin, k) <= 0 && cmpBound(k, s.end) < 0 }
	end := rangeEnd
	switch {
	case len(rangeEnd) == 0:
		end = append(append([]byte{}, key...), 0) // the one key
	case isOpenEnded(rangeEnd):
		end = nil
	}
	if cmpBound(end, key) <= 0 {
		end = append(append([]byte{}, key...), 0) // names no key: judged by key
	}
	cur := key
	for cmpBound(cur, end) < 0 {
		var next []byte
		found := false
		for _, s := range spans {
			if holds(s, cur) && (!found || cmpBound(s.end, next) > 0) {
				next, found = s.end, true
			}
		}
		if !found {
			return false
		}
		cur = next
	}
	return true
}

func TestSpanSetCovers(t *testing.T) {
	set := func(spans ...span) spanSet { return newSpanSet(spans) }
	sp := func(b, e string) span {
		s := span{begin: []byte(b)}
		if e != "" {
			s.end = []byte(e)
		}
		return s
	}
	tests := []struct {
		name     string
		set      spanSet
		key, end string
		want     bool
	}{
		{"one key", set(sp("a", "a\x00")), "a", "", true},
		{"one key is not its neighbour", set(sp("a", "a\x00")), "a\x00", "", false},
		{"one key covers the range of itself", set(sp("a", "a\x00")), "a", "a\x00", true},
		{"range inside", set(sp("a", "c")), "a", "c", true},
		{"range past the end", set(sp("a", "c")), "b", "d", false},
		{"touching spans merge", set(sp("a", "c"), sp("c", "e")), "b", "d", true},
		{"a gap is not covered", set(sp("a", "c"), sp("c\x00", "e")), "b", "d", false},
		{"from key on", set(sp("b", "")), "x", "\x00", true},
		{"from key on, request starting before", set(sp("b", "")), "a", "\x00", false},
		{"bounded span does not cover from key", set(sp("a", "z")), "b", "\x00", false},
		{"empty key is covered by nothing", set(sp("\x00", "")), "", "", false},
		{"empty range judged by its key", set(sp("a", "b")), "a", "a", true},
		{"overlapping spans", set(sp("a", "d"), sp("b", "c")), "a", "d", true},
		{"unsorted input", set(sp("m", "p"), sp("a", "m")), "b", "o", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.set.covers([]byte(tt.key), []byte(tt.end)); got != tt.want {
				t.Fatalf("covers(%q, %q) = %v, want %v (set %q)", tt.key, tt.end, got, tt.want, tt.set)
			}
		})
	}
}

// TestSpanSetMatchesNaive compares spanSet with naiveCovers on random spans
// and requests over a small alphabet.
func TestSpanSetMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	keys := []string{"a", "a\x00", "aa", "ab", "b", "b\x00", "ba", "c", "d", "e"}
	for i := range 20000 {
		var spans []span
		for range rng.IntN(6) {
			p := permSpanOf(keys[rng.IntN(len(keys))], []string{"", "\x00", keys[rng.IntN(len(keys))]}[rng.IntN(3)])
			if cmpBound(p.begin, p.end) < 0 {
				spans = append(spans, p)
			}
		}
		key := keys[rng.IntN(len(keys))]
		end := []string{"", "\x00", keys[rng.IntN(len(keys))]}[rng.IntN(3)]
		if isInverted([]byte(key), []byte(end)) {
			continue
		}
		want := naiveCovers(spans, []byte(key), []byte(end))
		got := newSpanSet(append([]span(nil), spans...)).covers([]byte(key), []byte(end))
		if got != want {
			t.Fatalf("case %d: covers(%q, %q) = %v, naive %v; spans %q", i, key, end, got, want, spans)
		}
	}
}

func permSpanOf(key, end string) span { return permSpan(permission(authpb.READ, key, end)) }

func TestIsValidPermissionRange(t *testing.T) {
	for _, tt := range []struct {
		key, end string
		want     bool
	}{
		{"a", "", true}, {"a", "\x00", true}, {"a", "b", true}, {"\x00", "\x00", true},
		{"", "", false}, {"", "b", false}, {"b", "a", false}, {"a", "a", false},
	} {
		if got := isValidPermissionRange([]byte(tt.key), []byte(tt.end)); got != tt.want {
			t.Errorf("isValidPermissionRange(%q, %q) = %v, want %v", tt.key, tt.end, got, tt.want)
		}
	}
}

func TestCmpBound(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"", "a", 1}, {"a", "", -1}, {"a", "b", -1}, {"b", "a", 1}, {"\xff", "", -1}} {
		if got := cmpBound([]byte(tt.a), []byte(tt.b)); got != tt.want {
			t.Errorf("cmpBound(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
