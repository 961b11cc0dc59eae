package mvcc

import (
	"bytes"
	"testing"

	"github.com/cairn-db/cairn/internal/storage"
)

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

// FuzzKeyEncoding checks the key-major encoding: user keys and revisions
// round-trip, and encoded versions sort by key ascending, then revision
// descending, with keyBound and skipKey falling where scans rely on them.
func FuzzKeyEncoding(f *testing.F) {
	f.Add([]byte("a"), []byte("b"), int64(1), int64(0), int64(2), int64(0))
	f.Add([]byte("a"), []byte("a\x00"), int64(5), int64(1), int64(5), int64(2))
	f.Add([]byte("\x00"), []byte("\x00\x00"), int64(1), int64(0), int64(1), int64(0))
	f.Add([]byte("\x00\x01"), []byte("\x00\xff"), int64(7), int64(3), int64(1<<40), int64(0))
	f.Add([]byte("\xff\xff"), []byte("\xff"), int64(2), int64(0), int64(3), int64(9))
	f.Add([]byte{}, []byte("\x00\x02"), int64(0), int64(0), int64(1), int64(0))
	f.Add([]byte("a\x00\x01b"), []byte("a\x00\x01"), int64(1<<62), int64(1<<31), int64(1), int64(0))
	f.Fuzz(func(t *testing.T, a, b []byte, mainA, subA, mainB, subB int64) {
		if mainA < 0 || subA < 0 || mainB < 0 || subB < 0 {
			t.Skip("revisions are never negative")
		}
		va := versionKey(nil, a, mainA, subA)
		vb := versionKey(nil, b, mainB, subB)

		prefix, main, sub, err := splitVersionKey(va)
		if err != nil || main != mainA || sub != subA {
			t.Fatalf("split %x: %d.%d %v, want %d.%d", va, main, sub, err, mainA, subA)
		}
		key, err := decodePrefix(prefix)
		if err != nil || !bytes.Equal(key, a) {
			t.Fatalf("decode %x: %q %v, want %q", prefix, key, err, a)
		}

		want := bytes.Compare(a, b)
		if want == 0 {
			// Same key: newer revisions first.
			switch {
			case mainA != mainB:
				if mainB > mainA {
					want = 1
				} else {
					want = -1
				}
			case subA != subB:
				if subB > subA {
					want = 1
				} else {
					want = -1
				}
			}
		}
		if got := sign(bytes.Compare(va, vb)); got != want {
			t.Fatalf("order of (%q,%d.%d) and (%q,%d.%d): %d, want %d", a, mainA, subA, b, mainB, subB, got, want)
		}

		// The engine's comparer splits a version into its key prefix and
		// revision, and every other key this package seeks to (bounds,
		// seek targets) is a prefix of its own; prefixes order the keys.
		split := storage.Comparer.Split
		if n := split(va); n != len(prefix) {
			t.Fatalf("Split(%x) = %d, want %d (the key prefix)", va, n, len(prefix))
		}
		pa, pb := va[:split(va)], vb[:split(vb)]
		if c := sign(bytes.Compare(pa, pb)); c != 0 && c != sign(bytes.Compare(va, vb)) {
			t.Fatalf("prefixes of %x and %x order them %d, the keys %d", va, vb, c, bytes.Compare(va, vb))
		}
		for _, k := range [][]byte{keyBound(nil, a), keyPrefix(nil, a), skipKey(keyPrefix(nil, a)), eventKey(nil, mainA, subA)} {
			if n := split(k); n != len(k) {
				t.Fatalf("Split(%x) = %d, want the whole key", k, n)
			}
		}
		if n := split(seekAt(nil, keyPrefix(nil, a), mainB)); n != len(prefix) {
			t.Fatalf("Split(seekAt(%q)) = %d, want %d", a, n, len(prefix))
		}

		// keyBound(b) splits the keys below b from b and above.
		if got, want := bytes.Compare(va, keyBound(nil, b)) < 0, bytes.Compare(a, b) < 0; got != want {
			t.Fatalf("version of %q below keyBound(%q): %v, want %v", a, b, got, want)
		}
		// skipKey(prefix of a) is past every version of a and before
		// every version of a key above a.
		skip := skipKey(keyPrefix(nil, a))
		if bytes.Compare(va, skip) >= 0 {
			t.Fatalf("skipKey(%q) not past its version", a)
		}
		if bytes.Compare(b, a) > 0 && bytes.Compare(vb, skip) < 0 {
			t.Fatalf("skipKey(%q) past a version of %q", a, b)
		}
		// seekAt(a, rev) is at or before every version of a at or below rev
		// and after every version above it.
		seek := seekAt(nil, keyPrefix(nil, a), mainB)
		if got, want := bytes.Compare(va, seek) >= 0, mainA <= mainB; got != want {
			t.Fatalf("version %d of %q at or after seekAt(%d): %v, want %v", mainA, a, mainB, got, want)
		}
	})
}

func TestVersionValueRoundTrip(t *testing.T) {
	for _, tc := range []version{
		{create: 1, ver: 1},
		{create: 1 << 40, ver: 1 << 20, lease: 1<<63 - 1, value: []byte("\x00\xffvalue")},
		{create: 3, ver: 2, lease: -1, value: []byte{}},
	} {
		enc := appendVersionValue(nil, tc.create, tc.ver, tc.lease, tc.value)
		var got version
		if err := decodeVersionValue(enc, &got); err != nil || got.tombstone || got.create != tc.create ||
			got.ver != tc.ver || got.lease != tc.lease || !bytes.Equal(got.value, tc.value) {
			t.Fatalf("round trip of %+v: %+v %v", tc, got, err)
		}
	}
	var got version
	if err := decodeVersionValue(tombstoneValue, &got); err != nil || !got.tombstone {
		t.Fatalf("tombstone: %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0x80}} {
		if err := decodeVersionValue(bad, &got); err == nil {
			t.Fatalf("decoded corrupt value %x", bad)
		}
	}
}
