package mvcc

import (
	"fmt"
	"strings"
	"testing"
)

// dumpKeys logs the store's keyspaces and the model's versions, to debug a
// failed comparison.
func dumpKeys(t *testing.T, ts *testStore, m *model) {
	var sb strings.Builder
	if err := Dump(ts.eng, &sb); err != nil {
		t.Log(err)
	}
	t.Log("store:\n" + sb.String())
	for k, vs := range m.keys {
		for _, v := range vs {
			t.Logf("model %q %d.%d tomb=%v", k, v.main, v.sub, v.tomb)
		}
	}
}

func TestDump(t *testing.T) {
	ts := newTestStore(t)
	ts.mustPut("a", "1")
	ts.mustPut("a\x00", "2", withLease(3))
	ts.del("a", "", false)
	var sb strings.Builder
	if err := Dump(ts.eng, &sb); err != nil {
		t.Fatal(err)
	}
	want := `x rev: 4
x compact scheduled: unset
x compact finished: unset
k "a" 4.0 tombstone
k "a" 2.0 create=2 version=1 lease=0 value="1"
k "a\x00" 3.0 create=3 version=1 lease=3 value="2"
e 2.0 put "a"
e 3.0 put "a\x00"
e 4.0 delete "a"
`
	if sb.String() != want {
		t.Fatalf("dump:\n%s\nwant:\n%s", sb.String(), want)
	}
}

func TestDumpCompactionHashes(t *testing.T) {
	ts := newTestStore(t)
	ts.mustPut("a", "1")
	ts.mustPut("a", "2")
	ch, err := ts.compact(2)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch)
	h, _, _, err := ts.HashKV(2)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := Dump(ts.eng, &sb); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("x compaction hash 2: %08x, previous compaction -1\n", h)
	if !strings.Contains(sb.String(), want) {
		t.Fatalf("dump:\n%s\nwant a line %q", sb.String(), want)
	}
}
