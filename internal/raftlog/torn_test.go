package raftlog

import (
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// files returns the contents of every segment file in fs's directory "log".
func files(t *testing.T, fs vfs.FS) map[string][]byte {
	t.Helper()
	names := segmentFiles(t, fs, "log")
	out := map[string][]byte{}
	for _, n := range names {
		f, err := fs.Open(fs.PathJoin("log", n))
		must(t, err)
		b, err := io.ReadAll(f)
		must(t, err)
		must(t, f.Close())
		out[n] = b
	}
	return out
}

// memWith returns a MemFS whose directory "log" holds the given files.
func memWith(t *testing.T, fs map[string][]byte) *vfs.MemFS {
	t.Helper()
	mem := vfs.NewMem()
	must(t, mem.MkdirAll("log", 0o755))
	for n, b := range fs {
		f, err := mem.Create(mem.PathJoin("log", n), vfs.WriteCategoryUnspecified)
		must(t, err)
		_, err = f.Write(slices.Clone(b)) // MemFS scribbles on what Write gets under -race
		must(t, err)
		must(t, f.Close())
	}
	return mem
}

// threeSegments builds a log over three segments whose last group is one
// entry record, and returns the model before and after that group, and
// the file names in order.
func threeSegments(t *testing.T) (before, after *model, segs map[string][]byte, names []string) {
	t.Helper()
	fs := vfs.NewMem()
	opts := Options{SegmentBytes: 1024}
	l := open(t, fs, opts)
	m := &model{}
	must(t, l.SetIdentity([]byte("id")))
	m.identity = []byte("id")
	for i := uint64(1); len(l.mu.segs) < 3; i += 3 {
		must(t, l.Append(hs(1, 1, i), ents(i, i+2, 1, "seg"), true))
		m.append(hs(1, 1, i), ents(i, i+2, 1, "seg"))
	}
	before = m.clone()
	last := ent(m.last()+1, 2, "the-last-one")
	must(t, l.Append(nil, []*raftpb.Entry{last}, true))
	m.append(nil, []*raftpb.Entry{last})
	must(t, l.Close())
	segs = files(t, fs)
	for n := range segs {
		names = append(names, n)
	}
	slices.Sort(names)
	return before, m, segs, names
}

func TestTornTail(t *testing.T) {
	before, after, segs, names := threeSegments(t)
	lastName := names[len(names)-1]
	lastFile := segs[lastName]
	recLen := headerLen + 1 + entryFixedLen + len("the-last-one")
	start := len(lastFile) - recLen
	opts := Options{SegmentBytes: 1024}
	check(t, open(t, memWith(t, segs), opts), after)
	for off := start; off < len(lastFile); off++ {
		for _, how := range []string{"truncated", "garbled"} {
			variant := map[string][]byte{}
			for n, b := range segs {
				variant[n] = b
			}
			switch how {
			case "truncated":
				variant[lastName] = lastFile[:off]
			case "garbled":
				b := slices.Clone(lastFile)
				b[off] ^= 0x5a
				variant[lastName] = b
			}
			fs := memWith(t, variant)
			l, err := Open(fs, "log", opts)
			if err != nil {
				t.Fatalf("%s at %d: %v", how, off, err)
			}
			if d := diff(l, before); d != "" {
				t.Fatalf("%s at %d: %s", how, off, d)
			}
			m := before.clone()
			es := ents(m.last()+1, m.last()+2, 3, "again")
			must(t, l.Append(hs(3, 1, 0), es, true))
			m.append(hs(3, 1, 0), es)
			reopen(t, fs, l, opts, m).Close()
		}
	}
}

func TestDamageBeforeTheLastSegment(t *testing.T) {
	_, _, segs, names := threeSegments(t)
	opts := Options{SegmentBytes: 1024}
	for _, name := range names[:len(names)-1] {
		for off := range segs[name] {
			variant := map[string][]byte{}
			for n, b := range segs {
				variant[n] = b
			}
			b := slices.Clone(segs[name])
			b[off] ^= 0x01
			variant[name] = b
			if _, err := Open(memWith(t, variant), "log", opts); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s garbled at %d: Open = %v, want ErrCorrupt", name, off, err)
			}
		}
		// Cut short.
		variant := map[string][]byte{}
		for n, b := range segs {
			variant[n] = b
		}
		variant[name] = segs[name][:len(segs[name])-3]
		if _, err := Open(memWith(t, variant), "log", opts); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s cut short: Open = %v, want ErrCorrupt", name, err)
		}
	}
	// A missing segment in the middle.
	variant := map[string][]byte{}
	for n, b := range segs {
		variant[n] = b
	}
	delete(variant, names[1])
	if _, err := Open(memWith(t, variant), "log", opts); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("middle segment missing: Open = %v, want ErrCorrupt", err)
	}
}

