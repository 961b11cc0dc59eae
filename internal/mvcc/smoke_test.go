package mvcc

import "testing"

func TestSmoke(t *testing.T) {
	ts := newTestStore(t)
	if ts.Rev() != 1 {
		t.Fatalf("rev %d", ts.Rev())
	}
	r := ts.mustPut("a", "1")
	if r.Header.Revision != 2 {
		t.Fatalf("%v", r)
	}
	ts.mustPut("a", "2")
	ts.mustPut("b", "3")
	g := ts.get("a", 0)
	t.Logf("%v", g)
	g = ts.get("a", 2)
	t.Logf("%v", g)
	d := ts.del("a", "c", true)
	t.Logf("%v", d)
	g = ts.get("a", 0)
	t.Logf("%v", g)
	ts.reopen()
	t.Logf("rev %d", ts.Rev())
}
