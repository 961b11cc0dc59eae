package storage

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

// splitOrder is the order Pebble requires of Comparer.Compare: the prefixes
// (Split) bytewise, then the suffixes bytewise.
func splitOrder(a, b []byte) int {
	pa, pb := a[:splitVersion(a)], b[:splitVersion(b)]
	if c := bytes.Compare(pa, pb); c != 0 {
		return c
	}
	return bytes.Compare(a[len(pa):], b[len(pb):])
}

// TestComparerSeparatorsKeepSplitOrder checks the keys Pebble makes up for
// index blocks (Separator, Successor) against version keys of nearby user
// keys: Compare must agree with the prefix-then-suffix order on all of
// them, or lookups in tables go wrong.
func TestComparerSeparatorsKeepSplitOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var keys [][]byte
	for range 300 {
		user := []byte{PrefixKeys, 'k', byte('a' + rng.IntN(3))}
		for range rng.IntN(3) {
			user = append(user, byte(1+rng.IntN(255))) // escaped keys hold no 0x00 0x01
		}
		k := append(user, 0x00, 0x01)
		for range versionRevLen {
			k = append(k, byte(rng.IntN(256)))
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, Comparer.Compare)
	var made [][]byte
	for i := 1; i < len(keys); i++ {
		if Comparer.Compare(keys[i-1], keys[i]) < 0 {
			made = append(made, Comparer.Separator(nil, keys[i-1], keys[i]))
		}
		made = append(made, Comparer.Successor(nil, keys[i]))
	}
	for _, m := range made {
		for _, k := range keys {
			if got, want := Comparer.Compare(k, m), splitOrder(k, m); got != want {
				t.Fatalf("Compare(%x, %x) = %d, but the prefix-then-suffix order says %d", k, m, got, want)
			}
		}
	}
}