func TestStaleRecordsOfAnotherSegment(t *testing.T) {
	_, after, segs, names := threeSegments(t)
	opts := Options{SegmentBytes: 1024}
	// The last segment's tail is followed by records copied from the
	// first segment (after its start record): good CRCs, wrong seq.
	first := segs[names[0]]
	_, _, n, err := decodeRecord(first, 1)
	must(t, err)
	variant := map[string][]byte{}
	for k, b := range segs {
		variant[k] = b
	}
	last := names[len(names)-1]
	variant[last] = append(slices.Clone(segs[last]), first[n:]...)
	fs := memWith(t, variant)
	l, err := Open(fs, "log", opts)
	must(t, err)
	check(t, l, after)
	m := after.clone()
	es := ents(m.last()+1, m.last()+1, 5, "next")
	must(t, l.Append(nil, es, true))
	m.append(nil, es)
	reopen(t, fs, l, opts, m).Close()
}

func TestIncompleteRoll(t *testing.T) {
	_, after, segs, names := threeSegments(t)
	opts := Options{SegmentBytes: 1024}
	// A next segment whose start record is torn: a roll cut short.
	next := segmentName(uint64(len(names) + 1))
	for _, content := range [][]byte{nil, make([]byte, 1024), {1, 2, 3}} {
		variant := map[string][]byte{next: content}
		for k, b := range segs {
			variant[k] = b
		}
		fs := memWith(t, variant)
		l, err := Open(fs, "log", opts)
		must(t, err)
		check(t, l, after)
		m := after.clone()
		es := ents(m.last()+1, m.last()+1, 5, "next")
		must(t, l.Append(nil, es, true))
		m.append(nil, es)
		reopen(t, fs, l, opts, m).Close()
	}
}

// TestStaleRecordsAfterALostBlock: a crash loses a record but keeps the
// one after it (its block reached the disk, the earlier one did not). The
// log ends before the lost record; a new record written where it was, of
// the same length, must not bring back the stale one that follows.
func TestStaleRecordsAfterALostBlock(t *testing.T) {
	fs := vfs.NewMem()
	opts := Options{SegmentBytes: 4096}
	l := open(t, fs, opts)
	for i := uint64(1); i <= 3; i++ {
		must(t, l.Append(nil, []*raftpb.Entry{ent(i, 1, "aaaa")}, true))
	}
	must(t, l.Close())
	segs := files(t, fs)
	if len(segs) != 1 {
		t.Fatalf("%d segments", len(segs))
	}
	recLen := headerLen + 1 + entryFixedLen + 4
	for name, b := range segs {
		b = slices.Clone(b)
		r2 := len(b) - 2*recLen
		clear(b[r2 : r2+recLen])
		segs[name] = b
	}
	fs2 := memWith(t, segs)
	l = open(t, fs2, opts)
	m := &model{}
	m.append(nil, []*raftpb.Entry{ent(1, 1, "aaaa")})
	check(t, l, m)
	es := []*raftpb.Entry{ent(2, 2, "bbbb")}
	must(t, l.Append(nil, es, true))
	m.append(nil, es)
	reopen(t, fs2, l, opts, m).Close()
}

func TestStrayTornSegmentAfterAGap(t *testing.T) {
	_, _, segs, names := threeSegments(t)
	variant := map[string][]byte{segmentName(uint64(len(names) + 3)): {1, 2, 3}}
	for k, b := range segs {
		variant[k] = b
	}
	if _, err := Open(memWith(t, variant), "log", Options{SegmentBytes: 1024}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
}

// TestDamagedStartOfTheLastSegment: a last segment whose start record is
// bad but which holds records after it was not a roll cut short (a roll
// writes nothing more until its start is synced): ErrCorrupt, not a log
// that silently ends before it.
func TestDamagedStartOfTheLastSegment(t *testing.T) {
	_, _, segs, names := threeSegments(t)
	last := names[len(names)-1]
	for _, off := range []int{0, 5, 9, 20} {
		variant := map[string][]byte{}
		for k, b := range segs {
			variant[k] = b
		}
		b := slices.Clone(segs[last])
		b[off] ^= 0x10
		variant[last] = b
		if _, err := Open(memWith(t, variant), "log", Options{SegmentBytes: 1024}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("start record garbled at %d: Open = %v, want ErrCorrupt", off, err)
		}
	}
}
