package crashpoint

import (
	"strings"
	"testing"
)

// TestBookVerify checks the checker: a member that lost an acknowledged
// write, holds another value at its revision, or holds a value never
// written is caught; an acknowledged write overwritten by a later write of
// the same key (acknowledged or not) is not a loss.
func TestBookVerify(t *testing.T) {
	b := newBook()
	// Writes 1..2005: 1 and 1001 go to the same key, as 5 and 2005 do.
	b.next.Store(2005)
	k1, k5 := keyName(1), keyName(5)
	if keyName(1001) != k1 || keyName(2005) != k5 {
		t.Fatalf("keyName(1001)=%s keyName(2005)=%s, want %s and %s", keyName(1001), keyName(2005), k1, k5)
	}
	b.add(k1, "v1", 10)
	b.add(k1, "v1001", 30)
	b.add(k5, "v5", 20)
	// An acknowledgement recorded late: the higher revision stays.
	b.add(k1, "v1", 10)
	for _, tc := range []struct {
		name string
		got  map[string]stored
		want string // "" or a part of the complaint
	}{
		{"as acknowledged", map[string]stored{k1: {"v1001", 30}, k5: {"v5", 20}}, ""},
		{"overwritten by an unacknowledged write", map[string]stored{k1: {"v1001", 30}, k5: {"v2005", 40}}, ""},
		{"an unrelated key with a written value", map[string]stored{k1: {"v1001", 30}, k5: {"v5", 20}, keyName(7): {"v7", 41}}, ""},
		{"key missing", map[string]stored{k1: {"v1001", 30}}, "the key is missing"},
		{"older value", map[string]stored{k1: {"v1", 10}, k5: {"v5", 20}}, "lost the acknowledged write " + k1 + "=v1001"},
		{"other value at the revision", map[string]stored{k1: {"v1", 30}, k5: {"v5", 20}}, "where v1001 was acknowledged"},
		{"value of another key", map[string]stored{k1: {"v1001", 30}, k5: {"v6", 40}}, "never written"},
		{"value not yet written", map[string]stored{k1: {"v1001", 30}, k5: {"v3005", 40}}, "never written"},
		{"garbage", map[string]stored{k1: {"v1001", 30}, k5: {"v05", 40}}, "never written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := b.verify(tc.got)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("verify = %q, want %q", got, tc.want)
			}
		})
	}
	if n := b.count(); n != 4 {
		t.Fatalf("count = %d, want 4", n)
	}
}
