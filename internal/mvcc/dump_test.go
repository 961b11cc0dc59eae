package mvcc

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

func dumpKeys(t *testing.T, ts *testStore, m *model) {
	it, _ := ts.eng.DB().NewIter(&pebble.IterOptions{LowerBound: []byte{'e'}, UpperBound: []byte{'l'}})
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if k[0] == 'k' {
			p, main, sub, _ := splitVersionKey(k)
			key, _ := decodePrefix(p)
			t.Logf("k %q %d.%d %x", key, main, sub, it.Value())
		} else {
			main, sub, _ := decodeEventKey(k)
			t.Logf("e %d.%d %q", main, sub, it.Value())
		}
	}
	for k, vs := range m.keys {
		for _, v := range vs {
			t.Logf("model %q %d.%d tomb=%v", k, v.main, v.sub, v.tomb)
		}
	}
}
